"""``histobreast evaluate``: trained models scored on new data, or experiment folders re-scored.

A model folder with data is one test set; experiment folders are re-scored from their saved fold
predictions (or each fold's model on its test images found in new data), several runs together
giving paper A's per-magnification tables.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

from histobreast.data.protocol import select_split
from histobreast.data.splits import fold_number, read_splits_csv
from histobreast.data.task_records import data_settings_for, experiment_records
from histobreast.engine.inference import check_batch_size
from histobreast.errors import CheckpointError, ConfigError, DatasetError
from histobreast.locking import folder_lock, folder_locks
from histobreast.pipelines import get_pipeline
from histobreast.pipelines.config import load_config
from histobreast.pipelines.experiment_checks import (
    check_saved_predictions,
)
from histobreast.pipelines.experiment_report import REPORT_DIR, ExperimentResult, report_experiment
from histobreast.pipelines.fold_predictions import (
    FoldPredictions,
    read_fold_predictions,
    write_fold_predictions,
)
from histobreast.pipelines.package import load_model_folder, read_model_info
from histobreast.predictions import concat_predictions


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
    check_batch_size(batch_size)
    paths = [Path(t) for t in ([targets] if isinstance(targets, (str, Path)) else targets)]
    if not paths:
        raise ConfigError("nothing to evaluate: give a model folder or experiment folder(s)")
    for path in paths:
        if not path.exists():
            raise CheckpointError(f"{path}: not found")
    if all(_is_experiment_folder(p) for p in paths):
        out = Path(out_dir) if out_dir is not None else (paths[0] if len(paths) == 1 else Path("runs") / "evaluation")
        with folder_locks([*paths, out]):  # no training may write the folders read or written meanwhile
            return _evaluate_runs(paths, data, out, tta_views, batch_size, device)
    if len(paths) > 1:
        raise ConfigError("several targets must all be experiment folders; evaluate model folders one at a time")
    model_dir = paths[0]
    if data is None:
        raise ConfigError(f"{model_dir}: a model folder needs test images: pass --data PATH")
    info = read_model_info(model_dir)
    loaded = load_model_folder(model_dir)
    cfg = replace(loaded.cfg, data=data_settings_for(loaded.cfg.data, data))
    records, classes = experiment_records(replace(cfg.data, classes=list(info["classes"])))
    out = Path(out_dir) if out_dir is not None else model_dir.parent / f"{model_dir.name}-evaluation"
    with folder_lock(out):
        predictions = get_pipeline(loaded.pipeline).predict_records(
            loaded, records, tta_views=tta_views, batch_size=batch_size, device=device
        )
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
    out: Path,
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
        records, _ = experiment_records(cfg.data)
        fold_preds: FoldPredictions = {}
        for split in read_splits_csv(run / "splits.csv"):
            fold = fold_number(split.name)
            model_dir = run / split.name / "model"
            test = select_split(split.restrict(r.image_id for r in records), records, "test")
            if fold is None or not model_dir.is_dir() or not test:
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
