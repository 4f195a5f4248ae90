"""One experiment end to end: records -> protocol folds -> train + predict per fold -> metrics -> report.

:func:`run_experiment` is what ``histobreast train`` runs; :func:`evaluate_model_folder` what
``histobreast evaluate`` runs (a trained model on new data, or experiment folders re-scored from
their saved predictions, several runs together giving paper A's per-magnification tables).
The experiment folder::

    OUT/config.yaml  splits.csv
    OUT/fold1/<engine run folders>  model/  predictions/<method>.csv
    OUT/report/report.md  report.html  metrics.json  figures/*.png

The report has the papers' layout: Tables 2-3 (PL, IL, kappa, PPV; mean ± std over folds) and
Table 4 (F1, precision, recall) with one row per evaluation method and a column group per
magnification, the headline method's per-fold results, bootstrap 95% intervals over patients,
confusion matrix, per-class scores and ROC curves of the pooled test predictions.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

from histobreast.atomic import atomic_write_text, remove_stale_temporaries
from histobreast.config import save_config
from histobreast.data.splits import read_splits_csv, write_splits_csv
from histobreast.engine.distributed import context_from_env
from histobreast.errors import CheckpointError, ConfigError, DatasetError
from histobreast.locking import folder_lock
from histobreast.metrics import bootstrap_metrics, evaluate_predictions, split_by_magnification, summarise_folds
from histobreast.pipelines import get_pipeline
from histobreast.pipelines.common import (
    check_model_builds,
    data_settings_for,
    experiment_records,
    experiment_splits,
    require_two_classes,
    select_split,
    validation_split,
)
from histobreast.pipelines.config import ExperimentConfig, load_config
from histobreast.pipelines.encoder_provenance import check_encoder_unseen, fold_start_weights
from histobreast.pipelines.experiment_checks import (
    check_resumable,
    check_same_splits,
    check_saved_predictions,
    refuse_fresh_run,
)
from histobreast.pipelines.package import load_model_folder, read_model_info
from histobreast.predictions import Predictions, concat_predictions
from histobreast.report import Report, RunInfo, accuracy_table, f1_table, plot_training_curves, results_table
from histobreast.report.render import SUMMARY_METRICS

log = logging.getLogger(__name__)

PREDICTIONS_DIR = "predictions"
REPORT_DIR = "report"
FoldPredictions = dict[int, dict[str, Predictions]]  # fold number -> method -> test predictions


@dataclass
class ExperimentResult:
    """What an experiment (or a re-evaluation) produced: per-fold evaluations and their summaries."""

    out_dir: Path
    report_dir: Path
    methods: list[str]
    folds: list[int]
    evaluations: dict[str, list[dict[str, Any]]]  # method -> one evaluate_predictions dict per fold
    summary: dict[str, dict[str, Any]]  # method -> summarise_folds of those
    model_folders: dict[int, Path] = field(default_factory=dict)

    @property
    def headline(self) -> str:
        """The pipeline's headline method (its first)."""
        return self.methods[0]

    def mean_std(self, metric: str = "image_level_accuracy", method: str | None = None) -> tuple[float, float]:
        """Mean and standard deviation over folds of one metric of ``method`` (default: the headline)."""
        entry = self.summary[method or self.headline]["metrics"][f"metrics/{metric}"]
        return entry["mean"], entry["std"]


def _fold_numbers(
    splits: Sequence[Any], folds: Iterable[int] | Literal["all"] | None, cfg: ExperimentConfig
) -> list[int]:
    available = list(range(1, len(splits) + 1))
    if folds is None:
        folds = [cfg.data.fold] if cfg.data.fold is not None else "all"
    if folds == "all":
        return available
    chosen = sorted(set(folds))  # type: ignore[arg-type]
    bad = [f for f in chosen if f not in available]
    if bad:
        raise ConfigError(f"fold(s) {bad} do not exist; this protocol has folds 1-{len(splits)}")
    return chosen


