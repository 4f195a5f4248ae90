"""Pipelines registered by name, as models are: ``cfg.pipeline`` -> a typed :class:`Pipeline`.

Each pipeline module builds one :class:`Pipeline` and registers it with :func:`register_pipeline`
when imported; :func:`get_pipeline` imports the built-in modules on first use (so a config of one
system does not load the others). Callers ask the object what it can do (its methods, its
networks, whether it works at a physical scale) instead of testing its name.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from histobreast.errors import ConfigError

if TYPE_CHECKING:
    from histobreast.data.records import ImageRecord
    from histobreast.pipelines.config import ExperimentConfig
    from histobreast.predictions import Predictions

#: Built-in pipelines: ``cfg.pipeline`` -> the module that registers it.
BUILT_IN = {
    "zhu2019": "histobreast.pipelines.zhu2019",  # System A: hybrid GoogLeNet-BN + SEP (Zhu et al. 2019)
    "liu2022": "histobreast.pipelines.liu2022",  # System B: MSMV-PFENet (Liu et al. 2022)
    "spanhol2016": "histobreast.pipelines.spanhol2016",  # baseline: patch CNNs (Spanhol et al. 2016)
    "image": "histobreast.pipelines.image",  # plain whole-image classifier (e.g. the ResNet18 baseline)
}


class TrainFold(Protocol):
    """Train one fold; returns the fold's model (or ensemble) folder, ``fold_dir/model``."""

    def __call__(
        self,
        cfg: ExperimentConfig,
        train_records: Sequence[ImageRecord],
        val_records: Sequence[ImageRecord],
        classes: Sequence[str],
        fold_dir: Path,
        *,
        resume: bool = False,
    ) -> Path: ...


class PredictRecords(Protocol):
    """One :class:`~histobreast.predictions.Predictions` per evaluation method, the headline first."""

    def __call__(
        self,
        model: Any,
        records: Sequence[ImageRecord],
        *,
        tta_views: Sequence[str] = (),
        batch_size: int | None = None,
        device: str = "auto",
    ) -> dict[str, Predictions]: ...


@dataclass(frozen=True)
class Pipeline:
    """One end-to-end system: how it trains a fold, how it predicts records, what it reads."""

    name: str
    summary: str  # one line: the system and its paper
    methods: tuple[str, ...]  # evaluation methods (readings) of a default config, headline first
    train_fold: TrainFold
    predict_records: PredictRecords
    networks: tuple[str, ...] = ()  # registered networks only this pipeline can apply
    model_keys: tuple[str, ...] = ()  # model.kwargs the pipeline reads itself (not the network)
    physical_scale: bool = False  # its inputs are defined in µm (prediction needs the images' scale)
    network_kwargs: Callable[[ExperimentConfig], dict[str, Any]] | None = None  # None: model.kwargs as given
    config_problems: Callable[[ExperimentConfig], Iterator[tuple[str, str]]] | None = None  # its own checks

    @property
    def headline(self) -> str:
        """The method the reports lead with."""
        return self.methods[0]

    def kwargs_of(self, cfg: ExperimentConfig) -> dict[str, Any]:
        """The ``create_model`` kwargs of ``cfg.model`` that reach the network."""
        return self.network_kwargs(cfg) if self.network_kwargs is not None else dict(cfg.model.kwargs)


_REGISTRY: dict[str, Pipeline] = {}


def register_pipeline(pipeline: Pipeline) -> Pipeline:
    """Add ``pipeline`` under its name (a second pipeline of the same name is an error); returns it."""
    if _REGISTRY.get(pipeline.name, pipeline) is not pipeline:
        raise ValueError(f"pipeline {pipeline.name!r} is already registered")
    _REGISTRY[pipeline.name] = pipeline
    return pipeline


def pipeline_names() -> list[str]:
    """Every pipeline ``cfg.pipeline`` may name: the built-in ones, then any registered later."""
    return [*BUILT_IN, *(name for name in _REGISTRY if name not in BUILT_IN)]


def get_pipeline(name: str) -> Pipeline:
    """The pipeline ``cfg.pipeline = name`` runs; an unknown name is a one-line :class:`ConfigError`."""
    if name not in _REGISTRY and name in BUILT_IN:
        try:
            importlib.import_module(BUILT_IN[name])
        except ModuleNotFoundError as err:
            if err.name == BUILT_IN[name]:
                raise ConfigError(f"pipeline {name!r} is not available in this installation") from None
            raise
    if name not in _REGISTRY:
        raise ConfigError(f"pipeline: unknown pipeline {name!r}; expected one of {', '.join(pipeline_names())}")
    return _REGISTRY[name]


def exclusive_networks() -> dict[str, str]:
    """``network name -> pipeline`` for the networks only one pipeline can apply (every pipeline loaded)."""
    return {network: name for name in pipeline_names() for network in get_pipeline(name).networks}
