"""End-to-end pipelines: one module per published system, chosen by a config's ``pipeline`` key.

Every pipeline module provides ``train_fold(cfg, train_records, val_records, classes, fold_dir, *,
resume=False) -> Path`` (the fold's model folder) and ``predict_records(model, records, *,
tta_views=(), batch_size=None, device="auto") -> dict[str, Predictions]`` (one table per evaluation
method, the headline method first). :mod:`histobreast.pipelines.experiment` runs them over folds.
"""

from __future__ import annotations

import importlib
from types import ModuleType

from histobreast.errors import ConfigError

#: ``cfg.pipeline`` -> module of this package.
PIPELINES = {
    "zhu2019": "zhu2019",  # System A: hybrid GoogLeNet-BN + SEP (Zhu et al. 2019)
    "liu2022": "liu2022",  # System B: MSMV-PFENet (Liu et al. 2022)
    "spanhol2016": "spanhol2016",  # baseline: patch CNNs (Spanhol et al. 2016)
    "image": "image",  # plain whole-image classifier (e.g. the ResNet18 baseline)
}


def get_pipeline(name: str) -> ModuleType:
    """The pipeline module for ``cfg.pipeline = name``."""
    if name not in PIPELINES:
        raise ConfigError(f"pipeline: unknown pipeline {name!r}; expected one of {', '.join(PIPELINES)}")
    try:
        return importlib.import_module(f"histobreast.pipelines.{PIPELINES[name]}")
    except ModuleNotFoundError as err:
        if err.name == f"histobreast.pipelines.{PIPELINES[name]}":
            raise ConfigError(f"pipeline {name!r} is not available in this installation") from None
        raise
