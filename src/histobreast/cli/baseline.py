"""``histobreast baseline``: the published baselines System A is compared against."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.console import Console

from histobreast.cli.data_option import with_data_root
from histobreast.errors import ConfigError

baseline_app = typer.Typer(
    help="Baselines of the papers' comparisons (paper A, Table 9: Spanhol et al. 2016).", no_args_is_help=True
)


def _folds(text: str) -> list[int] | str:
    if text == "all":
        return "all"
    try:
        return [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise ConfigError(f"--fold: expected 'all' or comma-separated fold numbers, got {text!r}") from None


@baseline_app.command("spanhol")
def spanhol(
    config: Path = typer.Option(..., "--config", help="Baseline config (pipeline: spanhol2016)."),
    data: Optional[Path] = typer.Option(None, "--data", help="Dataset folder; overrides the config's data.root."),
    out: Optional[Path] = typer.Option(None, "--out", help="Experiment folder (default: runs/<config name>)."),
    fold: str = typer.Option(
        "all", "--fold", "--folds", help="'all' or comma-separated fold numbers, e.g. 1,2 (as train --fold)."
    ),
    overrides: Optional[list[str]] = typer.Option(None, "--set", help="Config override key=value (repeatable)."),
    resume: bool = typer.Option(False, "--resume", help="Continue an interrupted experiment."),
) -> None:
    """Spanhol et al. 2016: patch CNNs on 32 and 64 px patches (sliding 50 % overlap and random),
    four models fused by the max rule; per fold the fused result and every member are reported.

    Example: histobreast baseline spanhol --config configs/baselines/spanhol2016_bach_binary_cpu.yaml --fold 1
    """
    from histobreast.pipelines import get_pipeline, spanhol2016
    from histobreast.pipelines.config import load_config
    from histobreast.pipelines.experiment import run_experiment

    cfg = load_config(config, with_data_root(overrides, data))
    if get_pipeline(cfg.pipeline) is not spanhol2016.PIPELINE:
        raise ConfigError(
            f"{config}: pipeline is {cfg.pipeline!r}; `baseline spanhol` runs pipeline: {spanhol2016.PIPELINE.name}"
        )
    out = out or Path("runs") / cfg.name
    run_experiment(cfg, out, folds=_folds(fold), resume=resume, config_path=str(config))
    Console(soft_wrap=True).print(f"Spanhol 2016 baseline written to {out}; report: {out}/report/report.md")


def register(app: typer.Typer) -> None:
    """Add the ``baseline`` command group."""
    app.add_typer(baseline_app, name="baseline")
