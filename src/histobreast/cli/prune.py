"""``histobreast prune``: SEP channel pruning (and DNS) of a trained model; the compression report.

``histobreast prune MODEL_FOLDER ...`` is short for ``histobreast prune run MODEL_FOLDER ...``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import typer
from rich.console import Console

from histobreast.cli.data_option import with_data_root
from histobreast.cli.options import check_finite
from histobreast.cli.run_by_default import RunByDefault
from histobreast.errors import ConfigError

prune_app = typer.Typer(
    cls=RunByDefault,
    help="Compact models (paper A): prune SEP channels and retrain (`prune MODEL_FOLDER`), "
    "or measure a pruning study (`prune report`).",
    no_args_is_help=True,
)


def _overrides(options: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in options.items() if value is not None}


@prune_app.command("run")
def run(
    model_folder: Path = typer.Argument(
        ...,
        help="Trained model folder (model.json) of a SEP model (zhu2019 hybrid or "
        "googlenet_sep), or an experiment folder: every fold*/model is pruned.",
    ),
    out: Path = typer.Option(
        ...,
        "--out",
        help="Folder of the pruned model (a normal model folder); for an experiment folder, out/fold<k> per fold.",
    ),
    ratio: Optional[float] = typer.Option(
        None, "--ratio", callback=check_finite, help="Target pruning ratio O in [0, 1) (paper: 0.5)."
    ),
    loops: Optional[int] = typer.Option(
        None, "--loops", help="Loops R; each removes X = 1 - (1 - O)^(1/R) (paper: 1)."
    ),
    retrain_config: Optional[Path] = typer.Option(
        None, "--retrain-config", help="YAML config whose `train` section retrains the pruned network."
    ),
    iterations: Optional[int] = typer.Option(None, "--iterations", help="Optimizer steps of each retraining."),
    data: Optional[Path] = typer.Option(
        None, "--data", help="Training images (default: the model's own, via its experiment's splits.csv)."
    ),
    dns: bool = typer.Option(False, "--dns", help="Also run Dynamic Network Surgery (weights stored compactly)."),
    dns_sensitivity: Optional[float] = typer.Option(
        None, "--dns-sensitivity", callback=check_finite, help="DNS sensitivity c (thresholds mean + c * std)."
    ),
    internal: bool = typer.Option(
        False,
        "--internal",
        help="Also prune the stem and the Inception reduce convs by |BatchNorm gamma| (beyond the paper; faster).",
    ),
    resume: bool = typer.Option(
        False, "--resume", help="Continue an interrupted pruning in --out from its checkpoints."
    ),
) -> None:
    """Prune MODEL_FOLDER to ratio O in R loops, retraining after each loop.

    Example: histobreast prune runs/zhu2019_bach/fold1/model --ratio 0.5 --loops 1 --out runs/pruned_f1
    """
    from histobreast.outputs import refuse_output_over_inputs
    from histobreast.pipelines.config import load_config
    from histobreast.pipelines.package import MODEL_JSON, load_model_folder
    from histobreast.pipelines.pruning import prune_model_folder, prune_options, training_records
    from histobreast.pipelines.pruning import retrain_config as schedule

    if retrain_config is not None and iterations is not None:
        raise ConfigError("give --retrain-config or --iterations, not both")
    refuse_output_over_inputs(out, [model_folder], "--out", folder=True)
    folds = sorted(model_folder.glob("fold*/model"))
    targets = (
        [(model_folder, out)]
        if (model_folder / MODEL_JSON).is_file() or not folds
        else [(folder, out / folder.parent.name) for folder in folds]
    )
    console = Console(soft_wrap=True)
    for source, destination in targets:
        loaded = load_model_folder(source)
        options = prune_options(
            loaded.cfg,
            **_overrides(
                {
                    "ratio": ratio,
                    "loops": loops,
                    "retrain_iterations": iterations,
                    "dns": dns or None,
                    "dns_sensitivity": dns_sensitivity,
                    "internal": internal or None,
                }
            ),
        )
        train = load_config(retrain_config).train if retrain_config is not None else schedule(loaded.cfg.train, options)
        train_records, val_records = training_records(loaded, data)
        console.print(
            f"pruning {source}: O = {options.ratio:g}, R = {options.loops}, {len(train_records)} training "
            f"and {len(val_records)} validation images"
        )
        folder = prune_model_folder(
            loaded, destination, train_records, val_records, options=options, train=train, resume=resume
        )
        console.print(f"wrote the pruned model folder {folder} (importance plots and pruning.json beside it)")


@prune_app.command("report")
def report(
    out: Path = typer.Option(..., "--out", help="Study folder (pruned models, sweep.json, report/)."),
    config: Optional[Path] = typer.Option(
        None, "--config", help="Experiment config: train a base model on one fold and prune it."
    ),
    data: Optional[Path] = typer.Option(None, "--data", help="Dataset folder; overrides the config's data.root."),
    measure_only: bool = typer.Option(False, "--measure-only", help="Only (re)measure the existing study in --out."),
    fold: int = typer.Option(
        1, "--fold", help="Fold of the experiment's protocol whose test images give the accuracy."
    ),
    base: Optional[Path] = typer.Option(None, "--base", help="Use this trained model folder instead of training one."),
    ratios: Optional[list[float]] = typer.Option(
        None, "--ratio", callback=check_finite, help="Ratios O of the Fig. 12 / Table 7 sweep (repeatable)."
    ),
    loops: Optional[list[int]] = typer.Option(
        None, "--loops", help="Loop counts R of the Fig. 10 sweep (repeatable; 0 = none)."
    ),
    iterations: Optional[int] = typer.Option(None, "--iterations", help="Optimizer steps of each retraining."),
    latency_repeats: int = typer.Option(5, "--latency-repeats", help="Timed CPU passes per model."),
    overrides: Optional[list[str]] = typer.Option(None, "--set", help="Config override key=value (repeatable)."),
    resume: bool = typer.Option(False, "--resume", help="Keep models already pruned in --out."),
) -> None:
    """Parameters, MACs, size, CPU latency (GPU throughput with CUDA) and accuracy against O and R.

    Example: histobreast prune report --config configs/zhu2019/prune_bach_binary_cpu.yaml --out runs/prune_study
    """
    if data is not None and config is None:
        raise ConfigError("--data needs --config: --measure-only reads no images")
    from histobreast.data.protocol import read_fold
    from histobreast.pipelines.config import load_config
    from histobreast.pipelines.pruning import prune_options
    from histobreast.pipelines.pruning_report import compression_report, run_sweep

    console = Console(soft_wrap=True)
    if (config is not None) == measure_only:
        raise ConfigError("give either --config (run the study) or --measure-only (measure the study already in --out)")
    if config is not None:
        cfg = load_config(config, with_data_root(overrides, data))
        options = prune_options(
            cfg,
            retrain_iterations=iterations,
            report_ratios=list(ratios) if ratios else None,
            report_loops=[r for r in loops if r > 0] if loops else None,
        )
        chosen, classes = read_fold(cfg.data, cfg.seed, fold, option="--fold")
        split, train, val, test = chosen.split, chosen.train, chosen.val, chosen.test
        console.print(
            f"compression study on {split.name}: {len(train)} training, {len(val)} validation, "
            f"{len(test)} test images; O = {options.report_ratios}, R = {options.report_loops}"
        )
        run_sweep(
            cfg,
            out,
            train,
            val,
            test,
            classes,
            base=base,
            options=options,
            resume=resume,
            fold=fold,
            description=f"{cfg.data.root}, {split.name}: {len(train)} training, {len(val)} validation, "
            f"{len(test)} test images",
        )
    result = compression_report(out, latency_repeats=latency_repeats)
    for row in result["rows"]:
        console.print(
            f"{row['folder']}: O = {row['ratio']:g}, R = {row['loops']}, {row['params'] / 1e6:.3f} M params, "
            f"{row['macs'] / 1e9:.4f} GMACs, {row['latency_ms']:.1f} ms, accuracy {row['accuracy']:.3f}"
        )
    console.print(f"report: {result['report']}/report.md")


def register(app: typer.Typer) -> None:
    """Add the ``prune`` command group."""
    app.add_typer(prune_app, name="prune")
