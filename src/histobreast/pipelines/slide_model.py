"""Any model folder or ensemble applied to slide tiles held in memory, through its own pipeline.

:class:`LoadedTileModel` is :class:`~histobreast.pipelines.tile_model.TileModel` for model and
ensemble folders (PyTorch): every pipeline (System A's hybrid and its methods, System B's views and
KREM, the baselines) and bagged ensembles apply unchanged. Exported folders (ONNX) have their own,
torch-free one: :mod:`histobreast.runtime.slides`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from histobreast.data.records import ImageRecord
from histobreast.errors import ConfigError
from histobreast.pipelines.bagging import combine_predictions, is_ensemble_folder, predict_member, read_ensemble_folder
from histobreast.pipelines.package import LoadedModel, load_model_folder
from histobreast.pipelines.tile_model import MODEL_BATCH, TileModel, training_scale
from histobreast.predictions import Predictions


@dataclass
class LoadedTileModel(TileModel):
    """A model folder or an ensemble, loaded once; ``members`` are its one model or its members."""

    members: dict[str, LoadedModel] = field(default_factory=dict)

    def tables(self, records: Sequence[ImageRecord]) -> tuple[Predictions, dict[str, Predictions]]:
        if self.is_ensemble:
            tables = {name: predict_member(m, records, batch_size=MODEL_BATCH) for name, m in self.members.items()}
            return combine_predictions(tables, self.rule), tables  # type: ignore[arg-type]
        (loaded,) = self.members.values()
        from histobreast.pipelines import get_pipeline

        tables = get_pipeline(loaded.pipeline).predict_records(loaded, records, batch_size=MODEL_BATCH)
        return next(iter(tables.values())), tables


def _in_process_loading(loaded: LoadedModel) -> LoadedModel:
    """``loaded`` with its pipeline's DataLoader workers off: tiles arrive decoded in memory, chunk by
    chunk, and workers forked per chunk (the paper configs ask for 8) would each prefetch batches."""
    train = dataclasses.replace(loaded.cfg.train, num_workers=0)
    return dataclasses.replace(loaded, cfg=dataclasses.replace(loaded.cfg, train=train))


def load_tile_model(path: str | Path, device: str = "cpu", microns_per_pixel: float | None = None) -> LoadedTileModel:
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
    scale = training_scale(path, first.info, microns_per_pixel)
    return LoadedTileModel(path, list(first.classes), scale, rule, first.info, members)
