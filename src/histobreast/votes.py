"""Probabilities -> votes: patch voting, branch fusion, ensemble rules and view majority votes.

Every function takes class probabilities (rows sum to 1) as a tensor or array and returns a
tensor; they are pure, so the models (hybrid patch vote, fusion) and the post-hoc stages
(ensembles, six-view votes) share one implementation.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch
from torch import Tensor

ArrayLike = Tensor | np.ndarray

PatchRule = Literal["mean", "max"]
EnsembleRule = Literal["sum", "max", "majority"]

# Zhu et al.'s released vote.ipynb drops patches whose (max - min) class probability is below 0.3
# before averaging: such patches are near-uniform and carry no decision.
DEFAULT_MIN_SPREAD = 0.3
# Paper A, eq. (1): P = lambda * P_local + (1 - lambda) * P_global with lambda = 0.6.
DEFAULT_FUSION_WEIGHT = 0.6


def _as_float_tensor(x: ArrayLike) -> Tensor:
    t = torch.as_tensor(x)
    return t if t.is_floating_point() else t.float()


def _normalise_rows(scores: Tensor) -> Tensor:
    return scores / scores.sum(dim=-1, keepdim=True).clamp_min(torch.finfo(scores.dtype).tiny)


def kept_patches(patch_probs: ArrayLike, min_spread: float | None = DEFAULT_MIN_SPREAD) -> Tensor:
    """Which patches ``(B, P)`` :func:`patch_vote` counts: those whose max-min probability reaches
    ``min_spread`` (all of an image's patches when none does; all when the filter is off)."""
    probs = _as_float_tensor(patch_probs)
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
    probs = _as_float_tensor(patch_probs)
    keep = kept_patches(probs, min_spread)
    if rule == "mean":
        weights = keep.to(probs.dtype).unsqueeze(-1)
        return (probs * weights).sum(dim=1) / weights.sum(dim=1)
    if rule == "max":
        masked = probs.masked_fill(~keep.unsqueeze(-1), float("-inf"))
        return _normalise_rows(masked.amax(dim=1))
    raise ValueError(f"unknown patch vote rule {rule!r}; use 'mean' or 'max'")


def fuse_branches(local_probs: ArrayLike, global_probs: ArrayLike, weight: float = DEFAULT_FUSION_WEIGHT) -> Tensor:
    """Hybrid fusion ``P = weight * P_local + (1 - weight) * P_global`` (paper A, eq. 1)."""
    if not 0.0 <= weight <= 1.0:
        raise ValueError(f"fusion weight must be in [0, 1], got {weight}")
    return weight * _as_float_tensor(local_probs) + (1.0 - weight) * _as_float_tensor(global_probs)


def majority_vote(probs: ArrayLike) -> Tensor:
    """Majority vote over voters ``(V, N, C)`` -> labels ``(N,)``.

    Each voter votes for its arg-max class. Ties between the most-voted classes are broken by the
    larger summed probability over all voters, then by the lower class index.
    """
    p = _as_float_tensor(probs)
    if p.ndim != 3:
        raise ValueError(f"majority_vote expects (voters, samples, classes), got shape {tuple(p.shape)}")
    counts = torch.nn.functional.one_hot(p.argmax(dim=-1), p.shape[-1]).sum(dim=0)  # (N, C)
    tied = counts == counts.amax(dim=-1, keepdim=True)
    summed = p.sum(dim=0).masked_fill(~tied, float("-inf"))
    return summed.argmax(dim=-1)


def combine_members(probs: ArrayLike, rule: EnsembleRule = "sum") -> Tensor:
    """Ensemble scores ``(N, C)`` from member probabilities ``(M, N, C)``; rows sum to 1.

    ``sum`` (paper A's bagging rule) averages; ``max`` takes the per-class maximum and
    renormalises; ``majority`` returns vote fractions, with the majority_vote tie rule applied by
    adding a tie-break smaller than one vote.
    """
    p = _as_float_tensor(probs)
    if p.ndim != 3:
        raise ValueError(f"combine_members expects (members, samples, classes), got shape {tuple(p.shape)}")
    if rule == "sum":
        return p.mean(dim=0)
    if rule == "max":
        return _normalise_rows(p.amax(dim=0))
    if rule == "majority":
        n_members, _, n_classes = p.shape
        votes = torch.nn.functional.one_hot(p.argmax(dim=-1), n_classes).sum(dim=0).to(p.dtype) / n_members
        winner = majority_vote(p)
        # Nudge the tie-break winner up by less than one vote so arg-max matches majority_vote.
        votes = votes + torch.nn.functional.one_hot(winner, n_classes).to(p.dtype) * (0.5 / n_members)
        return _normalise_rows(votes)
    raise ValueError(f"unknown ensemble rule {rule!r}; use 'sum', 'max' or 'majority'")


def member_disagreement(probs: ArrayLike) -> Tensor:
    """Per-sample uncertainty of an ensemble ``(M, N, C)``: the fraction of members whose arg-max
    differs from the ensemble's majority label (0 = unanimous)."""
    p = _as_float_tensor(probs)
    winner = majority_vote(p)
    return (p.argmax(dim=-1) != winner.unsqueeze(0)).to(p.dtype).mean(dim=0)
