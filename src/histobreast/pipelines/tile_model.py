"""What ``slide predict`` needs of a model, torch-free: its classes, scale, field of view, and tiles -> probabilities.

:class:`TileModel` hands tiles held in memory to the model as uncompressed BMP files in a scratch
folder, one batch at a time, as records: every way of predicting records (a model folder's
pipeline in :mod:`histobreast.pipelines.slide_model`, an exported folder through onnxruntime in
:mod:`histobreast.runtime.slides`) then applies unchanged, with the pre-processing and stain
normalisation it was trained with, at the cost of one memory-speed file write per tile.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from histobreast.data.breakhis import DEFAULT_MICRONS_PER_PIXEL
from histobreast.data.breakhis import NATIVE_SIZE as BREAKHIS_SIZE
from histobreast.data.records import ImageRecord
from histobreast.errors import ConfigError
from histobreast.predictions import Predictions

TILE_LABEL = "unlabelled"  # tiles have no label; pipelines give them label index -1
#: Tiles per forward pass, whatever the model config's evaluation batch: System A at the paper's
#: widths runs 16 networks of 224 px per tile, and its config's 10 images per batch took the process
#: from 0.9 to 2.1 GB on 32 BreaKHis-size tiles (2 cores, 2026-12-03); the CPU's throughput does not
#: need the larger batch.
MODEL_BATCH = 2


@dataclass
class TileModel:
    """A model applied to tiles; subclasses say how records are predicted (:meth:`tables`)."""

    path: Path
    classes: list[str]
    microns_per_pixel: float
    rule: str | None = None  # ensembles: the voting rule
    info: dict[str, Any] = field(default_factory=dict)  # the (first member's) model.json

    @property
    def is_ensemble(self) -> bool:
        return self.rule is not None

    def default_field_of_view(self) -> tuple[float, float] | None:
        """The training images' field of view in µm where the model's data implies it (BreaKHis: 700x460 px
        at the magnification's scale), else ``None`` (the caller must give it)."""
        magnification = self.info.get("config", {}).get("data", {}).get("magnification")
        if magnification in DEFAULT_MICRONS_PER_PIXEL:
            mpp = DEFAULT_MICRONS_PER_PIXEL[magnification]
            return (BREAKHIS_SIZE[0] * mpp, BREAKHIS_SIZE[1] * mpp)
        return None

    def tables(self, records: Sequence[ImageRecord]) -> tuple[Predictions, dict[str, Predictions]]:
        """``(headline table, the readings' tables)`` of tile records: a model's methods, an ensemble's members."""
        raise NotImplementedError

    def predict(self, tiles: Sequence[np.ndarray], patient: str) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """``(headline probabilities (N, C), readings name -> (N, C))`` for RGB tile arrays."""
        scratch = Path(tempfile.mkdtemp(prefix="histobreast-tiles-"))
        try:
            records = []
            for index, tile in enumerate(tiles):
                path = scratch / f"tile{index:06d}.bmp"
                if not cv2.imwrite(str(path), np.ascontiguousarray(tile[..., ::-1])):
                    raise OSError(f"cannot write a scratch tile in {scratch}")
                records.append(ImageRecord(path, TILE_LABEL, patient, self.microns_per_pixel, "slide"))
            headline, tables = self.tables(records)
            return headline.probs, tile_readings(tables, [r.image_id for r in records])
        finally:
            shutil.rmtree(scratch, ignore_errors=True)


def training_scale(path: Path, info: dict[str, Any], microns_per_pixel: float | None) -> float:
    """The scale tiles are read at: ``microns_per_pixel`` (``--model-mpp``), else the training images'."""
    if microns_per_pixel is not None and not 0 < microns_per_pixel < float("inf"):
        raise ConfigError(f"--model-mpp: must be a positive number of µm per pixel, got {microns_per_pixel}")
    scale = microns_per_pixel or info.get("microns_per_pixel")
    if not scale:
        raise ConfigError(f"{path}: model.json has no microns_per_pixel; give the training scale with --model-mpp")
    return float(scale)


def tile_readings(tables: dict[str, Predictions], tile_ids: Sequence[str]) -> dict[str, np.ndarray]:
    """Reading name -> ``(N, C)`` probabilities in tile order. A table of one row per tile is one reading;
    a table of one row per window of a tile (System B's ``patch``: ``<tile>/<view>``) is one reading
    per window, named ``<table>:<window>`` (``patch:rot90``), so each of the six views can disagree."""
    out = {}
    for name, table in tables.items():
        if list(table.image_ids) == list(tile_ids):
            out[name] = table.probs
            continue
        row = {image_id: i for i, image_id in enumerate(table.image_ids)}
        windows = dict.fromkeys(image_id.split("/", 1)[-1] for image_id in table.image_ids)
        for window in windows:
            out[f"{name}:{window}"] = table.probs[[row[f"{tile}/{window}"] for tile in tile_ids]]
    return out
