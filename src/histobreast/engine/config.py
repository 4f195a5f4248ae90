"""The ``train`` section of an experiment config: optimiser, schedule and the training loop's options."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

from histobreast.config import Problems


@dataclass
class ScheduleConfig:
    """Learning-rate schedule, evaluated from the optimizer step (see ``engine.schedules``).

    ``step``: lr * gamma**k, the k-th decay after ``first_step`` units then every ``step_size``
    units, never below ``min_lr``. ``cosine``: from lr to ``min_lr`` over the run. ``constant``.
    ``warmup`` units of linear warm-up precede any of them. ``unit`` is ``iteration`` (one
    optimizer step) or ``epoch`` (the lr then changes only at epoch boundaries).
    """

    name: Literal["constant", "step", "cosine"] = "constant"
    unit: Literal["iteration", "epoch"] = "iteration"
    step_size: int = 1
    first_step: int | None = None  # None: step_size
    gamma: float = 0.1
    min_lr: float = 0.0
    warmup: int = 0

    def problems(self) -> Problems:
        if self.step_size < 1:
            yield "step_size", f"must be >= 1, got {self.step_size}"
        if self.first_step is not None and self.first_step < 0:
            yield "first_step", f"must be >= 0, got {self.first_step}"
        if not 0.0 < self.gamma <= 1.0:
            yield "gamma", f"must be in (0, 1], got {self.gamma}"
        if self.min_lr < 0:
            yield "min_lr", f"must be >= 0, got {self.min_lr}"
        if self.warmup < 0:
            yield "warmup", f"must be >= 0, got {self.warmup}"


@dataclass
class TrainConfig:
    """Optimisation and the training loop (see docs/engine.md for every key).

    ``batch_size`` is the effective batch of one optimizer step over all processes, as the
    papers state it; it is split into ``world_size * grad_accum`` equal micro-batches.
    """

    optimizer: Literal["sgd", "adamw"] = "sgd"
    lr: float = 0.01
    momentum: float = 0.9  # SGD
    nesterov: bool = False  # SGD
    betas: tuple[float, float] = (0.9, 0.999)  # AdamW
    weight_decay: float = 0.0
    batch_size: int = 32
    epochs: int | None = None
    iterations: int | None = None  # optimizer steps; exactly one of epochs / iterations
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    grad_accum: int = 1
    grad_clip: float | None = None  # max global gradient norm
    aux_weight: float = 0.3  # GoogLeNet's weight of each auxiliary-head loss
    amp: bool | Literal["auto"] = "auto"  # bf16 autocast; auto = on CUDA only
    channels_last: bool | Literal["auto"] = "auto"  # auto = on CUDA only
    compile: bool = False  # torch.compile the training forward
    sync_batchnorm: bool = False  # SyncBatchNorm across DDP processes
    early_stopping: int | None = None  # patience, in evaluations without improvement
    select_metric: str = "val_accuracy"
    select_mode: Literal["auto", "max", "min"] = "auto"  # auto: min for *loss metrics
    restore_best: bool = True  # load the best weights into the model when fit ends
    eval_every: int | None = None  # optimizer steps between validations; None: every epoch
    checkpoint_every: int | None = None  # optimizer steps between `last` checkpoints
    log_every: int = 50  # optimizer steps between logged (synchronised) losses
    eval_batch_size: int | None = None  # per process; None: twice the training micro-batch
    num_workers: int = 4
    prefetch_factor: int = 2
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    deterministic: bool = False  # torch.use_deterministic_algorithms (slower on GPU)
    progress: bool | Literal["auto"] = "auto"  # rich progress bars; auto = when stderr is a TTY
    tensorboard: bool = True

    def eval_batch(self, world_size: int = 1) -> int:
        """Images per inference batch and process: ``eval_batch_size``, else twice the training micro-batch."""
        return self.eval_batch_size or max(1, 2 * (self.batch_size // (self.grad_accum * world_size)))

    def problems(self) -> Problems:
        if (self.epochs is None) == (self.iterations is None):
            yield "epochs", "set exactly one of train.epochs and train.iterations"
        for name in ("epochs", "iterations", "early_stopping", "eval_every", "checkpoint_every", "eval_batch_size"):
            value = getattr(self, name)
            if value is not None and value < 1:
                yield name, f"must be >= 1, got {value}"
        for name in ("batch_size", "grad_accum", "log_every", "prefetch_factor"):
            if getattr(self, name) < 1:
                yield name, f"must be >= 1, got {getattr(self, name)}"
        if self.batch_size % self.grad_accum:
            yield "grad_accum", f"must divide batch_size={self.batch_size}, got {self.grad_accum}"
        if not (self.lr > 0 and math.isfinite(self.lr)):
            yield "lr", f"must be a positive number, got {self.lr}"
        if not 0.0 <= self.momentum < 1.0:
            yield "momentum", f"must be in [0, 1), got {self.momentum}"
        if self.nesterov and (self.optimizer != "sgd" or self.momentum == 0):
            yield "nesterov", "needs optimizer: sgd with momentum > 0"
        if not all(0.0 <= b < 1.0 for b in self.betas):
            yield "betas", f"must be in [0, 1), got {self.betas}"
        if self.weight_decay < 0 or self.aux_weight < 0:
            yield "weight_decay", "weight_decay and aux_weight must be >= 0"
        if self.grad_clip is not None and self.grad_clip <= 0:
            yield "grad_clip", f"must be > 0, got {self.grad_clip}"
        if self.num_workers < 0:
            yield "num_workers", f"must be >= 0, got {self.num_workers}"
        if not (self.device in ("auto", "cpu", "cuda") or _is_cuda_index(self.device)):
            yield "device", f"must be auto, cpu, cuda or cuda:N, got {self.device!r}"


def _is_cuda_index(device: str) -> bool:
    prefix, _, index = device.partition(":")
    return prefix == "cuda" and index.isdigit()