def run_experiment(
    cfg: ExperimentConfig,
    out_dir: str | Path | None = None,
    folds: Iterable[int] | Literal["all"] | None = None,
    resume: bool = False,
    config_path: str | None = None,
) -> ExperimentResult:
    """Train and test every chosen fold of ``cfg``'s protocol, then write the report.

    ``folds``: ``"all"``, a list of 1-based fold numbers, or None (``data.fold`` if set, else all).
    ``out_dir`` defaults to ``runs/<cfg.name>``. With ``resume`` finished folds are reused and an
    interrupted one continues from its checkpoints; without it a folder holding checkpoints is an
    error (nothing is overwritten).
    """
    out = Path(out_dir) if out_dir is not None else Path("runs") / cfg.name
    main = context_from_env().is_main
    check_model_builds(fold_start_weights(cfg, None))
    records, classes = experiment_records(cfg)
    require_two_classes(records, classes, cfg.data.root)
    splits = experiment_splits(cfg, records)
    chosen = _fold_numbers(splits, folds, cfg)
    with folder_lock(out) if main else contextlib.nullcontext():  # one writer: checks and writes under it
        if resume:
            check_resumable(out / "config.yaml", cfg)
            check_same_splits(out / "splits.csv", splits)
        else:
            refuse_fresh_run(out)
        if main:
            save_config(cfg, out / "config.yaml")
            write_splits_csv(splits, out / "splits.csv")
        return _run_folds(cfg, out, records, classes, splits, chosen, resume, config_path, main)


def _run_folds(
    cfg: ExperimentConfig,
    out: Path,
    records: Sequence[Any],
    classes: list[str],
    splits: Sequence[Any],
    chosen: list[int],
    resume: bool,
    config_path: str | None,
    main: bool,
) -> ExperimentResult:
    """Train and test the chosen folds, then the report (``run_experiment``'s work, under its lock)."""
    if resume and main:
        remove_stale_temporaries(out)  # a killed run's half-written files; the lock says no one else writes here
    pipeline = get_pipeline(cfg.pipeline)
    fold_predictions: FoldPredictions = {}
    model_folders: dict[int, Path] = {}
    for fold in chosen:
        split = splits[fold - 1]
        fold_dir = out / f"fold{fold}"
        train, val = validation_split(cfg, select_split(split, records, "train"), fold)
        test = select_split(split, records, cfg.evaluate.split) if cfg.evaluate.split == "test" else val
        if not test:
            raise DatasetError(f"{split.name}: no {cfg.evaluate.split} images to evaluate")
        fold_cfg = fold_start_weights(cfg, fold)  # this fold's pre-trained encoder, if the path names {fold}
        check_encoder_unseen(fold_cfg.model, select_split(split, records, "test"), fold, fold_dir if main else None)
        log.info(
            "fold %d: %d training, %d validation, %d %s images",
            fold,
            len(train),
            len(val),
            len(test),
            cfg.evaluate.split,
        )
        model_folders[fold] = pipeline.train_fold(fold_cfg, train, val, classes, fold_dir, resume=resume)
        if main:
            fold_predictions[fold] = pipeline.predict_records(
                model_folders[fold], test, tta_views=cfg.evaluate.tta_views, device=cfg.train.device
            )
            write_fold_predictions(fold_dir, fold_predictions[fold])
    if not main:
        return ExperimentResult(out, out / REPORT_DIR, [], chosen, {}, {}, model_folders)
    result = report_experiment(
        fold_predictions, out / REPORT_DIR, cfg, config_path=config_path, run_dirs=[out / f"fold{chosen[0]}"]
    )
    result.out_dir, result.model_folders = out, model_folders
    return result


def write_fold_predictions(fold_dir: Path, predictions: Mapping[str, Predictions]) -> None:
    """``fold_dir/predictions/<method>.csv`` for every method, and their order (headline first) in methods.txt."""
    target = Path(fold_dir) / PREDICTIONS_DIR
    for method, pred in predictions.items():
        pred.to_csv(target / f"{method}.csv")
    atomic_write_text(target / "methods.txt", "\n".join(predictions) + "\n")


