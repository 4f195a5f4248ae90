"""Any model folder or ensemble applied to slide tiles held in memory, through its own pipeline.

Tiles are handed to the model's pipeline (``predict_records``) as uncompressed BMP files in a
scratch folder, one batch at a time: every pipeline (System A's hybrid and its methods, System B's
views and KREM, the baselines) and bagged ensembles apply unchanged, with the pre-processing and
stain normalisation they were trained with, at the cost of one memory-speed file write per tile.
"""

from __future__ import annotations

import dataclasses
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
from histobreast.pipelines.bagging import combine_predictions, is_ensemble_folder, predict_member, read_ensemble_folder
from histobreast.pipelines.package import LoadedModel, load_model_folder
from histobreast.predictions import Predictions

TILE_LABEL = "unlabelled"  # tiles have no label; pipelines give them label index -1
#: Tiles per forward pass, whatever the model config's evaluation batch: System A at the paper's
#: widths runs 16 networks of 224 px per tile, and its config's 10 images per batch took the process
#: from 0.9 to 2.1 GB on 32 BreaKHis-size tiles (2 cores, 2026-12-03); the CPU's throughput does not
#: need the larger batch.
MODEL_BATCH = 2


@dataclass
class TileModel:
    """A model folder or an ensemble, loaded once; ``readings`` are its methods (one model) or members."""

    path: Path
    classes: list[str]
    microns_per_pixel: float
    members: dict[str, LoadedModel]
    rule: str | None = None  # ensembles: the voting rule
    info: dict[str, Any] = field(default_factory=dict)

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
            if self.is_ensemble:
                tables = {name: predict_member(m, records, batch_size=MODEL_BATCH) for name, m in self.members.items()}
                headline: Predictions = combine_predictions(tables, self.rule)  # type: ignore[arg-type]
            else:
                (loaded,) = self.members.values()
                from histobreast.pipelines import get_pipeline

                tables = get_pipeline(loaded.pipeline).predict_records(loaded, records, batch_size=MODEL_BATCH)
                headline = next(iter(tables.values()))
            return headline.probs, tile_readings(tables, [r.image_id for r in records])
        finally:
            shutil.rmtree(scratch, ignore_errors=True)


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


def _in_process_loading(loaded: LoadedModel) -> LoadedModel:
    """``loaded`` with its pipeline's DataLoader workers off: tiles arrive decoded in memory, chunk by
    chunk, and workers forked per chunk (the paper configs ask for 8) would each prefetch batches."""
    train = dataclasses.replace(loaded.cfg.train, num_workers=0)
    return dataclasses.replace(loaded, cfg=dataclasses.replace(loaded.cfg, train=train))


def load_tile_model(path: str | Path, device: str = "cpu", microns_per_pixel: float | None = None) -> TileModel:
    """Load a model folder or an ensemble folder; ``microns_per_pixel`` overrides the training images' scale."""
    path = Path(path)
    if is_ensemble_folder(path):
        folder = read_ensemble_folder(path)
        members = {name: load_model_folder(m, device) for name, m in zip(folder.member_names(), folder.members)}
        rule: str | None = folder.rule
    else:
        members = {"model": load_model_folder(path, device)}
        rule = None
    members = {name: _in_process_loading(m) for name, m in members.items()}
    first = next(iter(members.values()))
    for name, member in members.items():
        if member.classes != first.classes:
            raise ConfigError(f"{path}: ensemble member {name!r} predicts other classes than the first")
    scale = microns_per_pixel or first.info.get("microns_per_pixel")
    if not scale:
        raise ConfigError(f"{path}: model.json has no microns_per_pixel; give the training scale with --model-mpp")
    return TileModel(path, list(first.classes), float(scale), members, rule, first.info)
