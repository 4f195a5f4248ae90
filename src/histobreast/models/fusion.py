"""System A's in-model vote for tensors: the hybrid network's patch vote and branch fusion (paper A, eq. 1).

The rules themselves are :mod:`histobreast.vote_rules` (numpy, shared with the torch-free ONNX
runtime); these wrappers take tensors or arrays and return tensors on the input's device, because
:class:`~histobreast.models.hybrid.HybridCNN` calls them in ``predict_proba``. :mod:`histobreast.votes`
re-exports them beside the post-hoc rules (ensembles, view majority votes).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import Tensor

from histobreast import vote_rules
from histobreast.vote_rules import DEFAULT_FUSION_WEIGHT, DEFAULT_MIN_SPREAD, PatchRule

ArrayLike = Tensor | np.ndarray

__all__ = [
    "DEFAULT_FUSION_WEIGHT",
    "DEFAULT_MIN_SPREAD",
    "ArrayLike",
    "PatchRule",
    "as_float_tensor",
    "fuse_branches",
    "kept_patches",
    "on_arrays",
    "patch_vote",
]


def as_float_tensor(x: ArrayLike) -> Tensor:
    """``x`` as a tensor, floating point (integers become float32)."""
    t = torch.as_tensor(x)
    return t if t.is_floating_point() else t.float()


def on_arrays(vote: Callable[..., np.ndarray], /, *inputs: ArrayLike, **options: Any) -> Tensor:
    """``vote`` (a :mod:`histobreast.vote_rules` function) applied to tensors: run on their numpy
    copies, the result back as a tensor on the first input's device (votes carry no gradient)."""
    tensors = [as_float_tensor(x).detach() for x in inputs]
    arrays = [(t.float() if t.dtype == torch.bfloat16 else t).cpu().numpy() for t in tensors]
    return torch.from_numpy(np.ascontiguousarray(vote(*arrays, **options))).to(tensors[0].device)


def kept_patches(patch_probs: ArrayLike, min_spread: float | None = DEFAULT_MIN_SPREAD) -> Tensor:
    """Which patches ``(B, P)`` :func:`patch_vote` counts (see :func:`histobreast.vote_rules.kept_patches`)."""
    return on_arrays(vote_rules.kept_patches, patch_probs, min_spread=min_spread)


def patch_vote(
    patch_probs: ArrayLike, rule: PatchRule = "mean", min_spread: float | None = DEFAULT_MIN_SPREAD
) -> Tensor:
    """Image probabilities ``(B, C)`` from patch probabilities ``(B, P, C)`` (see
    :func:`histobreast.vote_rules.patch_vote`: the 0.3 confidence filter, then mean or max)."""
    return on_arrays(vote_rules.patch_vote, patch_probs, rule=rule, min_spread=min_spread)


def fuse_branches(local_probs: ArrayLike, global_probs: ArrayLike, weight: float = DEFAULT_FUSION_WEIGHT) -> Tensor:
    """Hybrid fusion ``P = weight * P_local + (1 - weight) * P_global`` (paper A, eq. 1)."""
    return on_arrays(vote_rules.fuse_branches, local_probs, global_probs, weight=weight)