def read_fold_predictions(run_dir: str | Path) -> FoldPredictions:
    """The saved test predictions of every fold of an experiment folder (methods in their saved order)."""
    run_dir = Path(run_dir)
    out: FoldPredictions = {}
    for fold_dir in sorted(run_dir.glob("fold*"), key=lambda p: int(p.name[4:]) if p.name[4:].isdigit() else 0):
        order_file = fold_dir / PREDICTIONS_DIR / "methods.txt"
        if not fold_dir.name[4:].isdigit() or not order_file.is_file():
            continue
        methods = order_file.read_text().split()
        out[int(fold_dir.name[4:])] = {
            m: Predictions.from_csv(fold_dir / PREDICTIONS_DIR / f"{m}.csv") for m in methods
        }
    if not out:
        raise DatasetError(
            f"{run_dir}: no fold*/predictions found; is this an experiment folder of `histobreast train`?"
        )
    return out


def pooled_test_predictions(
    saved: FoldPredictions, method: str | None = None, folds: Sequence[int] | None = None, run_dir: str | Path = ""
) -> Predictions:
    """One table of an experiment's test predictions (``read_fold_predictions(run_dir)``) of
    ``method`` (default: the headline method) over ``folds`` (default: every fold)."""
    chosen = sorted(saved) if folds is None else list(folds)
    missing = [f for f in chosen if f not in saved]
    if missing:
        raise DatasetError(f"{run_dir}: no saved predictions for fold(s) {missing}")
    method = method or next(iter(saved[chosen[0]]))
    for fold in chosen:
        if method not in saved[fold]:
            raise ConfigError(f"{run_dir}: fold {fold} has no method {method!r}; it has {list(saved[fold])}")
    return concat_predictions([saved[f][method] for f in chosen])


def _by_magnification(pred: Predictions) -> dict[int | None, Predictions]:
    """Rows per magnification, or all rows under None when the images have none (BACH)."""
    if any(m is None for m in pred.magnifications):
        return {None: pred}
    return dict(split_by_magnification(pred))


def _describe(cfg: ExperimentConfig, folds: Sequence[int]) -> str:
    t = cfg.train
    length = f"{t.iterations} iterations" if t.iterations is not None else f"{t.epochs} epochs"
    return (
        f"Pipeline {cfg.pipeline}, network {cfg.model.name}; {len(folds)} fold(s) ({', '.join(map(str, folds))}) "
        f"of the {cfg.data.split} protocol; {t.optimizer} lr {t.lr:g}, batch {t.batch_size}, {length}; "
        f"input {cfg.preprocess.input_size} px, stain {cfg.preprocess.stain.method}."
    )


