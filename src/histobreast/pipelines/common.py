"""What every pipeline needs from a config before training: a stain target, a network, views.

- :func:`fit_stain_normalizer`: the stain target of ``preprocess.stain`` (a reference image, a saved
  target, or ``train``: a typical training image).
- :func:`train_network`: build a registered network (seeded) and train it with the one engine.
- :func:`average_over_views`: test-time augmentation, any prediction function averaged over views.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import Dataset

from histobreast.data.imageio import read_rgb
from histobreast.data.records import ImageRecord
from histobreast.engine.trainer import FitResult, Trainer
from histobreast.errors import ConfigError
from histobreast.models import create_model
from histobreast.pipelines.config import ExperimentConfig
from histobreast.preprocess.config import AugmentConfig
from histobreast.preprocess.stain import (
    ReinhardNormalizer,
    StainError,
    StainNormalizer,
    create_normalizer,
    load_normalizer,
)
from histobreast.preprocess.views import apply_view
from histobreast.seeding import derive_seed, seed_everything

log = logging.getLogger(__name__)

# Images the "train" stain target compares before picking the most typical one.
STAIN_CANDIDATES = 16


def check_model_builds(cfg: ExperimentConfig) -> None:
    """Build ``cfg.model`` once before any data is read, so a wrong ``model.kwargs`` key fails first, by name."""
    from histobreast.pipelines.registry import get_pipeline  # the pipeline says which kwargs reach the network

    kwargs = get_pipeline(cfg.pipeline).kwargs_of(cfg)
    try:
        with torch.device("meta"):  # shapes only: no memory, no initialisation cost
            create_model(cfg.model.name, num_classes=cfg.model.num_classes or 2, **kwargs)
    except (TypeError, ValueError) as err:
        raise ConfigError(f"model.kwargs: {cfg.model.name!r} cannot be built with {cfg.model.kwargs} ({err})") from err


def _typical_image(cfg: ExperimentConfig, records: Sequence[ImageRecord]) -> tuple[ImageRecord, np.ndarray]:
    """The training image whose tissue LAB statistics are nearest the median of up to 16 seeded picks."""
    rng = np.random.default_rng(cfg.seed)
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


def fit_stain_normalizer(cfg: ExperimentConfig, train_records: Sequence[ImageRecord]) -> StainNormalizer | None:
    """The fitted normaliser of ``preprocess.stain`` (None for ``method: none``).

    ``target`` is a reference image, a target JSON saved by ``histobreast stain fit`` (its method
    must match), or ``train``: fitted on the most typical of up to 16 seeded training images
    (nearest the median tissue colour statistics), never on a test image.
    """
    stain = cfg.preprocess.stain
    if stain.method == "none":
        return None
    target = stain.target or "train"
    if target == "train":
        record, image = _typical_image(cfg, list(train_records))
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


def augment_config(cfg: ExperimentConfig) -> AugmentConfig | None:
    """``preprocess.augment`` when it changes anything, else None (no augmentation work per item)."""
    return cfg.preprocess.augment if cfg.preprocess.augment.active else None


def eval_batch_size(cfg: ExperimentConfig) -> int:
    """Images per inference batch: ``evaluate.batch_size``, else ``train.eval_batch_size``, else ``train.batch_size``."""
    return cfg.evaluate.batch_size or cfg.train.eval_batch_size or cfg.train.batch_size


def build_network(
    cfg: ExperimentConfig,
    num_classes: int,
    seed_key: int = 0,
    name: str | None = None,
    kwargs: Mapping[str, Any] | None = None,
) -> nn.Module:
    """``create_model`` for the config's network with initial weights seeded by ``(seed, seed_key)``."""
    seed_everything(derive_seed(cfg.seed, seed_key))
    kwargs = dict(cfg.model.kwargs if kwargs is None else kwargs)
    return create_model(name or cfg.model.name, num_classes=num_classes, weights=cfg.model.weights, **kwargs)


def train_network(
    cfg: ExperimentConfig,
    model: nn.Module,
    train_data: Dataset,
    val_data: Any,
    run_dir: Path,
    classes: Sequence[str],
    *,
    resume: bool,
    model_name: str | None = None,
    model_kwargs: Mapping[str, Any] | None = None,
) -> FitResult:
    """Train ``model`` in place with ``cfg.train`` (engine run folder ``run_dir``); returns the fit summary."""
    trainer = Trainer(
        model,
        cfg.train,
        seed=cfg.seed,
        run_dir=run_dir,
        model_name=model_name or cfg.model.name,
        model_kwargs=model_kwargs,
        experiment=cfg,
        metadata={"classes": list(classes)},
    )
    result = trainer.fit(train_data, val_data, resume=resume)
    model.eval()
    return result


def read_view(record: ImageRecord, view: str) -> np.ndarray:
    """The record's image seen in one of the six views."""
    return apply_view(read_rgb(record.path), view)


def view_reader(view: str | None) -> Callable[[ImageRecord], np.ndarray] | None:
    """A picklable image reader for datasets that applies one of the six views (None: the raw image)."""
    if view is None or view == "raw":
        return None
    return functools.partial(read_view, view=view)


def average_over_views(
    predict: Callable[[str | None], Mapping[str, np.ndarray]], views: Sequence[str] = ()
) -> dict[str, np.ndarray]:
    """Test-time augmentation: ``predict(view)`` for every view (or once, raw), probabilities averaged per key."""
    runs = [predict(view) for view in (list(views) or [None])]
    return {key: np.mean([run[key] for run in runs], axis=0) for key in runs[0]}
