"""What ``histobreast predict`` gives, torch-free: every method's predictions, the one chosen, and its case review.

:class:`ImagePredictions` is filled by the PyTorch path (:func:`histobreast.pipelines.predict.predict_images`)
and by the ONNX runtime (:func:`histobreast.runtime.predict.predict_exported_images`) alike, so both
write the same CSV and the same case review (:func:`write_review`); :func:`check_outputs` refuses
outputs over inputs for both before any work. The report machinery (matplotlib) loads only when
a review is written: the torch-free runtime's plain ``predict`` does not need it.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from histobreast.data.records import ImageRecord
from histobreast.errors import ConfigError
from histobreast.outputs import refuse_output_over_inputs
from histobreast.predictions import Predictions

ENSEMBLE_METHOD = "ensemble"  # an ensemble folder's vote, before its members' rows
Overlays = Mapping[str, tuple[np.ndarray, str]]  # image id -> (picture, caption) beside its review card


@dataclass
class ImagePredictions:
    """What `histobreast predict` gives: every method's predictions and the one chosen."""

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


def check_outputs(inputs: Sequence[Path], out: Path | None = None, review: Path | None = None) -> None:
    """Refuse a CSV ``out`` or a ``review`` folder that would overwrite an input (before any work)."""
    if out is not None:
        refuse_output_over_inputs(out, inputs, "--out", folder=False)
        if out.is_dir():
            raise ConfigError(f"--out {out}: is a folder; give the CSV file's name")
    if review is not None:
        refuse_output_over_inputs(review, [*inputs, *([out] if out is not None else [])], "--review", folder=True)


def write_review(
    result: ImagePredictions,
    review_dir: str | Path,
    *,
    overlays: Overlays | None = None,
    **thresholds: float,
) -> dict[str, Path]:
    """The case review of ``result`` in ``review_dir``: a card per image, least certain first, flagged
    when the called class's probability is below ``min_confidence`` or fewer than ``min_agreement`` of
    the other readings (methods, members) agree (``thresholds``: those two, default
    :data:`~histobreast.report.case_review.MIN_CONFIDENCE` / ``MIN_AGREEMENT``); ``overlays`` put a
    picture beside each card."""
    from histobreast.report.case_review import review_run_info, write_case_review

    return write_case_review(
        result.methods,
        result.method,
        review_dir,
        review_run_info(result.model, result.inputs, result.method),
        readings="members" if result.rule is not None else "other methods",
        overlays=overlays,
        **thresholds,
    )
