"""``histobreast explain``: class activation maps of a model's calls, as overlays and raw maps."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from histobreast.cli.options import check_scale


def explain(
    model: Path = typer.Argument(..., help="Model folder (model.json), or an ensemble folder (ensemble.json)."),
    inputs: list[Path] = typer.Argument(..., help="Images and/or folders (searched recursively)."),
    out: Path = typer.Option(
        ..., "--out", help="Folder for <image>.png overlays, maps/<image>/<map>.npy and explanations.json."
    ),
    method: str = typer.Option(
        "gradcam",
        "--method",
        help="Map method: gradcam, gradcam++, hirescam, xgradcam, layercam, eigencam, eigengradcam.",
    ),
    target_class: Optional[str] = typer.Option(
        None, "--class", help="Class to explain (default: each image's call by the model)."
    ),
    microns_per_pixel: Optional[float] = typer.Option(
        None,
        "--mpp",
        "--microns-per-pixel",
        callback=check_scale,
        help="Scale of the images (default: the training images').",
    ),
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda or cuda:N."),
) -> None:
    """Write where each image's call comes from: System A's global, local (5x3 patches) and fused maps,
    System B's per-view, per-scale maps on its key regions, an ensemble's combined map.

    Example: histobreast explain runs/bach_binary_cpu/fold1/model images/ --out explained/ --method gradcam++
    """
    from rich.console import Console

    from histobreast.explain import explain as explain_images
    from histobreast.explain import write_explanations
    from histobreast.explain.api import class_index
    from histobreast.explain.cam import check_method
    from histobreast.pipelines.bagging import is_ensemble_folder, read_ensemble_folder
    from histobreast.pipelines.package import read_model_info
    from histobreast.pipelines.predict import unlabelled_records

    check_method(method)
    records = unlabelled_records(model, inputs, microns_per_pixel)
    targets = None
    if target_class is not None:
        folder = read_ensemble_folder(model) if is_ensemble_folder(model) else None
        classes = read_model_info(folder.members[0] if folder else model)["classes"]
        targets = [class_index(target_class, classes)] * len(records)
    explanations = explain_images(model, records, method=method, targets=targets, device=device)
    manifest = write_explanations(explanations, out, model=str(model))
    console = Console(soft_wrap=True)
    for found in explanations:
        console.print(
            f"{found.image_id}: {found.method} map of {found.target_class} (p = {found.probs[found.target]:.2f})"
        )
    console.print(f"{len(explanations)} image{'s' * (len(explanations) != 1)} explained -> {manifest}")


def register(app: typer.Typer) -> None:
    """Add the ``explain`` command."""
    app.command("explain")(explain)
