"""The report of an experiment's folds: metrics over folds per method and paper-layout tables.

Tables 2-3 (PL, IL, kappa, PPV; mean ± std over folds) and Table 4 (F1, precision, recall) with
one row per evaluation method and a column group per magnification, the headline method's
per-fold results, bootstrap 95% intervals over patients, confusion matrix, per-class scores and
ROC curves of the pooled test predictions.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from histobreast.metrics import bootstrap_metrics, evaluate_predictions, split_by_magnification, summarise_folds
from histobreast.pipelines.config import ExperimentConfig
from histobreast.pipelines.fold_predictions import FoldPredictions
from histobreast.predictions import Predictions, concat_predictions
from histobreast.report import Report, RunInfo, accuracy_table, f1_table, plot_training_curves, results_table
from histobreast.report.render import SUMMARY_METRICS

log = logging.getLogger(__name__)

REPORT_DIR = "report"


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
