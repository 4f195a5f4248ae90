"""Prediction of new images as a Python API: a model or ensemble folder -> every method's predictions.

:func:`predict_folder` runs a model folder's pipeline (or an ensemble's vote and members) on
records; :func:`predict_records` / :func:`predict_images` do what ``histobreast predict`` does for records or
image files and folders (the model's scale looked up, images unlike the training images flagged,
one method chosen), and
:func:`write_review` writes its case review (:mod:`histobreast.pipelines.image_predictions`, which the
ONNX runtime shares). ``histobreast predict``, the demo and notebooks call these.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from histobreast.data.imageio import collect_images
from histobreast.data.records import ImageRecord, unlabelled
from histobreast.pipelines.bagging import is_ensemble_folder, predict_ensemble, read_ensemble_folder
from histobreast.pipelines.image_predictions import (  # noqa: F401 (check_outputs, write_review: this API's)
    ENSEMBLE_METHOD,
    ImagePredictions,
    check_outputs,
    write_review,
)
from histobreast.pipelines.input_range import flag_unlike_training, prediction_scale
from histobreast.pipelines.package import LoadedModel, load_model_folder, read_model_info
from histobreast.pipelines.registry import get_pipeline
from histobreast.predictions import Predictions, choose_method
from histobreast.preprocess.views import SIX_VIEWS


def _model_info(model: Path) -> dict[str, Any]:
    """The model.json of a model folder, or of an ensemble's first member (its members share the scale)."""
    ensemble = read_ensemble_folder(model) if is_ensemble_folder(model) else None
    return read_model_info(ensemble.members[0] if ensemble else model)


def unlabelled_records(model: Path, inputs: Sequence[Path], microns_per_pixel: float | None) -> list[ImageRecord]:
    """The images named or found under ``inputs`` as unlabelled records at the scale ``model`` (a model or
    ensemble folder) expects: ``microns_per_pixel``, else the training images'."""
    scale, _ = prediction_scale(_model_info(model), microns_per_pixel, model)
    return unlabelled(collect_images(inputs), scale)


def predict_folder(
    model: str | Path | LoadedModel,
    records: Sequence[ImageRecord],
    *,
    tta_views: Sequence[str] = (),
    batch_size: int | None = None,
    device: str = "auto",
) -> tuple[dict[str, Predictions], str | None]:
    """Every method's predictions of a model folder (its pipeline's methods, the headline first), or of
    an ensemble folder (the vote with its ``uncertainty`` column, then each member's headline); and the
    ensemble's rule (None for one model)."""
    options: dict[str, Any] = {"tta_views": tta_views, "batch_size": batch_size, "device": device}
    if not isinstance(model, LoadedModel) and is_ensemble_folder(model):
        voted = predict_ensemble(model, records, **options)
        return {ENSEMBLE_METHOD: voted.ensemble, **voted.members}, voted.rule
    loaded = model if isinstance(model, LoadedModel) else load_model_folder(model)
    return get_pipeline(loaded.pipeline).predict_records(loaded, records, **options), None


def predict_records(
    model: str | Path,
    records: Sequence[ImageRecord],
    *,
    method: str | None = None,
    tta: bool = False,
    batch_size: int | None = None,
    device: str = "auto",
    sources: Sequence[str | Path] = (),
) -> ImagePredictions:
    """Predict ``records`` with a model or ensemble folder, as ``histobreast predict`` does.

    ``tta`` averages over the six views; ``method`` picks the table (default: the headline, an
    ensemble's vote; an ensemble member by name); the chosen table gets an ``outside_training``
    column (1 for images unlike the training images). ``sources`` say where the records came from.
    """
    model = Path(model)
    unlike = flag_unlike_training(records, _model_info(model))
    methods, rule = predict_folder(
        model, records, tta_views=SIX_VIEWS if tta else (), batch_size=batch_size, device=device
    )
    chosen, _ = choose_method(methods, method, unlike)
    return ImagePredictions(model, [str(s) for s in sources], list(records), methods, chosen, rule, tta, unlike)


def predict_images(
    model: str | Path,
    inputs: Sequence[str | Path],
    *,
    microns_per_pixel: float | None = None,
    **options: Any,
) -> ImagePredictions:
    """:func:`predict_records` on every image named or found under ``inputs``, taken at
    ``microns_per_pixel`` (default: the training images' scale); ``options`` as there."""
    model, paths = Path(model), [Path(p) for p in inputs]
    scale, note = prediction_scale(_model_info(model), microns_per_pixel, model)
    result = predict_records(model, unlabelled(collect_images(paths), scale), sources=paths, **options)
    result.scale_note = note
    return result
