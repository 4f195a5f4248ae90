"""``histobreast ensemble``: train paper A's bagging ensemble, evaluate an ensemble folder."""

from __future__ import annotations

import dataclasses
from enum import Enum
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console

from histobreast.cli.data_option import with_data_root
from histobreast.cli.options import check_finite

ensemble_app = typer.Typer(
    help="Bagging ensembles (paper A): k models on k rotations of the training set, voting by sum, max or majority.",
    no_args_is_help=True,
)


class Rule(str, Enum):
    """Ensemble voting rules."""

    sum = "sum"
    max = "max"
    majority = "majority"


@ensemble_app.command("train")
def train(
    config: Path = typer.Option(..., "--config", help="Experiment config (its pipeline trains each member)."),
    data: Optional[Path] = typer.Option(None, "--data", help="Dataset folder; overrides the config's data.root."),
    out: Path = typer.Option(..., "--out", help="Ensemble folder to write (members inside, ensemble.json)."),
    k: Optional[int] = typer.Option(None, "--k", help="Members (paper: 5); default: the config's ensemble.members."),
    fold: int = typer.Option(
        1,
        "--fold",
        help="Fold of the experiment's protocol: its training images are bagged, "
        "its test images kept for `ensemble evaluate`.",
    ),
    rule: Optional[Rule] = typer.Option(None, "--rule", help="Voting rule stored with the ensemble (paper: sum)."),
    prune_ratio: Optional[float] = typer.Option(
        None, "--prune-ratio", callback=check_finite, help="Channel-prune every member to this ratio O."
    ),
    prune_loops: Optional[int] = typer.Option(None, "--prune-loops", help="Loops R of the members' pruning."),
    overrides: Optional[list[str]] = typer.Option(None, "--set", help="Config override key=value (repeatable)."),
    resume: bool = typer.Option(False, "--resume", help="Keep finished members, continue an interrupted one."),
) -> None:
    """Train k members, member j on all subsets of the training set but the j-th, validating on it.

    Example: histobreast ensemble train --config configs/zhu2019/ensemble_bach_binary_cpu.yaml --k 5 --out runs/bagging
    """
    from histobreast.data.protocol import read_fold
    from histobreast.pipelines.bagging import ensemble_options, train_ensemble
    from histobreast.pipelines.config import load_config

    cfg = load_config(config, with_data_root(overrides, data))
    options = ensemble_options(
        cfg, members=k, rule=rule.value if rule else None, prune_ratio=prune_ratio, prune_loops=prune_loops
    )
    chosen, classes = read_fold(cfg.data, cfg.seed, fold, option="--fold")
    split, training, test = chosen.split, chosen.training, chosen.test
    console = Console(soft_wrap=True)
    console.print(
        f"bagging {len(training)} training images of {split.name} into {options.members} members "
        f"({len(test)} test images kept for evaluation)"
    )
    folder = train_ensemble(cfg, training, classes, out, options=options, test_records=test, fold=fold, resume=resume)
    console.print(
        f"wrote the ensemble {folder} (rule {options.rule}); evaluate: histobreast ensemble evaluate {folder}"
    )


@ensemble_app.command("evaluate")
def evaluate(
    ensemble_dir: Path = typer.Argument(..., help="Ensemble folder (ensemble.json)."),
    data: Optional[Path] = typer.Option(
        None, "--data", help="Labelled images to evaluate on (default: the test images remembered at training)."
    ),
    rule: Optional[Rule] = typer.Option(None, "--rule", help="Voting rule (default: the ensemble's)."),
    out: Optional[Path] = typer.Option(None, "--out", help="Output folder (default: ENSEMBLE_DIR/evaluation)."),
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda or cuda:N."),
) -> None:
    """Report the ensemble beside each member; predictions.csv gets a per-image `uncertainty` column
    (the fraction of members voting against the majority).

    Example: histobreast ensemble evaluate runs/bagging --rule sum
    """
    from histobreast.data.task_records import experiment_records
    from histobreast.pipelines.bagging import evaluate_ensemble, held_out_records, read_ensemble_folder
    from histobreast.pipelines.package import load_model_folder

    folder = read_ensemble_folder(ensemble_dir)
    if data is None:
        records = held_out_records(ensemble_dir)
    else:
        cfg = load_model_folder(folder.members[0]).cfg
        records, _ = experiment_records(dataclasses.replace(cfg.data, root=str(data)))
    out = out or Path(ensemble_dir) / "evaluation"
    result = evaluate_ensemble(ensemble_dir, records, out, rule.value if rule else None, device=device)
    console = Console(soft_wrap=True)
    for name, metrics in result["members"].items():
        console.print(f"member {name}: accuracy {metrics['metrics']['image_level_accuracy']:.3f}")
    console.print(
        f"ensemble ({result['rule']}): accuracy {result['ensemble']['metrics']['image_level_accuracy']:.3f} "
        f"({result['gain_over_best_member']:+.3f} over the best member); report: {out}/report/report.md"
    )


def register(app: typer.Typer) -> None:
    """Add the ``ensemble`` command group."""
    app.add_typer(ensemble_app, name="ensemble")
