"""Probabilities -> votes: ensemble rules, majority votes and System B's per-view / per-image tables.

Every rule takes class probabilities (rows sum to 1) as a tensor or array and returns a tensor.
System A's in-model patch vote and branch fusion live with the model
(:mod:`histobreast.models.fusion`) and are re-exported here, so the hybrid network and the post-hoc
stages share one implementation. :func:`view_predictions` and :func:`image_predictions` turn a
:class:`~histobreast.datasets.key_regions.KeyRegionDataset`'s per-sample probabilities into
patch-level (one row per view) and image-level (six-view majority vote) ``Predictions``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

import numpy as np
import torch
from torch import Tensor

from histobreast.models.fusion import (
    DEFAULT_FUSION_WEIGHT,
    DEFAULT_MIN_SPREAD,
    ArrayLike,
    PatchRule,
    as_float_tensor,
    fuse_branches,
    kept_patches,
    normalise_rows,
    patch_vote,
)
from histobreast.predictions import Predictions
from histobreast.preprocess.views import view_box_to_raw

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

EnsembleRule = Literal["sum", "max", "majority"]


def majority_vote(probs: ArrayLike) -> Tensor:
    """Majority vote over voters ``(V, N, C)`` -> labels ``(N,)``.

    Each voter votes for its arg-max class. Ties between the most-voted classes are broken by the
    larger summed probability over all voters, then by the lower class index.
    """
    p = as_float_tensor(probs)
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
    p = as_float_tensor(probs)
    if p.ndim != 3:
        raise ValueError(f"combine_members expects (members, samples, classes), got shape {tuple(p.shape)}")
    if rule == "sum":
        return p.mean(dim=0)
    if rule == "max":
        return normalise_rows(p.amax(dim=0))
    if rule == "majority":
        n_members, _, n_classes = p.shape
        votes = torch.nn.functional.one_hot(p.argmax(dim=-1), n_classes).sum(dim=0).to(p.dtype) / n_members
        winner = majority_vote(p)
        # Nudge the tie-break winner up by less than one vote so arg-max matches majority_vote.
        votes = votes + torch.nn.functional.one_hot(winner, n_classes).to(p.dtype) * (0.5 / n_members)
        return normalise_rows(votes)
    raise ValueError(f"unknown ensemble rule {rule!r}; use 'sum', 'max' or 'majority'")


def member_disagreement(probs: ArrayLike) -> Tensor:
    """Per-sample uncertainty of an ensemble ``(M, N, C)``: the fraction of members whose arg-max
    differs from the ensemble's majority label (0 = unanimous)."""
    p = as_float_tensor(probs)
    winner = majority_vote(p)
    return (p.argmax(dim=-1) != winner.unsqueeze(0)).to(p.dtype).mean(dim=0)


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
    voters = [torch.from_numpy(probs[s][kept[s]]).unsqueeze(1) for s in dataset.image_slices]  # each (V, 1, C)
    image_probs = (
        np.stack([combine_members(p, "majority")[0].numpy() for p in voters])
        if voters
        else np.zeros((0, len(dataset.classes)))
    )
    disagreement = np.array([float(member_disagreement(p)[0]) for p in voters])
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
