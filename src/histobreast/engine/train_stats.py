"""Loss and accuracy sums of a training run: per micro-batch on the device, per stretch on the host,
and the validation metrics of class probabilities."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor

from histobreast.engine.losses import main_logits


def classification_metrics(probs: np.ndarray, targets: np.ndarray, prefix: str = "") -> dict[str, float]:
    """Mean negative log-likelihood and accuracy of class probabilities against integer targets."""
    if len(targets) == 0:
        return {}
    picked = probs[np.arange(len(targets)), targets].astype(np.float64)
    return {
        f"{prefix}loss": float(-np.log(np.clip(picked, 1e-12, None)).mean()),
        f"{prefix}accuracy": float((probs.argmax(axis=1) == targets).mean()),
    }


def batch_stats(loss: Tensor, output: Any, target: Tensor) -> Tensor:
    """(loss x n, correct) of one micro-batch, on device (no host sync)."""
    logits = main_logits(output)
    if logits.dim() == 2 and target.dim() == 1 and not target.is_floating_point():
        correct = (logits.argmax(dim=1) == target).sum()
    else:  # not a classification target: accuracy is not defined
        correct = torch.zeros((), device=target.device)
    return torch.stack([loss.detach().double() * target.shape[0], correct.double()])


@dataclass
class RunningTotals:
    """Sums of loss x n, correct and n over a stretch of training, with the wall time it took."""

    loss_sum: float = 0.0
    correct: float = 0.0
    count: float = 0.0
    started: float = field(default_factory=time.perf_counter)

    def add(self, loss_sum: float, correct: float, count: float) -> None:
        """Accumulate one flushed chunk."""
        self.loss_sum += loss_sum
        self.correct += correct
        self.count += count

    def means(self) -> dict[str, float]:
        """Mean train loss and accuracy over the stretch."""
        n = max(self.count, 1.0)
        return {"train_loss": self.loss_sum / n, "train_accuracy": self.correct / n}

    def throughput(self) -> dict[str, float]:
        """Training images per second (all processes) over the stretch."""
        elapsed = time.perf_counter() - self.started
        return {"images_per_s": self.count / elapsed if elapsed > 0 else math.nan}

    def as_list(self) -> list[float]:
        """The three sums, for a checkpoint."""
        return [self.loss_sum, self.correct, self.count]

    def reset(self) -> None:
        """Start a new stretch."""
        self.loss_sum = self.correct = self.count = 0.0
        self.started = time.perf_counter()
