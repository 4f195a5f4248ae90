"""``histobreast ablate``: paper B's Table 4 (every MSMV-PFENet variant on the same folds) in one command."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from histobreast.errors import ConfigError


def _parse_folds(text: str) -> str | list[int]:
    if text.strip().lower() == "all":
        return "all"
    try:
        folds = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        folds = []
    if not folds or min(folds) < 1:
        raise ConfigError(f"--fold: expected 'all' or 1-based fold numbers such as 1 or 1,3, got {text!r}")
    return folds


def ablate(
    config: Path = typer.Option(
        ...,
        "--config",
        "-c",
        help="Ablation file: base experiment, Table 4 rows, main row (e.g. configs/liu2022/ablation_table4.yaml).",
    ),
    data: Path | None = typer.Option(None, "--data", help="Dataset root; replaces the base config's data.root."),
    fold: str = typer.Option("all", "--fold", help="'all', one fold number (1-based) or a list such as 1,3."),
    out: Path | None = typer.Option(None, "--out", "-o", help="Output folder (default runs/<base name>_table4)."),
    overrides: list[str] = typer.Option(
        [], "--set", help="Dotted change to the base config for every row, e.g. --set train.epochs=3 (repeatable)."
    ),
    resume: bool = typer.Option(True, "--resume/--no-resume", help="Reuse finished folds of an earlier run in --out."),
) -> None:
    """Train and evaluate each Table 4 row (single/double FENet; VGG16, GoogLeNet, ResNet-101 encoders;
    PFENet with FC, SVM, BiLSTM x 1/2/3) on the same folds and write the Table 4 report: patch- and
    image-level accuracy per row next to the paper's, and the main model's confusion matrix (Fig. 7)
    and per-class precision / recall / F1.

    Example:

        histobreast ablate --config configs/liu2022/ablation_table4.yaml --data ../shared/data/bach --fold 1
    """
    from histobreast.pipelines.ablation import load_ablation, run_ablation

    ablation, base = load_ablation(config, overrides)
    if data is not None:
        base = dataclasses.replace(base, data=dataclasses.replace(base.data, root=str(data)))
    out_dir = out or Path("runs") / f"{base.name}_table4"
    result = run_ablation(ablation, base, out_dir, folds=_parse_folds(fold), resume=resume, config_path=str(config))
    console = Console(soft_wrap=True)
    table = Table(title=f"Table 4 on folds {', '.join(map(str, result.folds))} (accuracy, mean over folds)")
    for column in ("row", "patch", "image"):
        table.add_column(column, justify="left" if column == "row" else "right")
    for key, acc in result.accuracies().items():
        table.add_row(key, *(f"{100 * sum(acc[m]) / len(acc[m]):.1f}%" for m in ("patch", "image")))
    console.print(table)
    console.print(f"wrote {result.report['markdown']} and {result.report['html']}")


def register(app: typer.Typer) -> None:
    """Add the ``ablate`` command."""
    app.command("ablate")(ablate)
