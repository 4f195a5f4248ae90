"""The optimizer of a ``train`` section: SGD (papers A and B) or AdamW."""

from __future__ import annotations

import torch
from torch import nn

from histobreast.engine.config import TrainConfig
from histobreast.errors import ConfigError


def build_optimizer(model: nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    """SGD (momentum, optional Nesterov) or AdamW over the trainable parameters.

    Weight decay applies to every parameter, as in Caffe's default solver (paper A) and torch's
    optimizers.
    """
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ConfigError("the model has no trainable parameters")
    if config.optimizer == "sgd":
        return torch.optim.SGD(
            params, lr=config.lr, momentum=config.momentum, nesterov=config.nesterov, weight_decay=config.weight_decay
        )
    return torch.optim.AdamW(params, lr=config.lr, betas=config.betas, weight_decay=config.weight_decay)
