"""Learning-rate schedules as pure functions of the optimizer step.

The learning rate at step ``t`` depends on ``t`` and the configuration only, so a resumed run
needs no scheduler state and DDP processes agree without talking. The papers' schedules:

* **Paper A** (Zhu et al. 2019): "initial learning rate 0.0004 ... decreases exponentially every
  10000 iterations", 40k iterations, batch 10. The decay factor is not given; we read it as
  Caffe's ``step`` policy (the authors trained in Caffe) with Caffe's customary ``gamma: 0.1``:
  ``{name: step, unit: iteration, step_size: 10000, gamma: 0.1}``. The factor is configurable.
* **Paper B** (Liu et al. 2022): "initial learning rate at 0.01 for the first 30 batches and then
  divided the rate by 10 after every 10 batches, until the rate was equal to 1e-4", over 27k
  iterations of batch 64. Taken literally this is 0.01 for 30 steps, 0.001 for 10 steps, then 1e-4
  for the remaining 26,960 steps: ``{name: step, unit: iteration, first_step: 30, step_size: 10,
  gamma: 0.1, min_lr: 1e-4}``. That is surprising (it trains almost entirely at 1e-4), so the
  same schedule with ``unit: epoch`` (30 epochs at 0.01, then /10 every 10 epochs) and ``cosine``
  are offered as alternatives; the configs say which one a run used.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from histobreast.engine.config import ScheduleConfig


@dataclass(frozen=True)
class LRSchedule:
    """``lr_at(step)`` for one run: a schedule config bound to the base lr and the run's length."""

    config: ScheduleConfig
    base_lr: float
    steps_per_epoch: int
    total_steps: int

    def __post_init__(self) -> None:
        if self.steps_per_epoch < 1 or self.total_steps < 1:
            raise ValueError(
                f"steps_per_epoch and total_steps must be >= 1, got {self.steps_per_epoch}, {self.total_steps}"
            )

    @property
    def steps_per_unit(self) -> int:
        """Optimizer steps in one schedule unit (1 for ``iteration``, an epoch's steps for ``epoch``)."""
        return 1 if self.config.unit == "iteration" else self.steps_per_epoch

    def lr_at(self, step: int) -> float:
        """Learning rate used by optimizer step ``step`` (0-based)."""
        cfg = self.config
        unit = step // self.steps_per_unit  # whole units elapsed: epoch schedules change at boundaries
        if cfg.name == "constant":
            lr = self.base_lr
        elif cfg.name == "step":
            first = cfg.step_size if cfg.first_step is None else cfg.first_step
            decays = 0 if unit < first else 1 + (unit - first) // cfg.step_size
            lr = max(cfg.min_lr, self.base_lr * cfg.gamma**decays)
        else:  # cosine from the end of warm-up to the end of the run
            total_units = max(1, math.ceil(self.total_steps / self.steps_per_unit) - cfg.warmup)
            progress = min(1.0, max(0, unit - cfg.warmup) / total_units)
            lr = cfg.min_lr + (self.base_lr - cfg.min_lr) * 0.5 * (1.0 + math.cos(math.pi * progress))
        warmup_steps = cfg.warmup * self.steps_per_unit
        if step < warmup_steps:  # linear warm-up, step by step even for epoch units
            lr *= (step + 1) / warmup_steps
        return lr


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    """Set the learning rate of every parameter group of ``optimizer``."""
    for group in optimizer.param_groups:
        group["lr"] = lr
