"""Torchvision backbones as feature encoders: the trunk up to the last conv stage + global average pool.

System B (Liu et al. 2022) encodes each key-region crop into one vector: "three 2048-dimensional
encoding vectors were obtained via the adaptive average pooling layer" (ResNet50). The Table 4
ablation swaps in VGG16, GoogLeNet and ResNet-101. :func:`build_encoder` returns the torchvision
model itself with its classifier removed, so its state-dict keys stay torchvision's and a local
torchvision weights file (converted to safetensors) loads into it. Nothing is ever downloaded.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from torchvision import models

from histobreast.errors import CheckpointError, ConfigError
from histobreast.models.weights import read_weights


def _resnet(builder: Callable[..., models.ResNet]) -> Callable[[], nn.Module]:
    def build() -> nn.Module:
        net = builder(weights=None)
        net.fc = nn.Identity()  # avgpool is already AdaptiveAvgPool2d((1, 1))
        return net

    return build


def _vgg16(batch_norm: bool) -> Callable[[], nn.Module]:
    def build() -> nn.Module:
        net = (models.vgg16_bn if batch_norm else models.vgg16)(weights=None)
        # torchvision pools to 7x7 for its 4096-d classifier; an encoder pools to one 512-d vector,
        # which also works for inputs smaller than 224 px (64 px leaves a 2x2 map).
        net.avgpool = nn.AdaptiveAvgPool2d(1)
        net.classifier = nn.Identity()
        return net

    return build


def _googlenet() -> nn.Module:
    # weights=None leaves init_weights unset (torchvision then warns); aux heads are training-time
    # classifiers, not part of an encoder.
    net = models.googlenet(weights=None, aux_logits=False, init_weights=False, transform_input=False)
    # He initialisation as torchvision gives ResNet and VGG. GoogLeNet's own (truncated normal, std
    # 0.01, from the Caffe original) shrinks activations ~100x per conv while BatchNorm still holds
    # its initial statistics, so a frozen random GoogLeNet encoded every crop as ~1e-12 and the
    # Table 4 row predicted one class.
    for module in net.modules():
        if isinstance(module, nn.Conv2d):
            nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
    net.dropout = nn.Identity()  # the encoding is the pooled vector itself
    net.fc = nn.Identity()
    return net


@dataclass(frozen=True)
class EncoderSpec:
    """How to build one encoder: the builder, the pooled feature size, and the torchvision head keys
        that a full-model weights file holds but the encoder does not (dropped when loading), and the
    layer a class activation map of the encoder reads."""

    build: Callable[[], nn.Module]
    out_features: int
    head_prefixes: tuple[str, ...]
    cam_layer: Callable[[nn.Module], nn.Module]  # the built encoder's last conv stage, read by class activation maps


def _last_resnet_stage(net: nn.Module) -> nn.Module:
    return net.layer4


def _last_vgg_stage(net: nn.Module) -> nn.Module:
    return net.features  # its output: the last conv block, max-pooled


def _last_inception(net: nn.Module) -> nn.Module:
    return net.inception5b


ENCODERS: dict[str, EncoderSpec] = {
    "resnet18": EncoderSpec(_resnet(models.resnet18), 512, ("fc.",), _last_resnet_stage),
    "resnet34": EncoderSpec(_resnet(models.resnet34), 512, ("fc.",), _last_resnet_stage),
    "resnet50": EncoderSpec(_resnet(models.resnet50), 2048, ("fc.",), _last_resnet_stage),
    "resnet101": EncoderSpec(_resnet(models.resnet101), 2048, ("fc.",), _last_resnet_stage),
    "vgg16": EncoderSpec(_vgg16(batch_norm=False), 512, ("classifier.",), _last_vgg_stage),
    "vgg16_bn": EncoderSpec(_vgg16(batch_norm=True), 512, ("classifier.",), _last_vgg_stage),
    "googlenet": EncoderSpec(_googlenet, 1024, ("fc.", "aux1.", "aux2."), _last_inception),
}


def encoder_spec(name: str) -> EncoderSpec:
    """The :class:`EncoderSpec` of encoder ``name``; unknown names raise ConfigError listing the known ones."""
    if name not in ENCODERS:
        raise ConfigError(f"unknown encoder {name!r}; choose one of {', '.join(ENCODERS)}")
    return ENCODERS[name]


def build_encoder(name: str, weights: str | Path | None = None) -> nn.Module:
    """A randomly initialised (or ``weights``-initialised) encoder mapping ``(B, 3, H, W)`` to ``(B, D)``.

    ``weights`` is a local safetensors file of the torchvision model (e.g. ImageNet ResNet50 converted
    with ``histobreast models convert-weights``); its classifier keys are ignored, every trunk key
    must be present and match.
    """
    spec = encoder_spec(name)
    net = spec.build()
    if weights is not None:
        load_encoder_weights(net, weights, spec.head_prefixes)
    return net


def load_encoder_weights(net: nn.Module, path: str | Path, head_prefixes: tuple[str, ...]) -> nn.Module:
    """Load an encoder's weights file into ``net``: head keys (the file's and the network's) left out,
    every other key strict. ``net`` is a headless encoder or a whole classifier whose trunk it is
    (``histobreast pretrain`` writes the trunk of any registered network)."""
    state = {k: v for k, v in read_weights(path).items() if not k.startswith(head_prefixes)}
    own = {k: v for k, v in net.state_dict().items() if not k.startswith(head_prefixes)}
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    wrong_shape = [
        f"{k}: file {tuple(v.shape)} vs encoder {tuple(own[k].shape)}"
        for k, v in state.items()
        if k in own and own[k].shape != v.shape
    ]
    if missing or unexpected or wrong_shape:
        raise CheckpointError(
            f"{path}: not weights of this encoder (missing {missing[:5]}, unexpected {unexpected[:5]}, "
            f"shape mismatches {wrong_shape[:3]})"
        )
    if any(p.is_meta for p in net.parameters()):
        return net  # a shapes-only build (a config check): the file matches, there is nothing to copy into
    with torch.no_grad():
        net.load_state_dict(state, strict=False)
    return net
