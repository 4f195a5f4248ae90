"""Building and training a pipeline's networks: one seed rule, one way to train, one eval batch size.

Every pipeline builds its networks with :func:`build_network` (or seeds them with
:func:`network_seed`) and trains each with :func:`train_network`, the one call of the engine's
:class:`~histobreast.engine.Trainer`; :func:`check_model_builds` fails on a wrong ``model.kwargs``
before any data is read.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import Dataset

from histobreast.engine.config import TrainConfig
from histobreast.engine.trainer import FitResult, StepCallback, Trainer, ValidateFn
from histobreast.errors import ConfigError
from histobreast.models import create_model
from histobreast.pipelines.config import ExperimentConfig
from histobreast.pipelines.registry import get_pipeline
from histobreast.seeding import derive_seed, seed_everything


def network_seed(seed: int, key: int | None = None) -> int:
    """The seed of a network's initial weights: ``derive_seed(seed, key)`` for the ``key``-th of several
    networks, ``derive_seed(seed)`` for ``key`` None (System B, whose folds all start from the same
    encoders, so that frozen encoders' cached features are shared)."""
    return derive_seed(seed) if key is None else derive_seed(seed, key)


def eval_batch_size(cfg: ExperimentConfig) -> int:
    """Images per inference batch: ``evaluate.batch_size``, else the engine's rule for ``train``
    (``train.eval_batch_size``, else twice the training micro-batch)."""
    return cfg.evaluate.batch_size or cfg.train.eval_batch()


def check_model_builds(cfg: ExperimentConfig) -> None:
    """Build ``cfg.model`` once before any data is read, so a wrong ``model.kwargs`` key fails first, by name."""
    kwargs = get_pipeline(cfg.pipeline).kwargs_of(cfg)  # the pipeline says which kwargs reach the network
    try:
        with torch.device("meta"):  # shapes only: no memory, no initialisation cost
            create_model(cfg.model.name, num_classes=cfg.model.num_classes or 2, **kwargs)
    except (TypeError, ValueError) as err:
        raise ConfigError(f"model.kwargs: {cfg.model.name!r} cannot be built with {cfg.model.kwargs} ({err})") from err


def build_network(
    cfg: ExperimentConfig,
    num_classes: int,
    seed_key: int | None = 0,
    name: str | None = None,
    kwargs: Mapping[str, Any] | None = None,
) -> nn.Module:
    """``create_model`` for the config's network (or ``name``), initial weights seeded by
    :func:`network_seed` of ``(cfg.seed, seed_key)``."""
    seed_everything(network_seed(cfg.seed, seed_key))
    kwargs = dict(cfg.model.kwargs if kwargs is None else kwargs)
    return create_model(name or cfg.model.name, num_classes=num_classes, weights=cfg.model.weights, **kwargs)


def train_network(
    cfg: ExperimentConfig,
    model: nn.Module,
    train_data: Dataset,
    val_data: Any,
    run_dir: Path,
    classes: Sequence[str] | None = None,
    *,
    resume: bool,
    model_name: str | None = None,
    model_kwargs: Mapping[str, Any] | None = None,
    seed: int | None = None,
    settings: TrainConfig | None = None,
    validate: ValidateFn | None = None,
    callbacks: Sequence[StepCallback] = (),
    metadata: Mapping[str, Any] | None = None,
) -> FitResult:
    """Train ``model`` in place (engine run folder ``run_dir``) and leave it in eval mode; returns the fit.

    ``settings`` replace ``cfg.train`` (a pre-training or retraining schedule), ``seed`` the run's seed
    (default ``cfg.seed``); ``model_name`` / ``model_kwargs`` let a checkpoint rebuild the network;
    ``classes`` and ``metadata`` go into the run's checkpoints.
    """
    trainer = Trainer(
        model,
        settings or cfg.train,
        seed=cfg.seed if seed is None else seed,
        run_dir=run_dir,
        validate=validate,
        callbacks=callbacks,
        model_name=model_name,
        model_kwargs=model_kwargs,
        experiment=cfg,
        metadata={**({"classes": list(classes)} if classes is not None else {}), **(metadata or {})},
    )
    result = trainer.fit(train_data, val_data, resume=resume)
    model.eval()
    return result
