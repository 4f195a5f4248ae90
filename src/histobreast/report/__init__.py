"""Metrics -> report: paper-layout tables, PNG plots and the HTML/Markdown/JSON report writer.

Typical use by a CLI command::

    from histobreast.metrics import evaluate_predictions
    from histobreast.report import Report, RunInfo

    report = Report(out_dir, "Hybrid model, BreaKHis fold 1", RunInfo("BreaKHis 40X", "fold 1", "hybrid", "configs/x.yaml"))
    report.add_evaluation("Test set", evaluate_predictions(pred), pred)
    report.write()  # report.md, report.html, metrics.json, figures/*.png
"""

from histobreast.report.case_review import (
    review_cases,
    write_case_review,
)
from histobreast.report.plots import (
    plot_case,
    plot_confusion_matrix,
    plot_lines,
    plot_per_class_scores,
    plot_roc_curves,
    plot_training_curves,
)
from histobreast.report.render import Report, RunInfo
from histobreast.report.tables import (
    PAPER_A_METHODS,
    Column,
    Table,
    ablation_table,
    accuracy_table,
    compression_table,
    confusion_table,
    ensemble_table,
    f1_table,
    levels_table,
    per_class_table,
    per_magnification_table,
    results_table,
)

__all__ = [
    "PAPER_A_METHODS",
    "Column",
    "Report",
    "RunInfo",
    "Table",
    "ablation_table",
    "accuracy_table",
    "compression_table",
    "confusion_table",
    "ensemble_table",
    "f1_table",
    "levels_table",
    "per_class_table",
    "per_magnification_table",
    "plot_case",
    "plot_confusion_matrix",
    "plot_lines",
    "plot_per_class_scores",
    "plot_roc_curves",
    "plot_training_curves",
    "results_table",
    "review_cases",
    "write_case_review",
]
