"""What a model was trained on, and which new images lie outside it (flagged, never called silently).

A model folder records its training images' range in ``model.json`` ``training_inputs``: pixel
width and height, µm/px, field of view in µm and the least tissue a sampled training image held.
``predict`` flags (column ``outside_training``, and the case review) every image outside that
range widened by :data:`TOLERANCE`: a 10x10 thumbnail, a 2000x8 strip, a blank white field, or
a scale far from the training one get a probability all the same, which means little.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from histobreast.data.imageio import image_size, read_rgb
from histobreast.data.records import ImageRecord, scale_problem
from histobreast.errors import ConfigError

#: An input may be this many times smaller or larger than the training range before it is flagged.
TOLERANCE = 2.0
#: Training images sampled (evenly, in record order) to measure their tissue content.
TISSUE_SAMPLE = 32
#: A pixel shows tissue when one of its channels is below this (slide background is near white).
TISSUE_LEVEL = 200


def tissue_fraction(image: np.ndarray) -> float:
    """Share of an RGB image's pixels that show tissue (read on a grid of at most ~256x256 pixels)."""
    step = max(1, max(image.shape[:2]) // 256)
    return float((image[::step, ::step].min(axis=-1) < TISSUE_LEVEL).mean())


def training_inputs(records: Sequence[ImageRecord]) -> dict[str, Any]:
    """The range of ``records`` (a model's training images) that ``model.json`` keeps."""
    sizes = np.array([image_size(r.path) for r in records], dtype=np.float64)
    scales = np.array([r.microns_per_pixel for r in records], dtype=np.float64)
    fov = sizes * scales[:, None]
    picked = np.unique(np.linspace(0, len(records) - 1, min(TISSUE_SAMPLE, len(records))).astype(int))
    tissue = [tissue_fraction(read_rgb(records[i].path)) for i in picked]
    return {
        "images": len(records),
        "width_px": [int(sizes[:, 0].min()), int(sizes[:, 0].max())],
        "height_px": [int(sizes[:, 1].min()), int(sizes[:, 1].max())],
        "microns_per_pixel": [float(scales.min()), float(scales.max())],
        "field_of_view_um": [float(fov.min()), float(fov.max())],
        "min_tissue_fraction": float(min(tissue)),
    }


def _outside(value: float, bounds: Sequence[float]) -> bool:
    return value < bounds[0] / TOLERANCE or value > bounds[1] * TOLERANCE


def unlike_training(record: ImageRecord, ranges: Mapping[str, Any]) -> list[str]:
    """Why ``record`` lies outside a model's ``training_inputs`` (empty: it does not)."""
    width, height = image_size(record.path)
    mpp = record.microns_per_pixel
    reasons = []
    for name, value, unit in (
        ("width_px", width, "px wide"),
        ("height_px", height, "px high"),
        ("microns_per_pixel", mpp, "µm/px"),
    ):
        if _outside(value, ranges[name]):
            low, high = ranges[name]
            reasons.append(f"{value:g} {unit} (training: {low:g}-{high:g})")
    fov = ranges["field_of_view_um"]
    if _outside(width * mpp, fov) and _outside(height * mpp, fov):
        reasons.append(f"field of view {width * mpp:.0f}x{height * mpp:.0f} µm (training: {fov[0]:.0f}-{fov[1]:.0f})")
    tissue = tissue_fraction(read_rgb(record.path))
    if tissue < ranges["min_tissue_fraction"] / TOLERANCE:
        reasons.append(f"{tissue:.0%} tissue (training: at least {ranges['min_tissue_fraction']:.0%})")
    return reasons


def flag_unlike_training(records: Sequence[ImageRecord], info: Mapping[str, Any]) -> dict[str, list[str]]:
    """``image_id -> reasons`` for the records outside the training range in ``info`` (a model.json);
    nothing when the model folder predates ``training_inputs``."""
    ranges = info.get("training_inputs")
    if not ranges:
        return {}
    flagged = {r.image_id: unlike_training(r, ranges) for r in records}
    return {image_id: reasons for image_id, reasons in flagged.items() if reasons}


def prediction_scale(
    info: Mapping[str, Any], microns_per_pixel: float | None, model: object, *, physical_pipeline: bool | None = None
) -> tuple[float, str]:
    """``(µm/px of the new images, a note for the user or "")`` from ``--mpp`` and model.json.

    An explicit scale must be plausible (see :func:`~histobreast.data.records.scale_problem`); none
    means the training images' scale. A model that resizes whole images does not use the scale
    (only its training-range check does), and the note says so. ``physical_pipeline`` says whether
    the model's pipeline works in µm (None: ask the pipeline registry, which imports torch).
    """
    if microns_per_pixel is not None:
        problem = scale_problem(microns_per_pixel)
        if problem:
            raise ConfigError(f"--mpp: {problem}")
    if physical_pipeline is None:
        from histobreast.pipelines.registry import get_pipeline

        physical_pipeline = get_pipeline(info["pipeline"]).physical_scale
    physical = physical_pipeline or info["config"].get("preprocess", {}).get("microns_per_pixel") is not None
    scale = info.get("microns_per_pixel") if microns_per_pixel is None else microns_per_pixel
    if scale is None:
        if physical:  # KREM is physical
            raise ConfigError(f"{model}: this model works at a physical scale; pass --mpp for the images")
        return 1.0, ""
    note = (
        ""
        if physical or microns_per_pixel is None
        else f"note: {info['pipeline']} resizes whole images, so --microns-per-pixel only enters the training-range check"
    )
    return float(scale), note
