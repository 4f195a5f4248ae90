"""Spanhol et al. 2016 (IJCNN) patch CNN: the baseline of paper A's Table 9.

Spanhol et al. trained a small AlexNet variant of Krizhevsky's CIFAR-10 network on 32x32 and
64x64 patches of BreaKHis images (sliding windows with 50 % overlap, or random patches) and
fused the 4 resulting models with the max rule. Layers, exactly as in the network file Zhu et
al. released for their reproduction of this baseline (``deploy_32.prototxt`` / ``deploy_64.prototxt``
in their repository)::

    conv 5x5 32 (pad 2) -> ReLU -> maxpool 3x3/2
    conv 5x5 32 (pad 2) -> ReLU -> avgpool 3x3/2
    conv 5x5 64 (pad 2) -> ReLU -> avgpool 3x3/2
    FC 64 -> ReLU -> FC classes

Pooling uses ceil mode, as Caffe does (32 px -> 16 -> 8 -> 4; 64 px -> 32 -> 16 -> 8). The first
FC layer's width depends on the patch size, so ``patch_size`` is a constructor argument.
"""

from __future__ import annotations

import math
from collections import OrderedDict

from torch import Tensor, nn

from histobreast.errors import ConfigError
from histobreast.models.layers import ProbabilityMixin
from histobreast.models.registry import register_model


def _pooled_size(size: int, pools: int = 3) -> int:
    # Caffe pooling (kernel 3, stride 2, ceil mode): out = ceil((in - 3) / 2) + 1.
    for _ in range(pools):
        size = math.ceil((size - 3) / 2) + 1
    return size


class SpanholPatchCNN(ProbabilityMixin, nn.Module):
    """The 3-conv / 2-FC patch classifier of Spanhol et al. 2016 for ``patch_size`` patches."""

    def __init__(self, num_classes: int = 2, patch_size: int = 32) -> None:
        super().__init__()
        if patch_size < 8:
            raise ConfigError(f"model kwarg 'patch_size' must be >= 8 pixels, got {patch_size}")
        self.num_classes = num_classes
        self.patch_size = patch_size
        self.features = nn.Sequential(
            OrderedDict(
                conv1=nn.Conv2d(3, 32, 5, padding=2),
                relu1=nn.ReLU(inplace=True),
                pool1=nn.MaxPool2d(3, stride=2, ceil_mode=True),
                conv2=nn.Conv2d(32, 32, 5, padding=2),
                relu2=nn.ReLU(inplace=True),
                pool2=nn.AvgPool2d(3, stride=2, ceil_mode=True),
                conv3=nn.Conv2d(32, 64, 5, padding=2),
                relu3=nn.ReLU(inplace=True),
                pool3=nn.AvgPool2d(3, stride=2, ceil_mode=True),
            )
        )
        side = _pooled_size(patch_size)
        self.classifier = nn.Sequential(
            OrderedDict(
                fc1=nn.Linear(64 * side * side, 64),
                relu=nn.ReLU(inplace=True),
                fc2=nn.Linear(64, num_classes),
            )
        )

    @property
    def model_kwargs(self) -> dict[str, int]:
        """Constructor kwargs that rebuild this network."""
        return {"num_classes": self.num_classes, "patch_size": self.patch_size}

    def cam_target_layers(self) -> list[nn.Module]:
        """The layer a class activation map reads: the last conv stage (8x8 at 32 px)."""
        return [self.features.relu3]

    def forward(self, x: Tensor) -> Tensor:
        if x.shape[-2:] != (self.patch_size, self.patch_size):
            raise ValueError(f"SpanholPatchCNN(patch_size={self.patch_size}) got input of size {tuple(x.shape[-2:])}")
        return self.classifier(self.features(x).flatten(1))


@register_model("spanhol_patch_cnn")
def spanhol_patch_cnn(num_classes: int = 2, patch_size: int = 32) -> SpanholPatchCNN:
    """Spanhol et al. 2016's patch CNN (``patch_size`` 32 or 64 in the paper)."""
    return SpanholPatchCNN(num_classes, patch_size)
