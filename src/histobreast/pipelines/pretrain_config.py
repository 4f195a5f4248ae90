"""The config of ``histobreast pretrain``: which images, which network and method, the tiles, the schedule.

A pre-training YAML has the sections ``data`` (:class:`~histobreast.data.config.DataConfig`: with
``data.fold`` set, only that fold's training images are used), ``pretrain`` (:class:`SSLConfig`),
``probe`` (:class:`ProbeConfig`) and ``train`` (the engine's :class:`~histobreast.engine.config.TrainConfig`),
loaded with :func:`load_pretrain_config` (``extends``, ``--set`` overrides, misspelt keys refused).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from histobreast.config import Problems, load_dataclass
from histobreast.data.config import DataConfig
from histobreast.datasets.ssl_tiles import HEAugmentConfig
from histobreast.engine.config import TrainConfig
from histobreast.models.ssl import METHODS, Method, trunk_names


@dataclass
class SSLConfig:
    """What is pre-trained and how: the network, the method and its heads, the tiles.

    ``tile_microns`` µm on a side at ``tile_size`` px (96 px of 0.84 µm/px by default, the scale of
    our BACH copies); ``tiles_per_image`` random tiles per image and epoch. ``temperature``: NT-Xent's
    (SimCLR), or DINO's student temperature; ``momentum``: BYOL's target-network and DINO's teacher
    momentum, cosine from the first to the second value over the run (Grill et al. 2020 and Caron et
    al. 2021 use 0.996 -> 1 over long runs; short runs need a faster target). DINO only:
    ``teacher_temperature`` (0.04, Caron et al.'s), and ``local_views`` crops of ``local_size`` px
    covering ``local_crop_scale`` of the tile's area beside the two global crops (multi-crop).
    ``source``: what ``data.root`` holds, ``auto`` (slides by their suffix, else images), ``images`` or
    ``slides`` (see :mod:`~histobreast.pipelines.pretrain_slides`); ``min_tissue``: the share of a
    slide tile the tissue mask must cover.
    """

    method: Method = "simclr"
    encoder: str = "resnet18"
    encoder_kwargs: dict[str, Any] = field(default_factory=dict)
    tile_microns: float = 80.64
    tile_size: int = 96
    tiles_per_image: int = 8
    temperature: float = 0.1
    hidden_dim: int = 512
    output_dim: int = 128
    momentum: tuple[float, float] = (0.99, 1.0)
    teacher_temperature: float = 0.04
    local_views: int = 0
    local_size: int = 48
    local_crop_scale: tuple[float, float] = (0.05, 0.4)
    source: Literal["auto", "images", "slides"] = "auto"
    min_tissue: float = 0.5
    augment: HEAugmentConfig = field(default_factory=HEAugmentConfig)

    def problems(self) -> Problems:
        if self.method not in METHODS:
            yield "method", f"must be one of {', '.join(METHODS)}, got {self.method!r}"
        if self.encoder not in trunk_names():
            yield "encoder", f"must be one of {', '.join(trunk_names())}, got {self.encoder!r}"
        if not self.tile_microns > 0:
            yield "tile_microns", f"must be > 0, got {self.tile_microns}"
        for name in ("tile_size", "tiles_per_image", "hidden_dim", "output_dim"):
            if getattr(self, name) < 1:
                yield name, f"must be >= 1, got {getattr(self, name)}"
        for name in ("temperature", "teacher_temperature"):
            if not getattr(self, name) > 0:
                yield name, f"must be > 0, got {getattr(self, name)}"
        if self.source not in ("auto", "images", "slides"):
            yield "source", f"must be auto, images or slides, got {self.source!r}"
        if not 0.0 < self.min_tissue <= 1.0:
            yield "min_tissue", f"must be in (0, 1], got {self.min_tissue}"
        if self.local_views < 0:
            yield "local_views", f"must be >= 0, got {self.local_views}"
        if self.local_views and self.method != "dino":
            yield "local_views", f"local crops are DINO's multi-crop; method {self.method!r} takes two views (set 0)"
        if self.local_views and not 1 <= self.local_size <= self.tile_size:
            yield "local_size", f"must be between 1 and tile_size ({self.tile_size}), got {self.local_size}"
        if not 0.0 < self.local_crop_scale[0] <= self.local_crop_scale[1] <= 1.0:
            yield "local_crop_scale", f"must be 0 < low <= high <= 1, got {list(self.local_crop_scale)}"
        if not 0.0 <= self.momentum[0] <= self.momentum[1] <= 1.0:
            yield "momentum", f"must be 0 <= start <= end <= 1, got {list(self.momentum)}"


@dataclass
class ProbeConfig:
    """The frozen-feature check: k-NN (cosine, ``knn_k`` neighbours) and logistic regression (``C``).

    An image's feature is the mean of the encoder's pooled vectors over its non-overlapping tiles
    at the pre-training scale (at most ``max_tiles`` per image, evenly spread).
    """

    knn_k: int = 10
    logistic_c: float = 1.0
    max_tiles: int = 48
    batch_size: int = 32

    def problems(self) -> Problems:
        for name in ("knn_k", "max_tiles", "batch_size"):
            if getattr(self, name) < 1:
                yield name, f"must be >= 1, got {getattr(self, name)}"
        if not self.logistic_c > 0:
            yield "logistic_c", f"must be > 0, got {self.logistic_c}"


@dataclass
class PretrainRunConfig:
    """One pre-training run: every section of a ``configs/pretrain/*.yaml`` file, validated."""

    name: str
    seed: int = 0
    data: DataConfig = field(default_factory=DataConfig)
    pretrain: SSLConfig = field(default_factory=SSLConfig)
    probe: ProbeConfig = field(default_factory=ProbeConfig)
    train: TrainConfig = field(default_factory=lambda: TrainConfig(iterations=100, optimizer="adamw", lr=1e-3))

    def problems(self) -> Problems:
        if not self.name:
            yield "name", "must not be empty"
        if self.seed < 0:
            yield "seed", f"must be >= 0, got {self.seed}"


def load_pretrain_config(path: str | Path, overrides: Sequence[str] = ()) -> PretrainRunConfig:
    """Read a pre-training YAML (following ``extends``), apply ``key=value`` overrides, validate."""
    return load_dataclass(PretrainRunConfig, path, overrides, defaults={"name": Path(path).stem})
