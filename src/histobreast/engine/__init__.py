"""Training and inference engine: the ``train`` config section, the one training loop, checkpoints, DDP, prediction loops."""

from histobreast.engine.checkpoint import Checkpoint, load_model, read_checkpoint, save_checkpoint
from histobreast.engine.config import ScheduleConfig, TrainConfig
from histobreast.engine.distributed import DistributedContext, build_loader, resolve_device
from histobreast.engine.inference import predict_probabilities
from histobreast.engine.losses import ClassificationLoss
from histobreast.engine.schedules import LRSchedule
from histobreast.engine.trainer import FitResult, Trainer, TrainState

__all__ = [
    "Checkpoint",
    "ClassificationLoss",
    "DistributedContext",
    "FitResult",
    "LRSchedule",
    "TrainConfig",
    "TrainState",
    "Trainer",
    "build_loader",
    "load_model",
    "predict_probabilities",
    "read_checkpoint",
    "resolve_device",
    "ScheduleConfig",
    "save_checkpoint",
]
