"""Which networks a model folder holds, each as a module with one input and one output, ready to export.

System A's hybrid is two networks (``global`` and ``local``: each image -> class probabilities;
the patch vote and the fusion stay outside, in :mod:`histobreast.vote_rules`); System B is its
encoders (``encoder0``... : a crop -> its pooled feature vector, one per KREM scale) and ``fdnet``
(the per-scale features -> class probabilities); a plain classifier and a Spanhol 2016 member are
one ``image`` network (a whole image, or one sliding-window patch). Every network ends in
probabilities (softmax inside), so the exported graph's output is what the votes consume. Pruned and
DNS models are ordinary model folders (their ``model_kwargs`` hold the pruned widths), so they
export the same way. :func:`model_inputs` is the description of how the runtime builds the
networks' inputs (export.json's ``inputs``), so the runtime never asks which pipeline made a model.
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
from histobreast.pipelines.registry import get_pipeline


@dataclass
class Network:
    """One exportable network: ``module(input) -> output`` with a batch axis first.

    ``sample_shape`` is one input's shape without the batch axis (the export traces it);
    ``dynamic_axes`` names the input axes whose size may change (always the batch, 0); ``role`` is
    what the runtime uses it for (``global``, ``local``, ``image``, ``encoder``, ``fdnet``).
    """

    name: str
    module: nn.Module
    sample_shape: tuple[int, ...]
    output: str = "probabilities"
    role: str = ""
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


def _spanhol_settings(loaded: LoadedModel) -> dict[str, Any] | None:
    """A Spanhol 2016 member's ``spanhol`` settings in model.json (None: not a member)."""
    settings = loaded.info.get("spanhol")
    return settings if isinstance(settings, dict) else None


def model_inputs(loaded: LoadedModel) -> dict[str, Any]:
    """export.json's ``inputs``: the kind of input building (``hybrid``, ``image``, ``key_regions``,
    ``spanhol_patches``), whether it works in µm (``physical_scale``), and its own settings."""
    physical = get_pipeline(loaded.pipeline).physical_scale
    if isinstance(loaded.model, HybridCNN):
        return {"kind": "hybrid", "physical_scale": physical}
    if isinstance(loaded.model, MSMVPFENet):
        regions = loaded.cfg.preprocess.regions
        return {
            "kind": "key_regions",
            "physical_scale": physical,
            "views": list(regions.views),
            "top_k": regions.top_k_test,
            "levels": [int(level) for level in loaded.model.scales],
            "krem": regions.krem.to_dict(),
            "selection": regions.selection,
            "seed": loaded.cfg.seed,
        }
    settings = _spanhol_settings(loaded)
    if settings is not None:
        keys = ("patch_size", "overlap", "scale", "patch_rule", "eval_batch_size")
        return {"kind": "spanhol_patches", "physical_scale": physical, **{k: settings[k] for k in keys}}
    return {"kind": "image", "physical_scale": physical}


def model_networks(loaded: LoadedModel) -> list[Network]:
    """The networks of one loaded model folder, in the order the runtime runs them."""
    model, size = loaded.model, loaded.cfg.preprocess.input_size
    if isinstance(model, HybridCNN):
        patch = loaded.cfg.preprocess.patches.size
        return [
            Network("global", Probabilities(model.global_branch).eval(), (3, size, size), role="global"),
            Network("local", Probabilities(model.local_branch).eval(), (3, patch, patch), role="local"),
        ]
    if isinstance(model, MSMVPFENet):
        if isinstance(model.discriminator, SVMHead):
            raise CheckpointError(f"{loaded.path}: System B with the SVM discriminator does not export; use FDNet")
        encoders = [
            Network(f"encoder{i}", encoder.eval(), (3, size, size), output="features", role="encoder")
            for i, encoder in enumerate(model.encoders)
        ]
        fdnet = Network(
            "fdnet", FeatureSoftmax(model.discriminator).eval(), (len(model.scales), model.feature_dim), role="fdnet"
        )
        return [*encoders, fdnet]
    settings = _spanhol_settings(loaded)
    if settings is not None:  # one sliding-window patch -> its probabilities
        patch = int(settings["patch_size"])
        return [Network("image", Probabilities(model).eval(), (3, patch, patch), role="image")]
    shape, axes = _plain_shape(loaded)
    return [Network("image", Probabilities(model).eval(), shape, dynamic_axes=axes, role="image")]


def seeded_inputs(network: Network, count: int, seed: int) -> Tensor:
    """``count`` reproducible inputs of ``network``: ImageNet-normalised-like values (roughly N(0, 1))."""
    generator = torch.Generator().manual_seed(seed)
    return torch.randn((count, *network.sample_shape), generator=generator)
