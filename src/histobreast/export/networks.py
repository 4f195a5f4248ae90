"""Which networks a model folder holds, each as a module with one input and one output, ready to export.

System A's hybrid is two networks (``global`` and ``local``: each image -> class probabilities;
the patch vote and the fusion stay outside, in :mod:`histobreast.vote_rules`); System B is its
encoders (``encoder0``... : a crop -> its pooled feature vector, one per KREM scale) and ``fdnet``
(the per-scale features -> class probabilities); a plain classifier is one ``image`` network.
Every network ends in probabilities (softmax inside), so the exported graph's output is what the
votes consume. Pruned and DNS models are ordinary model folders (their ``model_kwargs`` hold the
pruned widths), so they export the same way.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from histobreast.errors import CheckpointError
from histobreast.models.hybrid import HybridCNN
from histobreast.models.msmv import MSMVPFENet, SVMHead
from histobreast.pipelines.package import LoadedModel

#: Pipelines whose model folders export (spanhol2016's sliding-window members are not covered).
EXPORTABLE_PIPELINES = ("zhu2019", "liu2022", "image")


@dataclass
class Network:
    """One exportable network: ``module(input) -> output`` with a batch axis first.

    ``sample_shape`` is one input's shape without the batch axis (the export traces it);
    ``dynamic_axes`` names the input axes whose size may change (always the batch, 0).
    """

    name: str
    module: nn.Module
    sample_shape: tuple[int, ...]
    output: str = "probabilities"
    dynamic_axes: dict[int, str] = field(default_factory=lambda: {0: "batch"})


class Probabilities(nn.Module):
    """A classifier's softmax: ``network(x)`` logits (eval mode, or a ``{"logits"}`` mapping) -> probabilities."""

    def __init__(self, network: nn.Module) -> None:
        super().__init__()
        self.network = network

    def forward(self, x: Tensor) -> Tensor:
        output: Any = self.network(x)
        logits = output["logits"] if isinstance(output, Mapping) else output
        return logits.softmax(dim=-1)


class FeatureSoftmax(nn.Module):
    """System B's FDNet with its softmax: per-scale features ``(B, S, D)`` -> probabilities ``(B, C)``."""

    def __init__(self, discriminator: nn.Module) -> None:
        super().__init__()
        self.discriminator = discriminator

    def forward(self, features: Tensor) -> Tensor:
        return self.discriminator(features).softmax(dim=-1)


def _plain_shape(loaded: LoadedModel) -> tuple[tuple[int, ...], dict[int, str]]:
    """A plain classifier's input: ``input_size`` squares, or whole rescaled images of any size."""
    size = loaded.cfg.preprocess.input_size
    if loaded.cfg.preprocess.microns_per_pixel is not None:  # the test images keep their own size
        return (3, size, size), {0: "batch", 2: "height", 3: "width"}
    return (3, size, size), {0: "batch"}


def model_networks(loaded: LoadedModel) -> list[Network]:
    """The networks of one loaded model folder, in the order the runtime runs them."""
    model, size = loaded.model, loaded.cfg.preprocess.input_size
    if loaded.pipeline not in EXPORTABLE_PIPELINES:
        raise CheckpointError(
            f"{loaded.path}: pipeline {loaded.pipeline!r} does not export; "
            f"exportable pipelines: {', '.join(EXPORTABLE_PIPELINES)}"
        )
    if isinstance(model, HybridCNN):
        patch = loaded.cfg.preprocess.patches.size
        return [
            Network("global", Probabilities(model.global_branch).eval(), (3, size, size)),
            Network("local", Probabilities(model.local_branch).eval(), (3, patch, patch)),
        ]
    if isinstance(model, MSMVPFENet):
        if isinstance(model.discriminator, SVMHead):
            raise CheckpointError(f"{loaded.path}: System B with the SVM discriminator does not export; use FDNet")
        encoders = [
            Network(f"encoder{i}", encoder.eval(), (3, size, size), output="features")
            for i, encoder in enumerate(model.encoders)
        ]
        fdnet = Network("fdnet", FeatureSoftmax(model.discriminator).eval(), (len(model.scales), model.feature_dim))
        return [*encoders, fdnet]
    shape, axes = _plain_shape(loaded)
    return [Network("image", Probabilities(model).eval(), shape, dynamic_axes=axes)]


def seeded_inputs(network: Network, count: int, seed: int) -> Tensor:
    """``count`` reproducible inputs of ``network``: ImageNet-normalised-like values (roughly N(0, 1))."""
    generator = torch.Generator().manual_seed(seed)
    return torch.randn((count, *network.sample_shape), generator=generator)
