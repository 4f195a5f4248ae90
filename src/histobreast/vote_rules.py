"""Every vote rule on numpy arrays: the one implementation, torch-free so the ONNX runtime shares it.

System A's patch vote and branch fusion (paper A, eq. 1) and the post-hoc rules (ensembles,
majority votes with their tie rule, member disagreement). Inputs are class probabilities (rows sum
to 1) as any array-like; floating inputs keep their dtype, integers become float32.
:mod:`histobreast.models.fusion` and :mod:`histobreast.votes` wrap these for tensors.
"""

from __future__ import annotations

from typing import Literal

import numpy as np

PatchRule = Literal["mean", "max"]
EnsembleRule = Literal["sum", "max", "majority"]

# Zhu et al.'s released vote.ipynb drops patches whose (max - min) class probability is below 0.3
# before averaging: such patches are near-uniform and carry no decision.
DEFAULT_MIN_SPREAD = 0.3
# Paper A, eq. (1): P = lambda * P_local + (1 - lambda) * P_global with lambda = 0.6.
DEFAULT_FUSION_WEIGHT = 0.6
#: System A's evaluation methods, the headline first: paper A's methods 3, 1, 2, 3 (Max), 2 (Max).
SYSTEM_A_METHODS = ("hybrid", "global", "local", "hybrid_max", "local_max")


def float_array(x: object) -> np.ndarray:
    """``x`` as a floating numpy array (integers become float32)."""
    array = np.asarray(x)
    return array if np.issubdtype(array.dtype, np.floating) else array.astype(np.float32)


def normalise_rows(scores: np.ndarray) -> np.ndarray:
    """Scale each row of non-negative scores to sum to 1 (all-zero rows stay zero)."""
    tiny = np.finfo(scores.dtype).tiny
    return scores / np.maximum(scores.sum(axis=-1, keepdims=True), tiny)


def _one_hot(indices: np.ndarray, n_classes: int, dtype: np.dtype) -> np.ndarray:
    return np.eye(n_classes, dtype=dtype)[indices]


def kept_patches(patch_probs: object, min_spread: float | None = DEFAULT_MIN_SPREAD) -> np.ndarray:
    """Which patches ``(B, P)`` :func:`patch_vote` counts: those whose max-min probability reaches
    ``min_spread`` (all of an image's patches when none does; all when the filter is off)."""
    probs = float_array(patch_probs)
    if probs.ndim != 3:
        raise ValueError(f"patch_vote expects (batch, patches, classes), got shape {tuple(probs.shape)}")
    if min_spread is None or min_spread <= 0:
        return np.ones(probs.shape[:2], dtype=bool)
    keep = (probs.max(axis=-1) - probs.min(axis=-1)) >= min_spread
    return np.where(keep.any(axis=1, keepdims=True), keep, True)


def patch_vote(
    patch_probs: object, rule: PatchRule = "mean", min_spread: float | None = DEFAULT_MIN_SPREAD
) -> np.ndarray:
    """Combine per-patch probabilities ``(B, P, C)`` into image probabilities ``(B, C)``.

    Patches whose max-min probability is below ``min_spread`` are ignored (the released code's
    confidence filter); when every patch of an image is below it, all its patches are used.
    ``rule="mean"`` averages (method 2/3); ``rule="max"`` takes the per-class maximum over the
    kept patches and renormalises (the paper's "2(Max)/3(Max)" ablation).
    """
    probs = float_array(patch_probs)
    keep = kept_patches(probs, min_spread)
    if rule == "mean":
        weights = keep.astype(probs.dtype)[..., None]
        return (probs * weights).sum(axis=1) / weights.sum(axis=1)
    if rule == "max":
        masked = np.where(keep[..., None], probs, np.array(-np.inf, dtype=probs.dtype))
        return normalise_rows(masked.max(axis=1))
    raise ValueError(f"unknown patch vote rule {rule!r}; use 'mean' or 'max'")


