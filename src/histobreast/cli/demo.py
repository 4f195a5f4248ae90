"""``histobreast demo``: the main job on built-in synthetic data (what ``make demo`` runs)."""

from __future__ import annotations

import logging
from pathlib import Path

import typer

from histobreast.cli.options import seed_option


def demo(
    out: Path = typer.Option(Path("runs/demo"), "--out", "-o", help="Folder for the data, runs and reports."),
    configs: Path = typer.Option(None, "--configs", help="Folder of the demo configs (default: configs/demo)."),
    seed: int = seed_option("Seed of the synthetic data and of training."),
) -> None:
    """Synthesise BreaKHis- and BACH-shaped data, train System A's hybrid model, prune it, bag an
    ensemble, train System B, and write one summary report (a few minutes on a 2-core CPU).

    Example: histobreast demo --out runs/demo
    """
    import torch

    from histobreast.demo import run_demo

    # The demo's models are tiny: one thread is as fast as two on an idle machine and several
    # times faster on a busy one (no OpenMP threads spinning against other processes).
    torch.set_num_threads(1)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    result = run_demo(out, config_dir=configs, seed=seed, say=typer.echo)
    for key, value in result.numbers.items():
        if key.startswith(("system_a/hybrid", "system_b/image")):
            typer.echo(f"{key}: image-level accuracy {value['mean']:.3f} ± {value['std']:.3f}")
    typer.echo(f"ensemble (sum rule): {result.numbers['ensemble/sum']:.3f}")
    typer.echo(f"Report: {result.report_dir / 'report.md'} (and report.html)")


def register(app: typer.Typer) -> None:
    app.command("demo")(demo)
