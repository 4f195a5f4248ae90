"""``histobreast train``: run an experiment config end to end (folds, training, predictions, report)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from histobreast.cli.data_option import with_data_root
from histobreast.errors import ConfigError


def parse_folds(text: str | None) -> list[int] | str | None:
    """``--fold`` value: ``all``, one number, or a comma list (``1,3``); None leaves the config's choice."""
    if text is None or text == "all":
        return text
    try:
        folds = [int(part) for part in text.split(",")]
    except ValueError:
        raise ConfigError(f"--fold: expected a fold number, a comma list or 'all', got {text!r}") from None
    if any(f < 1 for f in folds):
        raise ConfigError(f"--fold: fold numbers start at 1, got {text!r}")
    return folds


def train(
    config: Path = typer.Option(
        ..., "--config", "-c", help="Experiment YAML (e.g. configs/zhu2019/breakhis_40x.yaml)."
    ),
    data: Optional[Path] = typer.Option(None, "--data", help="Dataset folder; overrides data.root."),
    fold: Optional[str] = typer.Option(
        None, "--fold", help="Fold number, comma list or 'all' (default: data.fold, else all)."
    ),
    magnification: Optional[int] = typer.Option(None, "--magnification", help="BreaKHis magnification 40/100/200/400."),
    overrides: list[str] = typer.Option(
        [], "--set", help="Config override key=value (repeatable), e.g. train.lr=0.001."
    ),
    out: Optional[Path] = typer.Option(None, "--out", help="Experiment folder (default runs/<config name>)."),
    resume: bool = typer.Option(False, "--resume", help="Reuse finished folds, continue an interrupted one."),
) -> None:
    """Train and evaluate an experiment: every fold of its protocol, then the report.

    Writes OUT/config.yaml, splits.csv, fold*/ (engine runs, model/, predictions/) and
    OUT/report/ (report.md, report.html, metrics.json, figures). Works under torchrun.

    Example: histobreast train --config configs/zhu2019/bach_binary_cpu.yaml --data ../shared/data/bach --fold 1
    """
    from rich.console import Console

    from histobreast.cli.evaluate import print_result
    from histobreast.pipelines.config import load_config
    from histobreast.pipelines.experiment import run_experiment

    extra = with_data_root(overrides, data)
    if magnification is not None:
        extra.append(f"data.magnification={magnification}")
    cfg = load_config(config, extra)
    result = run_experiment(cfg, out, folds=parse_folds(fold), resume=resume, config_path=str(config))  # type: ignore[arg-type]
    if result.methods:
        print_result(result, Console(soft_wrap=True))


def register(app: typer.Typer) -> None:
    """Add the ``train`` command."""
    app.command("train")(train)