def report_experiment(
    fold_predictions: FoldPredictions,
    report_dir: Path,
    cfg: ExperimentConfig,
    *,
    title: str | None = None,
    dataset: str | None = None,
    config_path: str | None = None,
    run_dirs: Sequence[Path] = (),
) -> ExperimentResult:
    """Metrics over folds for every method and the report in ``report_dir``; returns them."""
    folds = sorted(fold_predictions)
    methods = list(fold_predictions[folds[0]])
    evaluations = {m: [evaluate_predictions(fold_predictions[f][m]) for f in folds] for m in methods}
    summary = {m: summarise_folds(evaluations[m]) for m in methods}
    by_mag: dict[str, dict[int | None, dict[str, Any]]] = {}
    for method in methods:
        per_fold = [_by_magnification(fold_predictions[f][method]) for f in folds]
        mags = sorted({mag for part in per_fold for mag in part}, key=lambda m: (m is None, m or 0))
        by_mag[method] = {
            mag: summarise_folds([evaluate_predictions(part[mag]) for part in per_fold if mag in part]) for mag in mags
        }
    headline = methods[0]
    pooled = concat_predictions([fold_predictions[f][headline] for f in folds])
    if dataset is None:
        magnification = f", {cfg.data.magnification}X" if cfg.data.magnification else ""
        dataset = f"{cfg.data.kind} data at {cfg.data.root}{magnification}"
    report = Report(
        report_dir,
        title or f"{cfg.name}: {cfg.pipeline} results",
        RunInfo(
            dataset=dataset,
            split=f"folds {', '.join(map(str, folds))} ({cfg.data.split})",
            model=f"{cfg.pipeline} / {cfg.model.name}",
            config=config_path or cfg.name,
        ),
        intro=_describe(cfg, folds),
    )
    fold_note = f"mean ± std over {len(folds)} folds" if len(folds) > 1 else "one fold"
    report.add_heading("Results in the paper's layout")
    report.add_table(accuracy_table(by_mag, "Tables 2-3: patient- and image-level accuracy, kappa, PPV", fold_note))
    report.add_table(f1_table(by_mag, "Table 4: F1, precision and recall", fold_note))
    report.add_heading(f"Headline method '{headline}' per fold")
    report.add_table(
        results_table(
            {f"fold {f}": e for f, e in zip(folds, evaluations[headline])},
            SUMMARY_METRICS,
            f"{headline}: each fold's test set",
            row_header="Fold",
        )
    )
    if cfg.evaluate.bootstrap > 0:
        intervals = bootstrap_metrics(pooled, n_boot=cfg.evaluate.bootstrap, seed=cfg.seed, level=cfg.evaluate.ci)
        report.add_table(
            results_table(
                {"pooled test predictions": {"metrics": intervals}},
                SUMMARY_METRICS,
                f"{headline}: {cfg.evaluate.ci:.0%} bootstrap intervals (patients resampled)",
                row_header="Predictions",
            )
        )
        report.add_metrics("bootstrap", intervals)
    repeated = len(pooled.image_ids) - len(set(pooled.image_ids))
    if repeated:
        report.add_text(
            f"{repeated} pooled rows are images tested in more than one fold (the folds are independent "
            "train/test splits, e.g. BreaKHis's official ones); they count once per fold below."
        )
    report.add_evaluation(f"{headline}, test predictions of all folds pooled", evaluate_predictions(pooled), pooled)
    for run_dir in run_dirs:
        for log_file in sorted(Path(run_dir).glob("*/train_log.csv")):
            name = f"{run_dir.name}_{log_file.parent.name}"
            figure = plot_training_curves(
                log_file,
                report.figure_path(f"{name}_training.png"),
                f"{run_dir.name}, {log_file.parent.name}: training",
            )
            report.add_figure(figure, f"Training curves of {run_dir.name} ({log_file.parent.name} run).")
    report.add_metrics("summary", summary)
    report.add_metrics("by_magnification", by_mag)
    report.add_metrics("folds", {m: dict(zip(map(str, folds), evaluations[m])) for m in methods})
    report.write()
    return ExperimentResult(report_dir.parent, report_dir, methods, folds, evaluations, summary)


def _is_experiment_folder(path: Path) -> bool:
    return (path / "config.yaml").is_file() and (path / "splits.csv").is_file()


