"""End-to-end pipelines: one module per published system, chosen by a config's ``pipeline`` key.

Every pipeline module registers a :class:`~histobreast.pipelines.registry.Pipeline`: its
``train_fold(cfg, train_records, val_records, classes, fold_dir, *, resume=False) -> Path`` (the
fold's model folder) and ``predict_records(model, records, *, tta_views=(), batch_size=None,
device="auto") -> dict[str, Predictions]`` (one table per evaluation method, the headline method
first). :mod:`histobreast.pipelines.experiment` runs them over folds.
"""

from __future__ import annotations

from histobreast.pipelines.registry import Pipeline, get_pipeline, pipeline_names, register_pipeline

__all__ = ["Pipeline", "get_pipeline", "pipeline_names", "register_pipeline"]
