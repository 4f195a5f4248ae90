"""torchvision ResNets behind the registry, for baseline comparisons with the System A backbone.

They are built with random weights (never downloaded). Their state-dict keys are torchvision's,
so an ImageNet file a user already has can initialise them once converted to safetensors
(``histobreast.models.weights.convert_torch_weights``), e.g.
``create_model("resnet50", num_classes=1000, weights="resnet50-imagenet.safetensors")``, then
replace ``model.fc`` for the task's classes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import nn
from torchvision.models.resnet import BasicBlock, Bottleneck, ResNet

from histobreast.models.encoders import load_encoder_weights
from histobreast.models.layers import ProbabilityMixin
from histobreast.models.registry import register_model


class TorchvisionResNet(ProbabilityMixin, ResNet):
    """torchvision's ``ResNet`` with ``predict_proba``; ``forward`` returns logits."""

    def cam_target_layers(self) -> list[nn.Module]:
        """The layer a class activation map reads: the last residual stage."""
        return [self.layer4]


def _resnet(
    block: type[BasicBlock | Bottleneck],
    layers: list[int],
    num_classes: int,
    encoder_weights: str | Path | None,
    **kwargs: Any,
) -> TorchvisionResNet:
    net = TorchvisionResNet(block, layers, num_classes=num_classes, **kwargs)
    # A trunk weights file (histobreast pretrain, or a converted ImageNet file): fc stays random.
    return load_encoder_weights(net, encoder_weights, ("fc.",)) if encoder_weights is not None else net


@register_model("resnet18")
def resnet18(num_classes: int = 2, encoder_weights: str | Path | None = None, **kwargs: Any) -> TorchvisionResNet:
    """ResNet-18 (He et al. 2016), torchvision layout, random initialisation (or ``encoder_weights``' trunk)."""
    return _resnet(BasicBlock, [2, 2, 2, 2], num_classes, encoder_weights, **kwargs)


@register_model("resnet50")
def resnet50(num_classes: int = 2, encoder_weights: str | Path | None = None, **kwargs: Any) -> TorchvisionResNet:
    """ResNet-50 (He et al. 2016), torchvision layout, random initialisation (or ``encoder_weights``' trunk)."""
    return _resnet(Bottleneck, [3, 4, 6, 3], num_classes, encoder_weights, **kwargs)
