"""System A's in-model vote: the hybrid network's patch vote and branch fusion (paper A, eq. 1).

Pure functions of class probabilities (rows sum to 1), tensor or array in, tensor out. They live
with the models because :class:`~histobreast.models.hybrid.HybridCNN` calls them in ``predict_proba``;
:mod:`histobreast.votes` re-exports them beside the post-hoc rules (ensembles, view majority votes).
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch
from torch import Tensor

ArrayLike = Tensor | np.ndarray

PatchRule = Literal["mean", "max"]

# Zhu et al.'s released vote.ipynb drops patches whose (max - min) class probability is below 0.3
# before averaging: such patches are near-uniform and carry no decision.
DEFAULT_MIN_SPREAD = 0.3
# Paper A, eq. (1): P = lambda * P_local + (1 - lambda) * P_global with lambda = 0.6.
DEFAULT_FUSION_WEIGHT = 0.6


def as_float_tensor(x: ArrayLike) -> Tensor:
    """``x`` as a tensor, floating point (integers become float32)."""
    t = torch.as_tensor(x)
    return t if t.is_floating_point() else t.float()


def normalise_rows(scores: Tensor) -> Tensor:
    """Scale each row of non-negative scores to sum to 1 (all-zero rows stay zero)."""
    return scores / scores.sum(dim=-1, keepdim=True).clamp_min(torch.finfo(scores.dtype).tiny)


def kept_patches(patch_probs: ArrayLike, min_spread: float | None = DEFAULT_MIN_SPREAD) -> Tensor:
    """Which patches ``(B, P)`` :func:`patch_vote` counts: those whose max-min probability reaches
    ``min_spread`` (all of an image's patches when none does; all when the filter is off)."""
    probs = as_float_tensor(patch_probs)
    if probs.ndim != 3:
        raise ValueError(f"patch_vote expects (batch, patches, classes), got shape {tuple(probs.shape)}")
    if min_spread is None or min_spread <= 0:
        return torch.ones(probs.shape[:2], dtype=torch.bool, device=probs.device)
    keep = (probs.amax(dim=-1) - probs.amin(dim=-1)) >= min_spread
    return torch.where(keep.any(dim=1, keepdim=True), keep, torch.ones_like(keep))


def patch_vote(
    patch_probs: ArrayLike, rule: PatchRule = "mean", min_spread: float | None = DEFAULT_MIN_SPREAD
) -> Tensor:
    """Combine per-patch probabilities ``(B, P, C)`` into image probabilities ``(B, C)``.

    Patches whose max-min probability is below ``min_spread`` are ignored (the released code's
    confidence filter); when every patch of an image is below it, all its patches are used.
    ``rule="mean"`` averages (method 2/3); ``rule="max"`` takes the per-class maximum over the
    kept patches and renormalises (the paper's "2(Max)/3(Max)" ablation).
    """
    probs = as_float_tensor(patch_probs)
    keep = kept_patches(probs, min_spread)
    if rule == "mean":
        weights = keep.to(probs.dtype).unsqueeze(-1)
        return (probs * weights).sum(dim=1) / weights.sum(dim=1)
    if rule == "max":
        masked = probs.masked_fill(~keep.unsqueeze(-1), float("-inf"))
        return normalise_rows(masked.amax(dim=1))
    raise ValueError(f"unknown patch vote rule {rule!r}; use 'mean' or 'max'")


def fuse_branches(local_probs: ArrayLike, global_probs: ArrayLike, weight: float = DEFAULT_FUSION_WEIGHT) -> Tensor:
    """Hybrid fusion ``P = weight * P_local + (1 - weight) * P_global`` (paper A, eq. 1)."""
    if not 0.0 <= weight <= 1.0:
        raise ValueError(f"fusion weight must be in [0, 1], got {weight}")
    return weight * as_float_tensor(local_probs) + (1.0 - weight) * as_float_tensor(global_probs)
