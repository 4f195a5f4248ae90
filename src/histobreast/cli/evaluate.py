"""``histobreast evaluate``: score a model folder on a dataset, or re-score experiment folders."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import typer

# Columns of the console summary: (metric key, header).
SUMMARY_COLUMNS = (
    ("image_level_accuracy", "IL"),
    ("patient_level_accuracy", "PL"),
    ("kappa", "kappa"),
    ("f1", "F1"),
    ("auc", "AUC"),
)


def _cell(entry: dict[str, Any]) -> str:
    mean, std = entry["mean"], entry["std"]
    if mean != mean:  # NaN
        return "–"
    return f"{mean:.3f}" if std != std else f"{mean:.3f}±{std:.3f}"


def print_result(result: Any, console: Any) -> None:
    """A table of every method's mean ± std over folds, and where the report is."""
    from rich import box
    from rich.table import Table

    # Numbers are never cut: on a narrow terminal (80 columns) long method names wrap instead, and
    # collapsed padding leaves room for a negative kappa ("-0.016±0.077", 12 characters).
    table = Table(
        title=f"{len(result.folds)} fold(s): mean ± std",
        title_justify="left",
        box=box.SIMPLE_HEAD,
        pad_edge=False,
        collapse_padding=True,
    )
    table.add_column("method", overflow="fold")
    for _, header in SUMMARY_COLUMNS:
        table.add_column(header, justify="right", no_wrap=True, min_width=12)
    for method in result.methods:
        metrics = result.summary[method]["metrics"]
        table.add_row(method, *[_cell(metrics[f"metrics/{key}"]) for key, _ in SUMMARY_COLUMNS])
    console.print(table)
    console.print(f"report: {result.report_dir / 'report.html'}")


def evaluate(
    targets: list[Path] = typer.Argument(..., help="A model folder, or experiment folder(s) of `histobreast train`."),
    data: Optional[Path] = typer.Option(None, "--data", help="Test images (required for a model folder)."),
    out: Optional[Path] = typer.Option(None, "--out", help="Output folder (report/ and predictions/ inside)."),
    tta: bool = typer.Option(False, "--tta", help="Average over the six views (raw, 3 rotations, 2 flips)."),
    batch_size: Optional[int] = typer.Option(None, "--batch-size", min=1, help="Images per inference batch."),
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda or cuda:N."),
) -> None:
    """Score trained models with the papers' metrics and write metrics.json + report.md/html + PNGs.

    A model folder is applied to every image of --data. Experiment folders are re-scored from their
    saved predictions (or, with --data, their fold models predict their folds' test images there);
    several runs (e.g. 40X, 100X, 200X, 400X) give one report with a column group per magnification.

    Examples: histobreast evaluate runs/zhu_bach/fold1/model --data ../shared/data/bach --out runs/eval;
    histobreast evaluate runs/zhu_40x runs/zhu_100x runs/zhu_200x runs/zhu_400x --out runs/tables
    """
    from rich.console import Console

    from histobreast.pipelines.evaluation import evaluate_model_folder
    from histobreast.preprocess.views import SIX_VIEWS

    result = evaluate_model_folder(
        targets, data, out, tta_views=SIX_VIEWS if tta else (), batch_size=batch_size, device=device
    )
    print_result(result, Console(soft_wrap=True))


def register(app: typer.Typer) -> None:
    """Add the ``evaluate`` command."""
    app.command("evaluate")(evaluate)
