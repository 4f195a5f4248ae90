"""Training and inference engine: configs, the one training loop, checkpoints, DDP, prediction loops."""

from histobreast.engine.checkpoint import Checkpoint, load_model, read_checkpoint, save_checkpoint
from histobreast.engine.config import (
    ExperimentConfig,
    TrainConfig,
    build_dataclass,
    config_to_dict,
    load_config,
    parse_config,
    save_config,
)
from histobreast.engine.distributed import DistributedContext, build_loader, resolve_device
from histobreast.engine.inference import predict_probabilities
from histobreast.engine.losses import ClassificationLoss
from histobreast.engine.schedules import LRSchedule
from histobreast.engine.trainer import FitResult, Trainer, TrainState

__all__ = [
    "Checkpoint",
    "ClassificationLoss",
    "DistributedContext",
    "ExperimentConfig",
    "FitResult",
    "LRSchedule",
    "TrainConfig",
    "TrainState",
    "Trainer",
    "build_dataclass",
    "build_loader",
    "config_to_dict",
    "load_config",
    "load_model",
    "parse_config",
    "predict_probabilities",
    "read_checkpoint",
    "resolve_device",
    "save_checkpoint",
    "save_config",
]
