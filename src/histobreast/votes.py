"""Probabilities -> votes: ensemble rules, majority votes and System B's per-view / per-image tables.

Every rule takes class probabilities (rows sum to 1) as a tensor or array and returns a tensor; the
rules themselves are :mod:`histobreast.vote_rules` (numpy, shared with the torch-free ONNX runtime).
System A's in-model patch vote and branch fusion (:mod:`histobreast.models.fusion`) are re-exported
here. :func:`view_predictions` and :func:`image_predictions` turn a
:class:`~histobreast.datasets.key_regions.KeyRegionDataset`'s per-sample probabilities (a tensor or
an array) into patch-level (one row per view) and image-level (six-view majority vote)
``Predictions``, through the torch-free :func:`histobreast.predictions.view_table` / ``vote_table``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
from torch import Tensor

from histobreast import vote_rules
from histobreast.models.fusion import (
    DEFAULT_FUSION_WEIGHT,
    DEFAULT_MIN_SPREAD,
    ArrayLike,
    PatchRule,
    fuse_branches,
    kept_patches,
    on_arrays,
    patch_vote,
)
from histobreast.predictions import Predictions, view_table, vote_table
from histobreast.vote_rules import EnsembleRule

if TYPE_CHECKING:
    from histobreast.datasets.key_regions import KeyRegionDataset

__all__ = [
    "DEFAULT_FUSION_WEIGHT",
    "DEFAULT_MIN_SPREAD",
    "EnsembleRule",
    "PatchRule",
    "combine_members",
    "fuse_branches",
    "image_predictions",
    "kept_patches",
    "majority_vote",
    "member_disagreement",
    "patch_vote",
    "view_predictions",
]


def majority_vote(probs: ArrayLike) -> Tensor:
    """Majority vote over voters ``(V, N, C)`` -> labels ``(N,)`` (see :func:`histobreast.vote_rules.majority_vote`:
    ties go to the larger summed probability, then the lower class index)."""
    return on_arrays(vote_rules.majority_vote, probs)


def combine_members(probs: ArrayLike, rule: EnsembleRule = "sum") -> Tensor:
    """Ensemble scores ``(N, C)`` from member probabilities ``(M, N, C)`` by ``rule`` (sum, max or
    majority; see :func:`histobreast.vote_rules.combine_members`)."""
    return on_arrays(vote_rules.combine_members, probs, rule=rule)


def member_disagreement(probs: ArrayLike) -> Tensor:
    """Per-sample share of ensemble members ``(M, N, C)`` outvoted by the majority (0 = unanimous)."""
    return on_arrays(vote_rules.member_disagreement, probs)


def view_predictions(
    dataset: KeyRegionDataset, probs: np.ndarray | Tensor, max_regions: int | None = None
) -> Predictions:
    """Patch-level results, one row per sample, from per-sample probabilities ``(len(dataset), C)``
    (:func:`histobreast.predictions.view_table`)."""
    return view_table(dataset, _as_array(probs), max_regions)


def image_predictions(
    dataset: KeyRegionDataset, probs: np.ndarray | Tensor, max_regions: int | None = None
) -> Predictions:
    """Image-level results: each image's samples vote by majority (:func:`histobreast.predictions.vote_table`)."""
    return vote_table(dataset, _as_array(probs), max_regions)


def _as_array(probs: np.ndarray | Tensor) -> np.ndarray:
    return probs.detach().cpu().double().numpy() if isinstance(probs, Tensor) else np.asarray(probs, dtype=np.float64)
