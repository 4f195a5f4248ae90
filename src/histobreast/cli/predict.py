"""``histobreast predict``: class probabilities for new images from a trained model folder."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from histobreast.cli.options import check_finite, check_scale
from histobreast.errors import ConfigError


def predict(
    model: Path = typer.Argument(
        ...,
        help="Model folder (model.json + model.safetensors), an ensemble folder "
        "(ensemble.json: its members vote by its rule), or an exported folder (export.json: run by onnxruntime).",
    ),
    inputs: list[Path] = typer.Argument(..., help="Images and/or folders (searched recursively)."),
    out: Path = typer.Option(
        ...,
        "--out",
        help="CSV to write, one row per image: image_id, path, patient_id, "
        "magnification, label (empty), predicted, p_<class>...",
    ),
    tta: bool = typer.Option(False, "--tta", help="Average over the six views (raw, 3 rotations, 2 flips)."),
    method: Optional[str] = typer.Option(
        None,
        "--method",
        help="Evaluation method (default: the pipeline's headline, "
        "e.g. hybrid; zhu2019 also: global, local, hybrid_max, local_max; "
        "an ensemble: its vote, or one member by name).",
    ),
    microns_per_pixel: Optional[float] = typer.Option(
        None,
        "--mpp",
        "--microns-per-pixel",
        callback=check_scale,
        help="Microns per pixel of the images (default: the training images').",
    ),
    batch_size: Optional[int] = typer.Option(None, "--batch-size", min=1, help="Images per inference batch."),
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda or cuda:N."),
    review: Optional[Path] = typer.Option(
        None,
        "--review",
        help="Also write a case review into this folder: a card "
        "per image and a table, least certain first, with "
        "the images worth a second look flagged.",
    ),
    min_confidence: float = typer.Option(
        0.6,
        "--min-confidence",
        callback=check_finite,
        min=0.0,
        max=1.0,
        help="Review flag: the called class's probability is below this.",
    ),
    min_agreement: float = typer.Option(
        2 / 3,
        "--min-agreement",
        callback=check_finite,
        min=0.0,
        max=1.0,
        help="Review flag: fewer than this share of the model's other readings (branches, members, views) agree.",
    ),
    explain: bool = typer.Option(
        False, "--explain", help="With --review: put each card's Grad-CAM map (where the call comes from) beside it."
    ),
) -> None:
    """Predict class probabilities for every image; writes one CSV row per image.

    Example: histobreast predict runs/zhu_bach/fold1/model slides/ --out predictions.csv --tta --review review/
    """
    from rich.console import Console

    from histobreast.runtime.folder import is_exported_folder
    from histobreast.runtime.predict import predict_to_csv

    if explain and review is None:
        raise ConfigError("--explain: the maps go on the case review's cards; add --review DIR")
    if is_exported_folder(model):  # an ONNX export: the torch-free runtime applies it
        if explain:
            raise ConfigError(f"--explain: {model} is an exported folder; the maps need the model folder (PyTorch)")
        thresholds = {"min_confidence": min_confidence, "min_agreement": min_agreement}
        options = {"tta": tta, "method": method, "microns_per_pixel": microns_per_pixel, "batch_size": batch_size}
        for line in predict_to_csv(model, inputs, out, review=review, thresholds=thresholds, **options):
            typer.echo(line)
        return
    from histobreast.pipelines.predict import check_outputs, predict_images, write_review  # PyTorch

    check_outputs(inputs, out, review)
    result = predict_images(
        model,
        inputs,
        method=method,
        tta=tta,
        microns_per_pixel=microns_per_pixel,
        batch_size=batch_size,
        device=device,
    )
    console = Console(soft_wrap=True)
    if result.scale_note:
        console.print(result.scale_note)
    pred = result.predictions
    pred.to_csv(out)
    for image_id, reasons in sorted(result.outside_training.items()):
        console.print(f"outside the training images (flagged): {image_id}: {'; '.join(reasons)}")
    summary = ", ".join(f"{c} {n}" for c, n in result.class_counts().items())
    console.print(f"{len(pred)} image{'s' * (len(pred) != 1)} ({result.describe()}): {summary} -> {out}")
    if review is not None:
        overlays = None
        if explain:
            from histobreast.explain.api import card_overlays

            overlays = card_overlays(model, result.records, pred.predicted.tolist(), device=device)
        written = write_review(
            result, review, min_confidence=min_confidence, min_agreement=min_agreement, overlays=overlays
        )
        console.print(f"case review: {written['html']}")


def register(app: typer.Typer) -> None:
    """Add the ``predict`` command."""
    app.command("predict")(predict)
