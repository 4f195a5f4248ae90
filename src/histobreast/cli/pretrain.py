"""``histobreast pretrain``: self-supervised pre-training of an encoder, and ``pretrain probe``, its feature check.

``histobreast pretrain --config ...`` is short for ``histobreast pretrain run --config ...``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from histobreast.cli.data_option import with_data_root
from histobreast.cli.run_by_default import RunByDefault

pretrain_app = typer.Typer(
    help="Self-supervised pre-training on unlabelled H&E tiles or slides (SimCLR, BYOL, DINO) and its k-NN / linear probe.",
    cls=RunByDefault,
    no_args_is_help=True,
)

_CONFIG = typer.Option(
    None, "--config", "-c", help="Pre-training YAML (e.g. configs/pretrain/simclr_resnet18_bach_cpu.yaml)."
)
_DATA = typer.Option(
    None,
    "--data",
    help="Image folder or dataset tree, or slides (a slide, a folder of slides, a .txt list); overrides data.root.",
)
_SET = typer.Option([], "--set", help="Config override key=value (repeatable), e.g. data.fold=2.")


@pretrain_app.command("run")
def run(
    config: Path = typer.Option(
        ..., "--config", "-c", help="Pre-training YAML (e.g. configs/pretrain/simclr_resnet18_bach_cpu.yaml)."
    ),
    data: Optional[Path] = _DATA,
    out: Path = typer.Option(..., "--out", help="Output folder: encoder.safetensors, pretrain.json, run/."),
    overrides: list[str] = _SET,
    resume: bool = typer.Option(False, "--resume", help="Continue an interrupted run in --out."),
) -> None:
    """Pre-train the config's encoder on the images of --data (data.fold set: that fold's training images only).

    Example: histobreast pretrain --config configs/pretrain/simclr_resnet18_bach_cpu.yaml --data ../shared/data/bach --out runs/pretrain_f1
    """
    from histobreast.pipelines.pretrain import run_pretrain
    from histobreast.pipelines.pretrain_config import load_pretrain_config

    result = run_pretrain(load_pretrain_config(config, with_data_root(overrides, data)), out, resume=resume)
    typer.echo(
        f"{result.weights}: {result.steps} steps on {result.images} images, final loss {result.final_loss:.4f}, "
        f"{result.seconds / 60:.1f} min; use it with --set model.kwargs.encoder_weights={result.weights}"
    )


@pretrain_app.command("probe")
def probe(
    config: Path = typer.Option(..., "--config", "-c", help="The pre-training YAML (encoder, tile scale, data)."),
    weights: Optional[str] = typer.Option(
        None,
        "--weights",
        help="encoder.safetensors ({fold} in the path: that fold's encoder); omit for the random-init baseline.",
    ),
    data: Optional[Path] = _DATA,
    fold: str = typer.Option(
        "all", "--fold", help="Folds to fit on their training images and score on their test images: 'all', N or 1,3."
    ),
    out: Optional[Path] = typer.Option(
        None, "--out", help="Folder for probe.json and fold<N>/predictions (for `histobreast compare`); resumes."
    ),
    overrides: list[str] = _SET,
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda or cuda:N."),
) -> None:
    """k-NN and linear-probe (logistic regression) accuracy of the frozen encoder's features on labelled folds.

    Example: histobreast pretrain probe --config configs/pretrain/simclr_resnet18_bach_cpu.yaml --data ../shared/data/bach --weights runs/pretrain/simclr_resnet18_bach_fold{fold}/encoder.safetensors --out runs/probe_simclr
    """
    from histobreast.cli.train import parse_folds
    from histobreast.pipelines.pretrain_config import load_pretrain_config
    from histobreast.pipelines.pretrain_probe import probe_folds

    cfg = load_pretrain_config(config, with_data_root(overrides, data))
    folds = parse_folds(fold)
    result = probe_folds(cfg, weights, folds if isinstance(folds, list) else None, device=device, out=out)
    for scores in result["folds"]:
        typer.echo(
            f"fold {scores['fold']} ({scores['train_images']} train / {scores['test_images']} test images, "
            f"{len(scores['classes'])} classes), {scores['weights'] or 'random init'}: "
            f"k-NN {scores['knn_accuracy']:.3f}, linear probe {scores['linear_accuracy']:.3f} "
            f"(balanced {scores['knn_balanced_accuracy']:.3f} / {scores['linear_balanced_accuracy']:.3f})"
        )
    if len(result["folds"]) > 1:
        mean = {k: f"{v['mean']:.3f} ± {v['std']:.3f}" for k, v in result["summary"].items()}
        typer.echo(
            f"{len(result['folds'])} folds: k-NN {mean['knn_accuracy']}, linear probe {mean['linear_accuracy']} "
            f"(balanced {mean['knn_balanced_accuracy']} / {mean['linear_balanced_accuracy']})"
        )
    if out is not None:
        typer.echo(f"written: {out}/probe.json; pair it with another run: histobreast compare {out} OTHER_RUN")


def register(app: typer.Typer) -> None:
    """Add the ``pretrain`` command group."""
    app.add_typer(pretrain_app, name="pretrain")
