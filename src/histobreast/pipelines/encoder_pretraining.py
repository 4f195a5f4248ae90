"""System B's per-scale encoder pre-training (``model.encoder_pretraining``), the from-scratch stand-in
for the paper's ImageNet start: each encoder of MSMV-PFENet trained alone as a classifier of its scale's crops.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from torch.utils.data import Dataset

from histobreast.config import build_dataclass, config_to_dict
from histobreast.engine.config import TrainConfig
from histobreast.models.msmv import MSMVPFENet, ScaleClassifier
from histobreast.pipelines.config import ExperimentConfig
from histobreast.pipelines.network import network_seed, train_network


def encoder_pretraining_config(cfg: ExperimentConfig) -> TrainConfig | None:
    """The ``train`` section with ``model.encoder_pretraining``'s overrides (None: no pre-training).

    Pre-training has no validation (the fold's held-out fifth is kept for the main stage), so
    evaluation, best-model selection and early stopping are switched off whatever ``train`` says.
    """
    overrides = cfg.model.encoder_pretraining
    if overrides is None:
        return None
    merged = {
        **config_to_dict(cfg.train),
        **overrides,
        "eval_every": None,
        "early_stopping": None,
        "restore_best": False,
    }
    for length, other in (("iterations", "epochs"), ("epochs", "iterations")):
        if overrides.get(length) is not None and other not in overrides:
            merged[other] = None  # a length given here replaces the train section's
    return build_dataclass(TrainConfig, merged, cfg.name, "model.encoder_pretraining")


def pretrain_encoders(
    cfg: ExperimentConfig,
    model: MSMVPFENet,
    train: Dataset,
    classes: Sequence[str],
    run_dir: Path,
    *,
    resume: bool = False,
) -> None:
    """Train each encoder of ``model`` in place as a classifier of its own scale's crops.

    Without ImageNet weights, this stands in for the paper's pre-trained start: encoder ``i`` plus
    a linear head learns the fold's classes from the ``i``-th crop of every training sample (run
    folder ``run_dir/level<L>``); the heads are then dropped. Each scale's run is seeded
    ``network_seed(cfg.seed, i)`` and resumable.
    """
    settings = encoder_pretraining_config(cfg)
    if settings is None:
        return
    for index, level in enumerate(model.scales):
        classifier = ScaleClassifier(model, index, len(classes))
        train_network(
            cfg,
            classifier,
            train,
            None,
            run_dir / f"level{level}",
            classes,
            resume=resume,
            settings=settings,
            seed=network_seed(cfg.seed, index),
            metadata={"stage": "encoder_pretraining", "level": level},
        )
        classifier.cpu()  # the Trainer moved this encoder to its device; the rest of the model is on the CPU