def evaluate_model_folder(
    targets: str | Path | Sequence[str | Path],
    data: str | Path | None = None,
    out_dir: str | Path | None = None,
    *,
    tta_views: Sequence[str] = (),
    batch_size: int | None = None,
    device: str = "auto",
) -> ExperimentResult:
    """Score trained models and write a report; ``targets`` are model folders or experiment folders.

    - A **model folder** with ``data``: every image of ``data`` (read with the model's data
      settings: task, magnification, scale) is predicted and scored as one test set.
    - **Experiment folders** without ``data``: the saved fold predictions are re-scored. With
      ``data``: each fold's model predicts its fold's test images found in ``data`` (splits.csv).
      Several experiment folders (e.g. one per BreaKHis magnification) are scored together, fold
      by fold, giving one table with a column group per magnification and ROC curves per
      magnification (paper A, Tables 2-4 and Fig. 9).
    """
    paths = [Path(t) for t in ([targets] if isinstance(targets, (str, Path)) else targets)]
    if not paths:
        raise ConfigError("nothing to evaluate: give a model folder or experiment folder(s)")
    for path in paths:
        if not path.exists():
            raise CheckpointError(f"{path}: not found")
    if all(_is_experiment_folder(p) for p in paths):
        return _evaluate_runs(paths, data, out_dir, tta_views, batch_size, device)
    if len(paths) > 1:
        raise ConfigError("several targets must all be experiment folders; evaluate model folders one at a time")
    model_dir = paths[0]
    if data is None:
        raise ConfigError(f"{model_dir}: a model folder needs test images: pass --data PATH")
    info = read_model_info(model_dir)
    loaded = load_model_folder(model_dir)
    cfg = replace(loaded.cfg, data=data_settings_for(loaded.cfg, data))
    records, classes = experiment_records(replace(cfg, data=replace(cfg.data, classes=list(info["classes"]))))
    predictions = get_pipeline(loaded.pipeline).predict_records(
        loaded, records, tta_views=tta_views, batch_size=batch_size, device=device
    )
    out = Path(out_dir) if out_dir is not None else model_dir.parent / f"{model_dir.name}-evaluation"
    write_fold_predictions(out, predictions)
    result = report_experiment(
        {1: predictions},
        out / REPORT_DIR,
        cfg,
        title=f"{model_dir}: evaluation on {data}",
        config_path=str(model_dir / "model.json"),
    )
    result.out_dir = out
    return result


def _evaluate_runs(
    runs: Sequence[Path],
    data: str | Path | None,
    out_dir: str | Path | None,
    tta_views: Sequence[str],
    batch_size: int | None,
    device: str,
) -> ExperimentResult:
    per_run: list[FoldPredictions] = []
    configs = [load_config(run / "config.yaml") for run in runs]
    for run, cfg in zip(runs, configs):
        if data is None:
            per_run.append(read_fold_predictions(run))
            check_saved_predictions(run, per_run[-1], cfg.evaluate.split)
            continue
        cfg = replace(cfg, data=replace(cfg.data, root=str(data)))
        records, _ = experiment_records(cfg)
        fold_preds: FoldPredictions = {}
        for split in read_splits_csv(run / "splits.csv"):
            fold = int(split.name.removeprefix("fold"))
            model_dir = run / f"fold{fold}" / "model"
            test = select_split(split.restrict(r.image_id for r in records), records, "test")
            if not model_dir.is_dir() or not test:
                continue
            fold_preds[fold] = get_pipeline(cfg.pipeline).predict_records(
                model_dir, test, tta_views=tta_views, batch_size=batch_size, device=device
            )
        if not fold_preds:
            raise DatasetError(f"{run}: none of its folds' test images are in {data}")
        per_run.append(fold_preds)
    folds = sorted(set.intersection(*(set(p) for p in per_run)))
    if not folds:
        raise DatasetError(f"the experiment folders {[str(r) for r in runs]} share no fold")
    methods = [m for m in per_run[0][folds[0]] if all(m in p[f] for p in per_run for f in folds)]
    combined = {f: {m: concat_predictions([p[f][m] for p in per_run]) for m in methods} for f in folds}
    out = Path(out_dir) if out_dir is not None else (runs[0] if len(runs) == 1 else Path("runs") / "evaluation")
    names = ", ".join(c.name for c in configs)
    result = report_experiment(
        combined,
        out / REPORT_DIR,
        configs[0],
        title=f"Evaluation of {names}",
        dataset=", ".join(str(c.data.root) for c in configs) if data is None else str(data),
        config_path=", ".join(str(r / "config.yaml") for r in runs),
    )
    result.out_dir = out
    return result
