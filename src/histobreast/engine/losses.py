"""Training losses on model outputs: cross-entropy on logits plus weighted auxiliary heads.

A model returns logits ``(B, C)``, or in train mode ``{"logits": ..., "aux": [...]}`` when it has
auxiliary classifiers (GoogLeNet's two heads after 4a and 4d, used in training only).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch.nn.functional as F
from torch import Tensor, nn

# Szegedy et al. 2015 (GoogLeNet): "their loss is added to the total loss with a discount weight 0.3".
GOOGLENET_AUX_WEIGHT = 0.3


def main_logits(output: Tensor | Mapping[str, Any]) -> Tensor:
    """The main head's logits of a model output (a tensor, or a mapping with ``"logits"``)."""
    if isinstance(output, Mapping):
        if "logits" not in output:
            raise TypeError(f"model returned a mapping without 'logits' (keys: {sorted(output)})")
        return output["logits"]
    return output


class ClassificationLoss(nn.Module):
    """Cross-entropy on the main logits + ``aux_weight`` x cross-entropy of each auxiliary head."""

    def __init__(self, aux_weight: float = GOOGLENET_AUX_WEIGHT) -> None:
        super().__init__()
        self.aux_weight = aux_weight

    def forward(self, output: Tensor | Mapping[str, Any], target: Tensor) -> Tensor:
        """Mean loss over the batch."""
        loss = F.cross_entropy(main_logits(output), target)
        if isinstance(output, Mapping):
            for aux_logits in output.get("aux", ()):
                loss = loss + self.aux_weight * F.cross_entropy(aux_logits, target)
        return loss
