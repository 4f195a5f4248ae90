"""The stain target of ``preprocess.stain``: a reference image, a saved target, or a typical training image.

Paper A normalises every image to one reference; which one is a config choice, fitted once per fold
on training images only (never a test image), so the target is part of the fold's model folder.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from histobreast.data.imageio import read_rgb
from histobreast.data.records import ImageRecord
from histobreast.errors import ConfigError
from histobreast.preprocess.config import StainConfig
from histobreast.preprocess.stain import (
    ReinhardNormalizer,
    StainError,
    StainNormalizer,
    create_normalizer,
    load_normalizer,
)

log = logging.getLogger(__name__)

# Images the "train" stain target compares before picking the most typical one.
STAIN_CANDIDATES = 16


def _typical_image(records: Sequence[ImageRecord], seed: int) -> tuple[ImageRecord, np.ndarray]:
    """The training image whose tissue LAB statistics are nearest the median of up to 16 seeded picks."""
    rng = np.random.default_rng(seed)
    picks = [records[i] for i in sorted(rng.choice(len(records), min(STAIN_CANDIDATES, len(records)), replace=False))]
    stats, images = [], []
    for record in picks:
        image = read_rgb(record.path)
        try:
            fitted = ReinhardNormalizer().fit(image)
        except StainError:
            continue
        stats.append(np.concatenate([fitted.target_mean, fitted.target_std]))  # type: ignore[list-item]
        images.append((record, image))
    if not images:
        raise StainError(f"preprocess.stain.target 'train': none of {len(picks)} training images has enough tissue")
    stats_array = np.array(stats)
    scale = stats_array.std(axis=0) + 1e-6
    distance = np.abs((stats_array - np.median(stats_array, axis=0)) / scale).sum(axis=1)
    return images[int(np.argmin(distance))]


def fit_stain_normalizer(
    stain: StainConfig, train_records: Sequence[ImageRecord], seed: int = 0
) -> StainNormalizer | None:
    """The fitted normaliser of ``preprocess.stain`` (None for ``method: none``).

    ``target`` is a reference image, a target JSON saved by ``histobreast stain fit`` (its method
    must match), or ``train``: fitted on the most typical of up to 16 training images drawn with
    ``seed`` (nearest the median tissue colour statistics), never on a test image.
    """
    if stain.method == "none":
        return None
    target = stain.target or "train"
    if target == "train":
        record, image = _typical_image(list(train_records), seed)
        log.info("stain target: %s fitted on training image %s", stain.method, record.path)
        return create_normalizer(stain.method, stain.pixels).fit(image)
    path = Path(target)
    if not path.is_file():
        raise ConfigError(f"preprocess.stain.target: {path} not found")
    if path.suffix.lower() == ".json":
        normalizer = load_normalizer(path)
        if normalizer.method != stain.method:
            raise ConfigError(
                f"preprocess.stain.target: {path} holds a {normalizer.method} target, "
                f"but preprocess.stain.method is {stain.method}"
            )
        if isinstance(normalizer, ReinhardNormalizer) and normalizer.pixels != stain.pixels:
            raise ConfigError(
                f"preprocess.stain.target: {path} was fitted on {normalizer.pixels} pixels, "
                f"but preprocess.stain.pixels is {stain.pixels}"
            )
        return normalizer
    try:
        return create_normalizer(stain.method, stain.pixels).fit(read_rgb(path))
    except StainError as err:
        raise StainError(f"preprocess.stain.target {path}: {err}") from None
