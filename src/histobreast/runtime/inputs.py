"""The exported model's own pre-processing in numpy: records -> the arrays its ONNX networks take.

The same steps as the torch datasets (:mod:`histobreast.datasets.images`,
:mod:`~histobreast.datasets.key_regions`, :mod:`~histobreast.datasets.spanhol_patches`), from the
same torch-free functions: read (one of the six views for TTA), stain-normalise at full resolution
with the model's fitted target, then resize or cut System A's grid
(:func:`~histobreast.preprocess.patches.hybrid_inputs`), rescale to the training µm/px, cut System
B's six views x KREM crops (:mod:`histobreast.preprocess.key_region_samples`) or Spanhol 2016's
sliding windows (:func:`~histobreast.preprocess.patches.sliding_positions`), and finally
:func:`~histobreast.preprocess.model_arrays.model_array`.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from histobreast.data.imageio import read_rgb
from histobreast.data.records import ImageRecord
from histobreast.errors import DatasetError
from histobreast.preprocess.cache import file_fingerprint
from histobreast.preprocess.key_region_samples import region_crops, view_key_regions
from histobreast.preprocess.krem import KeyRegion, KremParams
from histobreast.preprocess.model_arrays import model_array
from histobreast.preprocess.patches import (
    crop_patches,
    hybrid_inputs,
    load_scaled,
    rescale_rgb,
    resize_rgb,
    sliding_positions,
)
from histobreast.preprocess.stain import StainNormalizer, fitted_stain
from histobreast.preprocess.views import read_view
from histobreast.runtime.folder import EXPORT_JSON, ExportedModel

#: Images per onnxruntime call unless told (System A: each brings its grid of patches too).
DEFAULT_BATCH = 8


def model_stain(model: ExportedModel) -> StainNormalizer | None:
    """The stain normaliser the exported model was trained with (None: no normalisation)."""
    return fitted_stain(model.info, str(model.path / EXPORT_JSON))


def read_image(record: ImageRecord, view: str | None, stain: StainNormalizer | None) -> np.ndarray:
    """The record's uint8 RGB image in ``view`` (None: raw), stain-normalised when ``stain`` is set."""
    image = read_rgb(record.path) if view in (None, "raw") else read_view(record, view)
    return stain.normalize(image).image if stain is not None else image


def _batches(records: Sequence[ImageRecord], size: int) -> Iterator[Sequence[ImageRecord]]:
    for start in range(0, len(records), size):
        yield records[start : start + size]


def hybrid_batches(
    model: ExportedModel, records: Sequence[ImageRecord], view: str | None, batch_size: int | None = None
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """System A's inputs by batch: global images ``(B, 3, S, S)`` and patches ``(B, P, 3, s, s)``."""
    pre: dict[str, Any] = model.info["preprocess"]
    grid, patch = tuple(pre["patches"]["grid"]), int(pre["patches"]["size"])
    stain = model_stain(model)
    for batch in _batches(records, batch_size or DEFAULT_BATCH):
        pairs = [hybrid_inputs(read_image(r, view, stain), int(pre["input_size"]), grid, patch) for r in batch]  # type: ignore[arg-type]
        yield model_array(np.stack([g for g, _ in pairs])), model_array(np.stack([p for _, p in pairs]))


def image_batches(
    model: ExportedModel, records: Sequence[ImageRecord], view: str | None, batch_size: int | None = None
) -> Iterator[np.ndarray]:
    """A plain classifier's inputs by batch ``(B, 3, H, W)``: images resized to ``input_size``, or
    brought to the training µm/px whole (then one per batch, as their sizes differ)."""
    pre: dict[str, Any] = model.info["preprocess"]
    size, scale = int(pre["input_size"]), pre.get("microns_per_pixel")
    stain = model_stain(model)
    if scale is not None:
        for record in records:
            image = rescale_rgb(read_image(record, view, stain), record.microns_per_pixel / scale)
            yield model_array(image[None])
        return
    for batch in _batches(records, batch_size or DEFAULT_BATCH):
        yield model_array(np.stack([resize_rgb(read_image(r, view, stain), (size, size)) for r in batch]))


def key_region_params(model: ExportedModel) -> KremParams:
    """The KREM settings System B was trained with (export.json's ``inputs.krem``)."""
    return KremParams(**model.inputs["krem"])


def image_key_regions(
    model: ExportedModel,
    record: ImageRecord,
    views: Sequence[str],
    params: KremParams,
    stain: StainNormalizer | None,
) -> tuple[list[list[KeyRegion]], np.ndarray, tuple[int, int]]:
    """One image's System B samples: its key regions per view, the uint8 crop stacks of every sample
    ``(n, S, s, s, 3)`` (view-major, then region rank) and its ``(width, height)``."""
    inputs = model.inputs
    image = read_image(record, None, stain)
    fingerprint = file_fingerprint(record.path) if inputs["selection"] == "random" else ""
    regions = [
        view_key_regions(
            image,
            view,
            record.microns_per_pixel,
            params,
            int(inputs["top_k"]),
            inputs["selection"],
            seed=int(inputs["seed"]),
            fingerprint=fingerprint,
        )
        for view in views
    ]
    crops = [
        region_crops(image, view, region, inputs["levels"], params.output_size)
        for view, view_regions in zip(views, regions)
        for region in view_regions
    ]
    return regions, np.stack(crops), (image.shape[1], image.shape[0])


def spanhol_patches(model: ExportedModel, record: ImageRecord, stain: StainNormalizer | None) -> Iterator[np.ndarray]:
    """A Spanhol 2016 member's sliding-window patches of one (scaled) image as model-input batches
    ``(n, 3, s, s)`` of at most the member's ``eval_batch_size`` (an image smaller than a patch names it)."""
    inputs = model.inputs
    size, batch = int(inputs["patch_size"]), int(inputs["eval_batch_size"])
    image = load_scaled(record, float(inputs["scale"]), stain)
    try:
        positions = sliding_positions(image.shape[0], image.shape[1], size, float(inputs["overlap"]))
    except DatasetError as err:
        raise DatasetError(f"{record.path}: {err}") from None
    for start in range(0, len(positions), batch):
        yield model_array(crop_patches(image, positions[start : start + batch], size))
