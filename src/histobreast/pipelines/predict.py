"""Prediction of new images as a Python API: a model or ensemble folder -> every method's predictions.

:func:`predict_folder` runs a model folder's pipeline (or an ensemble's vote and members) on
records; :func:`predict_records` / :func:`predict_images` do what ``histobreast predict`` does for records or
image files and folders (the model's scale looked up, images unlike the training images flagged,
one method chosen), and
:func:`write_review` writes its case review. ``histobreast predict``, the demo and notebooks call these.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from histobreast.data.imageio import collect_images
from histobreast.data.records import ImageRecord, unlabelled
from histobreast.errors import ConfigError
from histobreast.outputs import refuse_output_over_inputs
from histobreast.pipelines.bagging import is_ensemble_folder, predict_ensemble, read_ensemble_folder
from histobreast.pipelines.input_range import flag_unlike_training, prediction_scale
from histobreast.pipelines.package import LoadedModel, load_model_folder, read_model_info
from histobreast.pipelines.registry import get_pipeline
from histobreast.predictions import Predictions, choose_method
from histobreast.preprocess.views import SIX_VIEWS
from histobreast.report.case_review import MIN_AGREEMENT, MIN_CONFIDENCE, review_run_info, write_case_review

ENSEMBLE_METHOD = "ensemble"  # an ensemble folder's vote, before its members' rows
Overlays = Mapping[str, tuple[np.ndarray, str]]  # image id -> (picture, caption) beside its review card


@dataclass
class ImagePredictions:
    """What :func:`predict_images` gives: every method's predictions and the one chosen."""

    model: Path
    inputs: list[str]  # what the records came from (the review's header)
    records: list[ImageRecord]
    methods: dict[str, Predictions]  # every method, the headline first (ensemble: the vote, then members)
    method: str  # the chosen one
    rule: str | None  # an ensemble's voting rule (None: one model)
    tta: bool
    outside_training: dict[str, list[str]]  # image id -> why it is unlike the training images
    scale_note: str = ""  # why a given scale does not matter to this model ("" if it does)

    @property
    def predictions(self) -> Predictions:
        """The chosen method's table (with its ``outside_training`` column)."""
        return self.methods[self.method]

    def class_counts(self) -> dict[str, int]:
        """How many images were called each class (every class, in class order)."""
        counts = Counter(self.predictions.classes[i] for i in self.predictions.predicted)
        return {c: counts.get(c, 0) for c in self.predictions.classes}

    def describe(self) -> str:
        """The method as a phrase: ``hybrid, six-view TTA`` / ``ensemble, sum rule``."""
        rule = f", {self.rule} rule" if self.method == ENSEMBLE_METHOD else ""
        return self.method + rule + (", six-view TTA" if self.tta else "")


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


def check_outputs(inputs: Sequence[Path], out: Path | None = None, review: Path | None = None) -> None:
    """Refuse a CSV ``out`` or a ``review`` folder that would overwrite an input (before any work)."""
    if out is not None:
        refuse_output_over_inputs(out, inputs, "--out", folder=False)
        if out.is_dir():
            raise ConfigError(f"--out {out}: is a folder; give the CSV file's name")
    if review is not None:
        refuse_output_over_inputs(review, [*inputs, *([out] if out is not None else [])], "--review", folder=True)


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


def write_review(
    result: ImagePredictions,
    review_dir: str | Path,
    *,
    min_confidence: float = MIN_CONFIDENCE,
    min_agreement: float = MIN_AGREEMENT,
    overlays: Overlays | None = None,
) -> dict[str, Path]:
    """The case review of ``result`` in ``review_dir``: a card per image, least certain first, flagged
    when the called class's probability is below ``min_confidence`` or fewer than ``min_agreement`` of
    the other readings (methods, members) agree; ``overlays`` put a picture beside each card."""
    return write_case_review(
        result.methods,
        result.method,
        review_dir,
        review_run_info(result.model, result.inputs, result.method),
        min_confidence=min_confidence,
        min_agreement=min_agreement,
        readings="members" if result.rule is not None else "other methods",
        overlays=overlays,
    )
