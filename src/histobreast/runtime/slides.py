"""``slide predict`` on an exported folder: slide tiles through onnxruntime, no torch.

:class:`ExportedTileModel` is the runtime's :class:`~histobreast.pipelines.tile_model.TileModel`:
each chunk of tiles goes through :func:`~histobreast.runtime.predict.predict_exported`, so any kind
of model the runtime applies (and its ensembles, FP32 or INT8) predicts slide tiles with the same
pre-processing, at the training µm/px, as ``histobreast predict EXPORTED`` predicts images; the
slide reading, tiling, resuming and outputs are :mod:`histobreast.pipelines.slide_predict`'s.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from histobreast.data.records import ImageRecord
from histobreast.pipelines.tile_model import MODEL_BATCH, TileModel, training_scale
from histobreast.predictions import Predictions
from histobreast.runtime.folder import ExportedEnsemble, ExportedModel, read_exported
from histobreast.runtime.predict import headline_info, open_sessions, predict_exported


@dataclass
class ExportedTileModel(TileModel):
    """An exported model or ensemble folder, read and checked once; ``threads`` caps onnxruntime's."""

    exported: ExportedModel | ExportedEnsemble | None = None
    threads: int | None = None
    sessions: dict[str, Any] = field(default_factory=dict)  # opened on the first chunk, then reused

    def tables(self, records: Sequence[ImageRecord]) -> tuple[Predictions, dict[str, Predictions]]:
        if not self.sessions:
            self.sessions = open_sessions(self.exported, self.threads)  # type: ignore[arg-type]
        results = predict_exported(self.exported, records, batch_size=MODEL_BATCH, sessions=self.sessions)  # type: ignore[arg-type]
        headline = next(iter(results))
        # an ensemble's vote is the headline and its members the readings, as in the PyTorch path
        readings = {k: v for k, v in results.items() if not (self.is_ensemble and k == headline)}
        return results[headline], readings


def load_exported_tile_model(
    path: str | Path, microns_per_pixel: float | None = None, threads: int | None = None
) -> ExportedTileModel:
    """Read an exported folder (every network present and matching its checksum) for ``slide predict``;
    ``microns_per_pixel`` overrides the training images' scale."""
    path = Path(path)
    exported = read_exported(path)
    info = headline_info(exported)
    rule = exported.rule if isinstance(exported, ExportedEnsemble) else None
    scale = training_scale(path, info, microns_per_pixel)
    return ExportedTileModel(path, list(info["classes"]), scale, rule, info, exported, threads)
