"""``histobreast models``: the registered networks, their size and cost, and weight-file conversion."""

from __future__ import annotations

import inspect
import json
from pathlib import Path
from typing import Any, Optional

import typer

from histobreast.errors import ConfigError, HistobreastError

models_app = typer.Typer(
    help="Registered networks: list them, show parameters and MACs, convert weight files.", no_args_is_help=True
)

# Modules that exist only in training (GoogLeNet's auxiliary heads): left out of inference counts.
TRAINING_ONLY = ("aux1", "aux2", "global_branch.aux1", "global_branch.aux2", "local_branch.aux1", "local_branch.aux2")


def example_inputs(model: Any, size: int) -> tuple[Any, ...]:
    """One image's input for ``model`` at ``size`` px: the hybrid's global image + its 15 patches,
    MSMV-PFENet's crop stack, a Spanhol patch at its own size, else one ``(1, 3, size, size)`` image."""
    import torch

    from histobreast.models.hybrid import HybridCNN

    if isinstance(model, HybridCNN):
        return ({"global": torch.zeros(1, 3, size, size), "patches": torch.zeros(1, 15, 3, size, size)},)
    if hasattr(model, "scales"):
        return (torch.zeros(1, len(model.scales), 3, size, size),)
    if hasattr(model, "patch_size"):
        return (torch.zeros(1, 3, model.patch_size, model.patch_size),)
    return (torch.zeros(1, 3, size, size),)


def _kwargs(text: str | None) -> dict[str, Any]:
    if not text:
        return {}
    try:
        value = json.loads(text)
    except json.JSONDecodeError as err:
        raise ConfigError(f"--kwargs: not valid JSON ({err})") from None
    if not isinstance(value, dict):
        raise ConfigError('--kwargs: expected a JSON object, e.g. \'{"encoder": "resnet18"}\'')
    return value


@models_app.command("list")
def list_command() -> None:
    """List every registered network with its one-line description.

    Example: histobreast models list
    """
    from rich.console import Console
    from rich.table import Table

    from histobreast.models.registry import list_models, model_builder

    table = Table("name", "description")
    for name in list_models():
        doc = inspect.getdoc(model_builder(name)) or ""
        table.add_row(name, doc.splitlines()[0] if doc else "")
    Console(soft_wrap=True).print(table)


@models_app.command("info")
def info(
    name: str = typer.Argument(..., help="Registered model name (see `histobreast models list`)."),
    input_size: int = typer.Option(224, "--input-size", help="Image side in px for the MAC count."),
    num_classes: int = typer.Option(2, "--num-classes", help="Output classes."),
    kwargs: Optional[str] = typer.Option(None, "--kwargs", help="Builder kwargs as JSON, e.g. '{\"se\": false}'."),
) -> None:
    """Parameters (with and without training-only heads) and multiply-accumulates of one forward pass.

    For the hybrid model one pass is the global image plus its 15 patches.
    Example: histobreast models info googlenet_sep --input-size 224
    """
    from rich.console import Console

    from histobreast.compress.profile import count_macs, count_parameters
    from histobreast.models import create_model

    model = create_model(name, num_classes=num_classes, **_kwargs(kwargs))
    total = count_parameters(model)
    inference = count_parameters(model, exclude=TRAINING_ONLY)
    macs = count_macs(model, example_inputs(model, input_size))
    console = Console(soft_wrap=True)
    console.print(f"{name}: {type(model).__name__}, {num_classes} classes")
    console.print(f"  parameters: {inference / 1e6:.2f} M at inference ({total / 1e6:.2f} M with training-only heads)")
    console.print(f"  MACs per image at {input_size} px: {macs / 1e9:.3f} G")


@models_app.command("convert-weights")
def convert_weights(
    source: Path = typer.Argument(..., help="Local weights: a plain state-dict pickle (.pth/.pt) or .safetensors."),
    destination: Path = typer.Argument(..., help="safetensors file to write."),
    model: Optional[str] = typer.Option(None, "--model", help="Check the weights fit this registered model."),
    num_classes: int = typer.Option(1000, "--num-classes", help="Classes of the checked model (ImageNet: 1000)."),
) -> None:
    """Convert a local weights file into safetensors (nothing is downloaded).

    Pickles are read only here, with PyTorch's restricted weights-only unpickler (plain tensors);
    everywhere else pickles are refused. With --model the result is loaded into that model strictly.
    Example: histobreast models convert-weights resnet50-0676ba61.pth resnet50.safetensors --model resnet50
    """
    from rich.console import Console

    from histobreast.models import create_model
    from histobreast.models.weights import convert_torch_weights, read_weights, save_weights

    if not source.is_file():
        raise ConfigError(f"{source}: weights file not found")
    if source.suffix.lower() == ".safetensors":
        save_weights(read_weights(source), destination)
    else:
        convert_torch_weights(source, destination)
    if model is not None:
        try:
            create_model(model, num_classes=num_classes, weights=destination)
        except HistobreastError:  # weights that do not fit are not left behind as if converted
            destination.unlink()
            raise
    tensors = read_weights(destination)
    size = sum(t.numel() for t in tensors.values())
    checked = f", loads into {model}" if model else ""
    Console(soft_wrap=True).print(f"wrote {destination}: {len(tensors)} tensors, {size / 1e6:.2f} M values{checked}")


def register(app: typer.Typer) -> None:
    """Add the ``models`` command group."""
    app.add_typer(models_app, name="models")
