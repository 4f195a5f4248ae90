"""GoogLeNet-BN with an SEP block after every Inception module: the backbone of Zhu et al. 2019.

Architecture (DESIGN.md "System A", decoded from the authors' ``deploy_SE_bn4.prototxt``)::

    stem   conv7x7/2 64 -> maxpool3/2 -> conv1x1 64 -> conv3x3 192 -> maxpool3/2
    3a, 3b -> maxpool3/2 -> 4a, 4b, 4c, 4d, 4e         (each Inception followed by SE, r = 16)
    head   concat(4e, 4b, 4c, 4d) = 2384 ch -> maxpool3/2 -> global average pool -> FC
    aux    after 4a and 4d (training only): avgpool5/3 -> conv1x1 128 -> FC 1024 -> ReLU
           -> dropout 0.7 -> FC

Inception 5a/5b are dropped. All pooling uses ceil mode (Caffe), so 224 px gives 56/28/14/7.
Every width is a constructor argument, so a physically pruned network is rebuilt from its
``model_kwargs`` alone. Input size is free from ``MIN_INPUT_SIZE`` = 31 px up (smaller inputs pool
to nothing before the head): the head pools globally and the auxiliary heads pool adaptively to
GoogLeNet's 4x4 grid.

Complexity at 224 px, 2 classes (``tests/test_models_system_a.py`` checks these against DESIGN.md's
"about 3.8 M parameters and 1.46 GMAC"): 3.76 M parameters without the auxiliary heads (8.09 M
with them; the two FC-1024 layers of the aux heads hold 4.2 M), 1.460 GMAC at inference (conv +
FC multiply-accumulates; 1.466 GMAC with the aux heads in training).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from histobreast.errors import ConfigError
from histobreast.models.encoders import load_encoder_weights
from histobreast.models.layers import (
    SE_REDUCTION,
    ConvBNReLU,
    InceptionBN,
    InceptionWidths,
    ProbabilityMixin,
    SEBlock,
    se_hidden_width,
)
from histobreast.models.registry import register_model

INCEPTION_NAMES = ("3a", "3b", "4a", "4b", "4c", "4d", "4e")

# GoogLeNet's Table 1 widths (Szegedy et al. 2015), as in DESIGN.md; outputs 256, 480, 512, 512,
# 512, 528, 832 channels.
GOOGLENET_WIDTHS: dict[str, InceptionWidths] = {
    "3a": InceptionWidths(64, 96, 128, 16, 32, 32),
    "3b": InceptionWidths(128, 128, 192, 32, 96, 64),
    "4a": InceptionWidths(192, 96, 208, 16, 48, 64),
    "4b": InceptionWidths(160, 112, 224, 24, 64, 64),
    "4c": InceptionWidths(128, 128, 256, 24, 64, 64),
    "4d": InceptionWidths(112, 144, 288, 32, 64, 64),
    "4e": InceptionWidths(256, 160, 320, 32, 128, 128),
}
STEM_WIDTHS = (64, 64, 192)
# deploy_SE_bn4.prototxt, layer "inception_4e2/concat": the order of the head's concatenation.
HEAD_SOURCES = ("4e", "4b", "4c", "4d")
# GoogLeNet's auxiliary classifiers read the outputs of 4a and 4d.
AUX_SOURCES = {"aux1": "4a", "aux2": "4d"}
# Szegedy et al. 2015, Sec. 5 and the released prototxt: conv1x1 128, FC 1024, dropout 0.7.
AUX_CONV_WIDTH = 128
AUX_FC_WIDTH = 1024
AUX_DROPOUT = 0.7
AUX_GRID = 4  # avgpool 5x5/3 turns 4a/4d's 14x14 maps (at 224 px) into 4x4
# The stem's conv /2 and three ceil-mode maxpools /2 take 31 px to the 2x2 map the head's maxpool 3/2
# needs; 30 px gives 1x1, which it cannot pool.
MIN_INPUT_SIZE = 31


class AuxiliaryHead(nn.Module):
    """GoogLeNet auxiliary classifier; pools to a 4x4 grid whatever the input size."""

    def __init__(
        self, in_channels: int, num_classes: int, widths: Sequence[int] = (AUX_CONV_WIDTH, AUX_FC_WIDTH)
    ) -> None:
        super().__init__()
        conv_width, fc_width = widths
        self.conv = ConvBNReLU(in_channels, conv_width, 1)
        self.fc = nn.Linear(conv_width * AUX_GRID * AUX_GRID, fc_width)
        self.act = nn.ReLU(inplace=True)
        self.dropout = nn.Dropout(AUX_DROPOUT)
        self.classifier = nn.Linear(fc_width, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        # GoogLeNet's avgpool 5x5/3 where the map is big enough (exactly 4x4 at 224 px), then an
        # adaptive pool so that other input sizes still give the 4x4 grid the FC layer expects.
        if min(x.shape[-2:]) >= 5:
            x = F.avg_pool2d(x, kernel_size=5, stride=3)
        x = F.adaptive_avg_pool2d(x, AUX_GRID)
        x = self.conv(x).flatten(1)
        return self.classifier(self.dropout(self.act(self.fc(x))))


def _validated_widths(widths: Mapping[str, Sequence[int]] | None) -> dict[str, InceptionWidths]:
    if widths is None:
        return dict(GOOGLENET_WIDTHS)
    if not isinstance(widths, Mapping) or set(widths) != set(INCEPTION_NAMES):
        got = sorted(widths) if isinstance(widths, Mapping) else type(widths).__name__
        raise ConfigError(f"model kwarg 'widths' must map each of {list(INCEPTION_NAMES)} to 6 widths, got {got}")
    checked = {}
    for name in INCEPTION_NAMES:
        values = widths[name]
        if len(values) != len(InceptionWidths._fields) or not all(isinstance(v, int) and v >= 1 for v in values):
            raise ConfigError(
                f"model kwarg 'widths.{name}' must be 6 positive integers {InceptionWidths._fields}, got {values!r}"
            )
        checked[name] = InceptionWidths(*values)
    return checked


class GoogLeNetSEP(ProbabilityMixin, nn.Module):
    """GoogLeNet-BN (3a-4e) with SE after every Inception module and the concat head.

    ``forward`` returns logits ``(B, num_classes)``; in train mode with ``aux_logits`` it returns
    ``{"logits": ..., "aux": [aux1, aux2]}``. ``se=False`` gives the plain GoogLeNet-BN.
    ``dropout`` before the classifier defaults to 0: the released network has none there
    (GoogLeNet itself used 0.4). ``se_hidden`` overrides SE hidden widths per module (a pruned
    network keeps its original ones). ``aux_widths`` (conv, FC) of the auxiliary heads default to
    GoogLeNet's (128, 1024); small test networks shrink them, since at full width the two FC
    layers alone hold 4.2 M parameters.
    """

    def __init__(
        self,
        num_classes: int = 2,
        *,
        widths: Mapping[str, Sequence[int]] | None = None,
        se: bool = True,
        se_reduction: int = SE_REDUCTION,
        se_hidden: Mapping[str, int] | None = None,
        aux_logits: bool = True,
        dropout: float = 0.0,
        stem_widths: Sequence[int] = STEM_WIDTHS,
        aux_widths: Sequence[int] = (AUX_CONV_WIDTH, AUX_FC_WIDTH),
    ) -> None:
        super().__init__()
        if num_classes < 1:
            raise ConfigError(f"model kwarg 'num_classes' must be >= 1, got {num_classes}")
        unknown = sorted(set(se_hidden or {}) - set(INCEPTION_NAMES))
        if unknown:
            raise ConfigError(
                f"model kwarg 'se_hidden' has unknown module names {unknown}; use {list(INCEPTION_NAMES)}"
            )
        self.num_classes = num_classes
        self.widths = _validated_widths(widths)
        self.se_reduction = se_reduction
        self.aux_logits = aux_logits
        self.stem_widths = tuple(int(w) for w in stem_widths)
        self.aux_widths = tuple(int(w) for w in aux_widths)
        if len(self.aux_widths) != 2 or min(self.aux_widths) < 1:
            raise ConfigError(
                f"model kwarg 'aux_widths' must be 2 positive integers (conv, FC), got {list(aux_widths)}"
            )
        conv1, conv2_reduce, conv2 = self.stem_widths
        self.stem = nn.Sequential(
            OrderedDict(
                conv1=ConvBNReLU(3, conv1, 7, stride=2),
                pool1=nn.MaxPool2d(3, stride=2, ceil_mode=True),
                conv2_reduce=ConvBNReLU(conv1, conv2_reduce, 1),
                conv2=ConvBNReLU(conv2_reduce, conv2, 3),
                pool2=nn.MaxPool2d(3, stride=2, ceil_mode=True),
            )
        )
        self.inception = nn.ModuleDict()
        self.se = nn.ModuleDict()
        in_channels = conv2
        for name in INCEPTION_NAMES:
            block = InceptionBN(in_channels, self.widths[name])
            self.inception[name] = block
            hidden = (se_hidden or {}).get(name, se_hidden_width(block.out_channels, se_reduction))
            self.se[name] = SEBlock(block.out_channels, se_reduction, hidden) if se else nn.Identity()
            in_channels = block.out_channels
        self.pool3 = nn.MaxPool2d(3, stride=2, ceil_mode=True)
        aux_in = {key: self.widths[source].out_channels for key, source in AUX_SOURCES.items()}
        self.aux1 = AuxiliaryHead(aux_in["aux1"], num_classes, self.aux_widths) if aux_logits else None
        self.aux2 = AuxiliaryHead(aux_in["aux2"], num_classes, self.aux_widths) if aux_logits else None
        self.head_pool = nn.MaxPool2d(3, stride=2, ceil_mode=True)
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(sum(self.widths[name].out_channels for name in HEAD_SOURCES), num_classes)
        self._init_weights()

    def _init_weights(self) -> None:
        # He initialisation for the ReLU convs (training from scratch must work: no ImageNet here).
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)

    @property
    def has_se(self) -> bool:
        """Whether the Inception modules are followed by SE blocks (False for GoogLeNet-BN)."""
        return isinstance(self.se[INCEPTION_NAMES[0]], SEBlock)

    @property
    def model_kwargs(self) -> dict[str, Any]:
        """JSON-ready constructor kwargs that rebuild this network (pruned widths included)."""
        return {
            "num_classes": self.num_classes,
            "widths": {name: list(self.widths[name]) for name in INCEPTION_NAMES},
            "se": self.has_se,
            "se_reduction": self.se_reduction,
            "se_hidden": {name: se.fc1.out_features for name, se in self.se.items() if isinstance(se, SEBlock)},
            "aux_logits": self.aux_logits,
            "dropout": self.dropout.p,
            "stem_widths": list(self.stem_widths),
            "aux_widths": list(self.aux_widths),
        }

    def cam_target_layers(self) -> list[nn.Module]:
        """The layers a class activation map reads: the four Inception outputs the head pools (same grid)."""
        return [self.se[name] for name in HEAD_SOURCES]

    def forward(self, x: Tensor) -> Tensor | dict[str, Any]:
        x = self.stem(x)
        x = self.se["3a"](self.inception["3a"](x))
        x = self.pool3(self.se["3b"](self.inception["3b"](x)))
        outputs: dict[str, Tensor] = {}
        for name in INCEPTION_NAMES[2:]:
            x = self.se[name](self.inception[name](x))
            outputs[name] = x
        # maxpool and global average pool act per channel, so pooling each source and then
        # concatenating the vectors equals concat -> maxpool -> GAP without the 2384-channel copy.
        pooled = [self.head_pool(outputs[name]).mean(dim=(2, 3)) for name in HEAD_SOURCES]
        logits = self.fc(self.dropout(torch.cat(pooled, dim=1)))
        if self.training and self.aux1 is not None and self.aux2 is not None:
            aux = [self.aux1(outputs[AUX_SOURCES["aux1"]]), self.aux2(outputs[AUX_SOURCES["aux2"]])]
            return {"logits": logits, "aux": aux}
        return logits


#: Keys of the classifier heads: not part of the trunk an encoder weights file holds.
HEAD_PREFIXES = ("fc.", "aux1.", "aux2.")


def _with_encoder_weights(net: GoogLeNetSEP, encoder_weights: str | Path | None) -> GoogLeNetSEP:
    """``net`` with its trunk (stem, Inception and SE modules) loaded from a ``histobreast pretrain`` file."""
    return load_encoder_weights(net, encoder_weights, HEAD_PREFIXES) if encoder_weights is not None else net


@register_model("googlenet_sep")
def googlenet_sep(num_classes: int = 2, encoder_weights: str | Path | None = None, **kwargs: Any) -> GoogLeNetSEP:
    """Zhu et al. 2019's backbone: GoogLeNet-BN 3a-4e + SEP blocks + concat head + 2 aux heads.

    ``encoder_weights``: a trunk weights file (``histobreast pretrain``); the heads stay random."""
    return _with_encoder_weights(GoogLeNetSEP(num_classes, **kwargs), encoder_weights)


@register_model("googlenet_bn")
def googlenet_bn(
    num_classes: int = 2, se: bool = False, encoder_weights: str | Path | None = None, **kwargs: Any
) -> GoogLeNetSEP:
    """The same network without SE blocks (plain GoogLeNet-BN with the concat head)."""
    if se:
        raise ConfigError("model 'googlenet_bn' has no SE blocks (se=True); use 'googlenet_sep'")
    return _with_encoder_weights(GoogLeNetSEP(num_classes, se=False, **kwargs), encoder_weights)
