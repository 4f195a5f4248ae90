"""Building blocks shared by the System A models: conv-BN-ReLU, the SE block of the SEP block,
the BatchNorm Inception module, and the ``predict_proba`` mixin every classifier uses.

Layer details follow the authors' released Caffe network (``deploy_SE_bn4.prototxt``, see
DESIGN.md): BatchNorm with eps 1e-3 after every conv, SE implemented as global average pool ->
FC C/16 -> ReLU -> FC C -> sigmoid -> channel scale.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

import torch
from torch import Tensor, nn

# deploy_SE_bn4.prototxt: every BatchNorm layer has ``eps: 0.001``.
BN_EPS = 1e-3
# Hu et al. 2018 / paper A, eq. (3): r = 16.
SE_REDUCTION = 16


class ProbabilityMixin:
    """Adds ``predict_proba(*inputs) -> (B, C)`` softmax probabilities of the main head.

    Works in either mode: a train-mode output ``{"logits", "aux"}`` uses its ``"logits"``.
    Gradient tracking is left to the caller (wrap in ``torch.no_grad()`` for inference).
    """

    def predict_proba(self, *inputs: Tensor) -> Tensor:
        """Class probabilities ``(B, C)`` of the main head."""
        output: Any = self(*inputs)  # type: ignore[operator]
        logits = output["logits"] if isinstance(output, Mapping) else output
        return logits.softmax(dim=-1)


class ConvBNReLU(nn.Module):
    """Conv (no bias: BatchNorm's shift replaces it) -> BatchNorm -> ReLU, "same" padding."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, stride, padding=kernel_size // 2, bias=False)
        self.bn = nn.BatchNorm2d(out_channels, eps=BN_EPS)
        self.act = nn.ReLU(inplace=True)

    def forward(self, x: Tensor) -> Tensor:
        return self.act(self.bn(self.conv(x)))


def se_hidden_width(channels: int, reduction: int = SE_REDUCTION) -> int:
    """Hidden width of an SE block: ``channels // reduction``, at least 1 (528 -> 33 as released)."""
    return max(1, channels // reduction)


class SEBlock(nn.Module):
    """Squeeze-and-excitation (Hu et al. 2018): scale each channel by a learned gate in (0, 1).

    The gate is its own module (``self.gate``, a sigmoid) so that the channel-importance pass of
    the SEP block reads the per-sample activations ``s`` ``(B, C)`` with a forward hook, at no cost
    to training when no hook is registered. ``hidden`` defaults to ``channels // reduction``; a
    pruned block keeps its original hidden width (see ``histobreast.compress.prune``).
    """

    def __init__(self, channels: int, reduction: int = SE_REDUCTION, hidden: int | None = None) -> None:
        super().__init__()
        hidden = se_hidden_width(channels, reduction) if hidden is None else hidden
        self.fc1 = nn.Linear(channels, hidden)
        self.act = nn.ReLU(inplace=True)
        self.fc2 = nn.Linear(hidden, channels)
        self.gate = nn.Sigmoid()

    def forward(self, x: Tensor) -> Tensor:
        squeezed = x.mean(dim=(2, 3))
        scale = self.gate(self.fc2(self.act(self.fc1(squeezed))))
        return x * scale[:, :, None, None]


class InceptionWidths(NamedTuple):
    """Channel widths of one Inception module, in GoogLeNet's table order (torchvision's names)."""

    ch1x1: int
    ch3x3red: int
    ch3x3: int
    ch5x5red: int
    ch5x5: int
    pool_proj: int

    @property
    def out_channels(self) -> int:
        """Width of the concatenated output (1x1 + 3x3 + 5x5 + pool projection)."""
        return self.ch1x1 + self.ch3x3 + self.ch5x5 + self.pool_proj

    @property
    def branch_widths(self) -> tuple[int, int, int, int]:
        """Output widths of the four branches, in concatenation order."""
        return (self.ch1x1, self.ch3x3, self.ch5x5, self.pool_proj)

    def with_branch_widths(self, widths: Sequence[int]) -> InceptionWidths:
        """A copy with the four branch output widths replaced (the reduce widths unchanged)."""
        ch1x1, ch3x3, ch5x5, pool_proj = widths
        return self._replace(ch1x1=ch1x1, ch3x3=ch3x3, ch5x5=ch5x5, pool_proj=pool_proj)


class InceptionBN(nn.Module):
    """GoogLeNet Inception module with BatchNorm: 1x1 | 1x1->3x3 | 1x1->5x5 (a real 5x5) |
    maxpool 3x3/1 -> 1x1, concatenated along channels in that order.

    ``OUTPUT_LAYERS`` name the ConvBNReLU that produce each branch's output channels and
    ``INPUT_LAYERS`` those that read the module's input: the channel pruner edits exactly these.
    """

    OUTPUT_LAYERS = ("branch1x1", "branch3x3.conv", "branch5x5.conv", "branch_pool.proj")
    INPUT_LAYERS = ("branch1x1", "branch3x3.reduce", "branch5x5.reduce", "branch_pool.proj")

    def __init__(self, in_channels: int, widths: InceptionWidths | Sequence[int]) -> None:
        super().__init__()
        w = InceptionWidths(*widths)
        self.widths = w
        self.branch1x1 = ConvBNReLU(in_channels, w.ch1x1, 1)
        self.branch3x3 = nn.Sequential(
            OrderedDict(reduce=ConvBNReLU(in_channels, w.ch3x3red, 1), conv=ConvBNReLU(w.ch3x3red, w.ch3x3, 3))
        )
        self.branch5x5 = nn.Sequential(
            OrderedDict(reduce=ConvBNReLU(in_channels, w.ch5x5red, 1), conv=ConvBNReLU(w.ch5x5red, w.ch5x5, 5))
        )
        self.branch_pool = nn.Sequential(
            OrderedDict(
                pool=nn.MaxPool2d(3, stride=1, padding=1, ceil_mode=True),
                proj=ConvBNReLU(in_channels, w.pool_proj, 1),
            )
        )

    @property
    def out_channels(self) -> int:
        """Width of the concatenated output."""
        return self.widths.out_channels

    def forward(self, x: Tensor) -> Tensor:
        return torch.cat([self.branch1x1(x), self.branch3x3(x), self.branch5x5(x), self.branch_pool(x)], dim=1)
