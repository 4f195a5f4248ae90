"""``histobreast predict``: class probabilities for new images from a trained model folder."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import typer

from histobreast.data.imageio import collect_images
from histobreast.data.records import UNLABELLED
from histobreast.errors import ConfigError


def unlabelled_records(model: Path, inputs: list[Path], microns_per_pixel: float | None) -> list[Any]:
    """The images named or found under ``inputs`` as unlabelled records at the scale ``model`` (a model or
    ensemble folder) expects: ``microns_per_pixel``, else the training images'."""
    from histobreast.data.records import ImageRecord
    from histobreast.pipelines.bagging import is_ensemble_folder, read_ensemble_folder
    from histobreast.pipelines.input_range import prediction_scale
    from histobreast.pipelines.package import read_model_info

    ensemble = read_ensemble_folder(model) if is_ensemble_folder(model) else None
    info = read_model_info(ensemble.members[0] if ensemble else model)  # an ensemble's members share the scale
    scale, _ = prediction_scale(info, microns_per_pixel, model)
    return [
        ImageRecord(path=p, label=UNLABELLED, patient_id=p.stem, microns_per_pixel=scale, source="predict")
        for p in collect_images(inputs)
    ]


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
        None, "--mpp", "--microns-per-pixel", help="Microns per pixel of the images (default: the training images')."
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
        0.6, "--min-confidence", min=0.0, max=1.0, help="Review flag: the called class's probability is below this."
    ),
    min_agreement: float = typer.Option(
        2 / 3,
        "--min-agreement",
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
    from collections import Counter

    import numpy as np
    from rich.console import Console

    from histobreast.data.records import ImageRecord
    from histobreast.outputs import refuse_output_over_inputs
    from histobreast.pipelines import get_pipeline
    from histobreast.pipelines.bagging import is_ensemble_folder, predict_ensemble, read_ensemble_folder
    from histobreast.pipelines.input_range import flag_unlike_training, prediction_scale
    from histobreast.pipelines.package import load_model_folder, read_model_info
    from histobreast.preprocess.views import SIX_VIEWS
    from histobreast.runtime.folder import is_exported_folder
    from histobreast.runtime.predict import predict_to_csv

    if is_exported_folder(model):  # an ONNX export: the torch-free runtime applies it
        if review is not None:
            raise ConfigError(f"{model}: --review needs the model folder; an exported folder predicts the CSV only")
        for line in predict_to_csv(
            model, inputs, out, tta=tta, method=method, microns_per_pixel=microns_per_pixel, batch_size=batch_size
        ):
            typer.echo(line)
        return
    if explain and review is None:
        raise ConfigError("--explain: the maps go on the case review's cards; add --review DIR")
    refuse_output_over_inputs(out, inputs, "--out", folder=False)
    if out.is_dir():
        raise ConfigError(f"--out {out}: is a folder; give the CSV file's name")
    if review is not None:
        refuse_output_over_inputs(review, [*inputs, out], "--review", folder=True)
    ensemble = read_ensemble_folder(model) if is_ensemble_folder(model) else None
    info = read_model_info(ensemble.members[0] if ensemble else model)  # an ensemble's members share the scale
    scale, note = prediction_scale(info, microns_per_pixel, model)
    console = Console(soft_wrap=True)
    if note:
        console.print(note)
    records = [
        ImageRecord(path=p, label=UNLABELLED, patient_id=p.stem, microns_per_pixel=scale, source="predict")
        for p in collect_images(inputs)
    ]
    unlike = flag_unlike_training(records, info)
    options = {"tta_views": SIX_VIEWS if tta else (), "batch_size": batch_size, "device": device}
    rule = None
    if ensemble is not None:  # the vote (with its `uncertainty` column), then each member's headline method
        voted = predict_ensemble(model, records, **options)
        results, rule = {"ensemble": voted.ensemble, **voted.members}, voted.rule
    else:
        results = get_pipeline(info["pipeline"]).predict_records(load_model_folder(model), records, **options)
    chosen = method or next(iter(results))
    if chosen not in results:
        raise ConfigError(f"--method: {chosen!r} is not one of this model's methods {list(results)}")
    pred = results[chosen]
    pred.extra["outside_training"] = np.array([float(i in unlike) for i in pred.image_ids])
    pred.to_csv(out)
    counts = Counter(pred.classes[i] for i in pred.predicted)
    summary = ", ".join(f"{c} {counts.get(c, 0)}" for c in pred.classes)
    for image_id, reasons in sorted(unlike.items()):
        console.print(f"outside the training images (flagged): {image_id}: {'; '.join(reasons)}")
    how = chosen + (f", {rule} rule" if chosen == "ensemble" else "") + (", six-view TTA" if tta else "")
    console.print(f"{len(pred)} image{'s' * (len(pred) != 1)} ({how}): {summary} -> {out}")
    if review is not None:
        from histobreast.explain.api import card_overlays
        from histobreast.report.case_review import review_run_info, write_case_review

        written = write_case_review(
            results,
            chosen,
            review,
            review_run_info(model, inputs, chosen),
            min_confidence=min_confidence,
            min_agreement=min_agreement,
            readings="members" if ensemble is not None else "other methods",
            overlays=card_overlays(model, records, pred.predicted.tolist(), device=device) if explain else None,
        )
        console.print(f"case review: {written['html']}")


def register(app: typer.Typer) -> None:
    """Add the ``predict`` command."""
    app.command("predict")(predict)