def fuse_branches(local_probs: object, global_probs: object, weight: float = DEFAULT_FUSION_WEIGHT) -> np.ndarray:
    """Hybrid fusion ``P = weight * P_local + (1 - weight) * P_global`` (paper A, eq. 1)."""
    if not 0.0 <= weight <= 1.0:
        raise ValueError(f"fusion weight must be in [0, 1], got {weight}")
    local, global_ = float_array(local_probs), float_array(global_probs)
    dtype = np.result_type(local, global_)
    return (weight * local + (1.0 - weight) * global_).astype(dtype, copy=False)


def system_a_methods(
    global_probs: object, patch_probs: object, fusion_weight: float, min_spread: float | None
) -> dict[str, np.ndarray]:
    """Every System A method's image probabilities (float64, see :data:`SYSTEM_A_METHODS`) from the
    global branch's ``(N, C)`` and the local branch's per-patch ``(N, P, C)`` probabilities."""
    global_ = float_array(global_probs)
    local, local_max = patch_vote(patch_probs, "mean", min_spread), patch_vote(patch_probs, "max", min_spread)
    out = {
        "hybrid": fuse_branches(local, global_, fusion_weight),
        "global": global_,
        "local": local,
        "hybrid_max": fuse_branches(local_max, global_, fusion_weight),
        "local_max": local_max,
    }
    return {name: out[name].astype(np.float64) for name in SYSTEM_A_METHODS}


def majority_vote(probs: object) -> np.ndarray:
    """Majority vote over voters ``(V, N, C)`` -> labels ``(N,)``.

    Each voter votes for its arg-max class. Ties between the most-voted classes are broken by the
    larger summed probability over all voters, then by the lower class index.
    """
    p = float_array(probs)
    if p.ndim != 3:
        raise ValueError(f"majority_vote expects (voters, samples, classes), got shape {tuple(p.shape)}")
    counts = _one_hot(p.argmax(axis=-1), p.shape[-1], np.int64).sum(axis=0)  # (N, C)
    tied = counts == counts.max(axis=-1, keepdims=True)
    summed = np.where(tied, p.sum(axis=0), -np.inf)
    return summed.argmax(axis=-1)


def combine_members(probs: object, rule: EnsembleRule = "sum") -> np.ndarray:
    """Ensemble scores ``(N, C)`` from member probabilities ``(M, N, C)``; rows sum to 1.

    ``sum`` (paper A's bagging rule) averages; ``max`` takes the per-class maximum and
    renormalises; ``majority`` returns vote fractions, with the majority_vote tie rule applied by
    adding a tie-break smaller than one vote.
    """
    p = float_array(probs)
    if p.ndim != 3:
        raise ValueError(f"combine_members expects (members, samples, classes), got shape {tuple(p.shape)}")
    if rule == "sum":
        return p.mean(axis=0)
    if rule == "max":
        return normalise_rows(p.max(axis=0))
    if rule == "majority":
        n_members, _, n_classes = p.shape
        votes = _one_hot(p.argmax(axis=-1), n_classes, p.dtype).sum(axis=0) / n_members
        # Nudge the tie-break winner up by less than one vote so arg-max matches majority_vote.
        votes = votes + _one_hot(majority_vote(p), n_classes, p.dtype) * (0.5 / n_members)
        return normalise_rows(votes.astype(p.dtype, copy=False))
    raise ValueError(f"unknown ensemble rule {rule!r}; use 'sum', 'max' or 'majority'")


def member_disagreement(probs: object) -> np.ndarray:
    """Per-sample uncertainty of an ensemble ``(M, N, C)``: the fraction of members whose arg-max
    differs from the ensemble's majority label (0 = unanimous)."""
    p = float_array(probs)
    return (p.argmax(axis=-1) != majority_vote(p)[None]).astype(p.dtype).mean(axis=0)
