"""Probabilities -> votes: ensemble rules, majority votes and System B's per-view / per-image tables.

Every rule takes class probabilities (rows sum to 1) as a tensor or array and returns a tensor; the
rules themselves are :mod:`histobreast.vote_rules` (numpy, shared with the torch-free ONNX runtime).
System A's in-model patch vote and branch fusion (:mod:`histobreast.models.fusion`) are re-exported
here. :func:`view_predictions` and :func:`image_predictions` turn a
:class:`~histobreast.datasets.key_regions.KeyRegionDataset`'s per-sample probabilities into
patch-level (one row per view) and image-level (six-view majority vote) ``Predictions``.
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
from histobreast.predictions import Predictions
from histobreast.preprocess.views import view_box_to_raw
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
    """Patch-level results: one row per sample (``<image_id>/<view>``, plus ``/<rank>`` when a view
    has several regions), from per-sample probabilities ``(len(dataset), C)``.

    ``max_regions=n`` keeps only each view's ``n`` densest regions: with ``n = 1`` a dataset of
    several regions per view also gives the paper's test protocol (the densest region per view).
    ``extra`` holds each row's level-1 window in the raw image's pixels (``region_x``, ``region_y``,
    ``region_w``, ``region_h``): where that voter looked.
    """
    probs = _check_probs(dataset, probs)
    kept = _kept_samples(dataset, max_regions)
    probs = probs[kept]
    shown = dataset.regions_per_view if max_regions is None else np.minimum(dataset.regions_per_view, max_regions)
    ids, patients, mags, paths, boxes = [], [], [], [], []
    for j, v, r in zip(dataset.sample_image[kept], dataset.sample_view[kept], dataset.sample_region[kept]):
        record = dataset.records[j]
        suffix = f"/{r}" if shown[j] > 1 else ""
        ids.append(f"{record.image_id}/{dataset.views[v]}{suffix}")
        patients.append(record.patient_id)
        mags.append(record.magnification)
        paths.append(str(record.path))
        boxes.append(view_box_to_raw(dataset.regions(j, v)[r].boxes[0], dataset.views[v], dataset.image_sizes[j]))
    corners = np.array(boxes, dtype=np.float64).reshape(-1, 4)
    return Predictions(
        classes=dataset.classes,
        image_ids=ids,
        probs=probs,
        labels=dataset.targets[dataset.sample_image[kept]],
        patient_ids=patients,
        magnifications=mags,
        paths=paths,
        extra={f"region_{c}": corners[:, k] for k, c in enumerate("xywh")},
    )


def image_predictions(
    dataset: KeyRegionDataset, probs: np.ndarray | Tensor, max_regions: int | None = None
) -> Predictions:
    """Image-level results: each image's samples (its six views, each with its regions) vote by majority.

    ``probs`` are vote fractions (the winner nudged up by half a vote on a tie, so the arg-max is
    :func:`histobreast.votes.majority_vote`'s label: ties go to the larger summed probability, then
    the lower class index); ``extra["view_disagreement"]`` is the share of voters outvoted.
    ``max_regions=n``: only each view's ``n`` densest regions vote (see :func:`view_predictions`).
    """
    probs = _check_probs(dataset, probs)
    kept = _kept_samples(dataset, max_regions)
    voters = [probs[s][kept[s]][:, None] for s in dataset.image_slices]  # each (V, 1, C)
    image_probs = (
        np.stack([vote_rules.combine_members(p, "majority")[0] for p in voters])
        if voters
        else np.zeros((0, len(dataset.classes)))
    )
    disagreement = np.array([float(vote_rules.member_disagreement(p)[0]) for p in voters])
    return Predictions(
        classes=dataset.classes,
        image_ids=[r.image_id for r in dataset.records],
        probs=image_probs,
        labels=dataset.targets,
        patient_ids=[r.patient_id for r in dataset.records],
        magnifications=[r.magnification for r in dataset.records],
        paths=[str(r.path) for r in dataset.records],
        extra={"view_disagreement": disagreement},
    )


def _kept_samples(dataset: KeyRegionDataset, max_regions: int | None) -> np.ndarray:
    """Boolean mask over the samples: those among their view's ``max_regions`` densest (all: None)."""
    if max_regions is None:
        return np.ones(len(dataset), dtype=bool)
    if max_regions < 1:
        raise ValueError(f"max_regions must be >= 1, got {max_regions}")
    return dataset.sample_region < max_regions


def _check_probs(dataset: KeyRegionDataset, probs: np.ndarray | Tensor) -> np.ndarray:
    array = probs.detach().cpu().double().numpy() if isinstance(probs, Tensor) else np.asarray(probs, dtype=np.float64)
    if array.shape != (len(dataset), len(dataset.classes)):
        raise ValueError(
            f"expected probabilities of shape ({len(dataset)}, {len(dataset.classes)}) "
            f"(one row per sample), got {array.shape}"
        )
    return array
