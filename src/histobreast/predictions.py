"""``Predictions``: the table that joins model outputs to records (one row per image).

Evaluation writes it as ``predictions.csv``; metrics, ensembles and reports read it, so every
number in a report can be recomputed from the file alone. :func:`combine_predictions` votes an
ensemble's member tables, and :func:`view_table` / :func:`vote_table` are System B's per-view and
six-view-vote tables (all torch-free: the ONNX runtime builds its tables with them too).
"""

from __future__ import annotations

import csv
import io
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import numpy as np

from histobreast.atomic import atomic_path
from histobreast.data.records import ImageRecord
from histobreast.errors import CheckpointError, ConfigError, DatasetError
from histobreast.preprocess.views import view_box_to_raw
from histobreast.textfiles import read_user_text
from histobreast.vote_rules import EnsembleRule, combine_members, member_disagreement

if TYPE_CHECKING:
    from histobreast.preprocess.krem import KeyRegion


@dataclass
class Predictions:
    """Class probabilities for ``N`` images plus their ids, true labels, patients and magnifications.

    ``labels`` holds true class indices into ``classes`` (-1 where unknown, e.g. ``predict`` on
    unlabelled images). ``extra`` holds optional per-image columns (e.g. ``uncertainty``).
    """

    classes: list[str]
    image_ids: list[str]
    probs: np.ndarray
    labels: np.ndarray
    patient_ids: list[str]
    magnifications: list[int | None] = field(default_factory=list)
    paths: list[str] = field(default_factory=list)
    extra: dict[str, np.ndarray] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.probs = np.asarray(self.probs, dtype=np.float64)
        self.labels = np.asarray(self.labels, dtype=np.int64)
        n = len(self.image_ids)
        if not self.magnifications:
            self.magnifications = [None] * n
        if not self.paths:
            self.paths = [""] * n
        if self.probs.shape != (n, len(self.classes)):
            raise ValueError(f"probs has shape {self.probs.shape}, expected ({n}, {len(self.classes)})")
        for name, col in [
            ("labels", self.labels),
            ("patient_ids", self.patient_ids),
            ("magnifications", self.magnifications),
            ("paths", self.paths),
        ]:
            if len(col) != n:
                raise ValueError(f"{name} has {len(col)} rows, expected {n}")

    def __len__(self) -> int:
        return len(self.image_ids)

    @property
    def predicted(self) -> np.ndarray:
        """Predicted class index per image (arg-max of ``probs``)."""
        return self.probs.argmax(axis=1)

    def subset(self, mask: np.ndarray | Sequence[bool]) -> Predictions:
        """Rows where ``mask`` is true (e.g. one magnification)."""
        idx = np.flatnonzero(np.asarray(mask, dtype=bool))
        return Predictions(
            classes=list(self.classes),
            image_ids=[self.image_ids[i] for i in idx],
            probs=self.probs[idx],
            labels=self.labels[idx],
            patient_ids=[self.patient_ids[i] for i in idx],
            magnifications=[self.magnifications[i] for i in idx],
            paths=[self.paths[i] for i in idx],
            extra={k: v[idx] for k, v in self.extra.items()},
        )

    def to_csv(self, path: str | Path) -> Path:
        """Write atomically: image_id, path, patient_id, magnification, label, predicted, p_<class>..."""
        path = Path(path)
        with atomic_path(path) as tmp, tmp.open("w", newline="") as fh:
            w = csv.writer(fh)
            w.writerow(
                ["image_id", "path", "patient_id", "magnification", "label", "predicted"]
                + [f"p_{c}" for c in self.classes]
                + list(self.extra)
            )
            pred = self.predicted
            for i in range(len(self)):
                w.writerow(
                    [
                        self.image_ids[i],
                        self.paths[i],
                        self.patient_ids[i],
                        "" if self.magnifications[i] is None else self.magnifications[i],
                        self.classes[self.labels[i]] if self.labels[i] >= 0 else "",
                        self.classes[pred[i]],
                        *[repr(float(p)) for p in self.probs[i]],  # exact: re-scoring must not tie probabilities
                        *[f"{self.extra[k][i]:.6f}" for k in self.extra],
                    ]
                )
        return path

    @classmethod
    def from_csv(cls, path: str | Path) -> Predictions:
        """Read a file written by :meth:`to_csv`; errors name the file and line."""
        path = Path(path)
        if not path.is_file():
            raise DatasetError(f"{path}: predictions file not found")
        with io.StringIO(read_user_text(path), newline="") as fh:
            reader = csv.DictReader(fh)
            cols = reader.fieldnames or []
            classes = [c[2:] for c in cols if c.startswith("p_")]
            fixed = {"image_id", "path", "patient_id", "magnification", "label", "predicted"}
            extra_cols = [c for c in cols if c not in fixed and not c.startswith("p_")]
            if not classes or not {"image_id", "label"} <= set(cols):
                raise DatasetError(f"{path}: not a predictions file (needs image_id, label, p_<class> columns)")
            rows = list(reader)
        for line, row in enumerate(rows, start=2):
            if None in row or None in row.values():  # csv.DictReader's marks of a short or long row
                found = sum(row.get(c) is not None for c in cols) + len(row.get(None, []))
                raise DatasetError(
                    f"{path}: line {line} has {found} values for {len(cols)} columns (truncated or corrupt file)"
                )
        try:
            table = cls(
                classes=classes,
                image_ids=[r["image_id"] for r in rows],
                probs=np.array([[float(r[f"p_{c}"]) for c in classes] for r in rows]).reshape(len(rows), len(classes)),
                labels=np.array([classes.index(r["label"]) if r["label"] else -1 for r in rows]),
                patient_ids=[r.get("patient_id", "") for r in rows],
                magnifications=[int(r["magnification"]) if r.get("magnification") else None for r in rows],
                paths=[r.get("path", "") for r in rows],
                extra={c: np.array([float(r[c]) for r in rows]) for c in extra_cols},
            )
        except ValueError as err:
            raise DatasetError(f"{path}: malformed predictions file ({err})") from err
        bad = np.flatnonzero(~np.all(np.isfinite(table.probs) & (table.probs >= 0) & (table.probs <= 1), axis=1))
        if bad.size:
            row = table.probs[bad[0]].tolist()
            raise DatasetError(
                f"{path}: line {bad[0] + 2} ({table.image_ids[bad[0]]}) has probabilities {row}; "
                f"each must be a number in [0, 1] ({bad.size} such row(s))"
            )
        return table


def concat_predictions(parts: Sequence[Predictions]) -> Predictions:
    """Rows of several prediction tables (same classes) in order, e.g. the folds of a run pooled.

    ``extra`` keeps the columns that every part has (as :meth:`Predictions.subset` keeps them); a
    column only some parts have cannot be filled for the others' rows, so it is left out.
    """
    if not parts:
        raise ValueError("concat_predictions needs at least one table")
    classes = parts[0].classes
    for part in parts[1:]:
        if part.classes != classes:
            raise DatasetError(f"cannot pool predictions with classes {part.classes} and {classes}")
    shared = [k for k in parts[0].extra if all(k in p.extra for p in parts[1:])]
    return Predictions(
        classes=list(classes),
        image_ids=[i for p in parts for i in p.image_ids],
        probs=np.concatenate([p.probs for p in parts]),
        labels=np.concatenate([p.labels for p in parts]),
        patient_ids=[i for p in parts for i in p.patient_ids],
        magnifications=[m for p in parts for m in p.magnifications],
        paths=[s for p in parts for s in p.paths],
        extra={k: np.concatenate([p.extra[k] for p in parts]) for k in shared},
    )


def predictions_from_records(
    records: Sequence[ImageRecord],
    probs: np.ndarray,
    classes: Sequence[str],
    label_map: Mapping[str, str] | None = None,
) -> Predictions:
    """A :class:`Predictions` table from records (in ``probs`` row order).

    A record's label (mapped through ``label_map`` when given, e.g. BACH's four classes to the
    binary task) that is not one of ``classes`` gets label index -1 (unknown).
    """
    if len(records) != len(probs):
        raise ValueError(f"{len(records)} records but {len(probs)} probability rows")
    label_map = label_map or {}
    index = {c: i for i, c in enumerate(classes)}
    labels = [index.get(label_map.get(r.label, r.label), -1) for r in records]
    return Predictions(
        classes=list(classes),
        image_ids=[r.image_id for r in records],
        probs=probs,
        labels=np.asarray(labels, dtype=np.int64),
        patient_ids=[r.patient_id for r in records],
        magnifications=[r.magnification for r in records],
        paths=[str(r.path) for r in records],
    )


def combine_predictions(members: Mapping[str, Predictions], rule: EnsembleRule = "sum") -> Predictions:
    """Vote member predictions of the same images by ``rule``; adds the per-image ``uncertainty``
    (member disagreement, 0 = unanimous)."""
    tables = list(members.values())
    if not tables:
        raise ValueError("no member predictions to combine")
    first = tables[0]
    for name, table in members.items():
        if table.classes != first.classes or table.image_ids != first.image_ids:
            raise CheckpointError(f"ensemble member {name!r} predicts other classes or images than the first member")
    stacked = np.stack([t.probs for t in tables])
    return Predictions(
        classes=list(first.classes),
        image_ids=list(first.image_ids),
        probs=combine_members(stacked, rule),
        labels=first.labels,
        patient_ids=list(first.patient_ids),
        magnifications=list(first.magnifications),
        paths=list(first.paths),
        extra={"uncertainty": member_disagreement(stacked)},
    )


def choose_method(
    methods: Mapping[str, Predictions], method: str | None, outside_training: Mapping[str, object]
) -> tuple[str, Predictions]:
    """``(name, table)`` of the method ``--method`` names (None: the headline, the first), the table
    given an ``outside_training`` column: 1 for the images named in ``outside_training``."""
    chosen = method or next(iter(methods))
    if chosen not in methods:
        raise ConfigError(f"--method: {chosen!r} is not one of this model's methods {list(methods)}")
    pred = methods[chosen]
    pred.extra["outside_training"] = np.array([float(i in outside_training) for i in pred.image_ids])
    return chosen, pred


class RegionSampleSet(Protocol):
    """System B's samples (images x views x regions, image-major): a
    :class:`~histobreast.datasets.key_regions.KeyRegionDataset` or a
    :class:`~histobreast.preprocess.key_region_samples.RegionSamples`."""

    records: list[ImageRecord]
    classes: list[str]
    views: tuple[str, ...]
    targets: np.ndarray
    image_sizes: list[tuple[int, int]]
    regions_per_view: np.ndarray
    sample_image: np.ndarray
    sample_view: np.ndarray
    sample_region: np.ndarray
    image_slices: list[slice]

    def __len__(self) -> int: ...

    def regions(self, j: int, v: int) -> list[KeyRegion]: ...


def view_table(samples: RegionSampleSet, probs: np.ndarray, max_regions: int | None = None) -> Predictions:
    """Patch-level results: one row per sample (``<image_id>/<view>``, plus ``/<rank>`` when a view
    has several regions), from per-sample probabilities ``(len(samples), C)``.

    ``max_regions=n`` keeps only each view's ``n`` densest regions: with ``n = 1`` a set of several
    regions per view also gives the paper's test protocol (the densest region per view). ``extra``
    holds each row's level-1 window in the raw image's pixels (``region_x``, ``region_y``,
    ``region_w``, ``region_h``): where that voter looked.
    """
    probs = _sample_probs(samples, probs)
    kept = _kept_samples(samples, max_regions)
    shown = samples.regions_per_view if max_regions is None else np.minimum(samples.regions_per_view, max_regions)
    ids, boxes = [], []
    rows = samples.sample_image[kept]
    for j, v, r in zip(rows, samples.sample_view[kept], samples.sample_region[kept]):
        suffix = f"/{r}" if shown[j] > 1 else ""
        ids.append(f"{samples.records[j].image_id}/{samples.views[v]}{suffix}")
        boxes.append(view_box_to_raw(samples.regions(j, v)[r].boxes[0], samples.views[v], samples.image_sizes[j]))
    corners = np.array(boxes, dtype=np.float64).reshape(-1, 4)
    return Predictions(
        classes=list(samples.classes),
        image_ids=ids,
        probs=probs[kept],
        labels=samples.targets[rows],
        patient_ids=[samples.records[j].patient_id for j in rows],
        magnifications=[samples.records[j].magnification for j in rows],
        paths=[str(samples.records[j].path) for j in rows],
        extra={f"region_{c}": corners[:, k] for k, c in enumerate("xywh")},
    )


def vote_table(samples: RegionSampleSet, probs: np.ndarray, max_regions: int | None = None) -> Predictions:
    """Image-level results: each image's samples (its six views, each with its regions) vote by majority.

    ``probs`` are vote fractions (the winner nudged up by half a vote on a tie, so the arg-max is
    :func:`histobreast.vote_rules.majority_vote`'s label: ties go to the larger summed probability,
    then the lower class index); ``extra["view_disagreement"]`` is the share of voters outvoted.
    ``max_regions=n``: only each view's ``n`` densest regions vote (see :func:`view_table`).
    """
    probs = _sample_probs(samples, probs)
    kept = _kept_samples(samples, max_regions)
    voters = [probs[s][kept[s]][:, None] for s in samples.image_slices]  # each (V, 1, C)
    image_probs = (
        np.stack([combine_members(p, "majority")[0] for p in voters]) if voters else np.zeros((0, len(samples.classes)))
    )
    return Predictions(
        classes=list(samples.classes),
        image_ids=[r.image_id for r in samples.records],
        probs=image_probs,
        labels=samples.targets,
        patient_ids=[r.patient_id for r in samples.records],
        magnifications=[r.magnification for r in samples.records],
        paths=[str(r.path) for r in samples.records],
        extra={"view_disagreement": np.array([float(member_disagreement(p)[0]) for p in voters])},
    )


def region_methods(samples: RegionSampleSet, probs: np.ndarray) -> dict[str, Predictions]:
    """System B's methods from per-sample ``probs``: ``{"image": six-view vote, "patch": one row per
    view}``, plus ``image_one_region`` / ``patch_one_region`` (the paper's densest region per view)
    when the samples hold several regions per view."""
    methods = {"image": vote_table(samples, probs), "patch": view_table(samples, probs)}
    if samples.regions_per_view.max(initial=0) > 1:
        methods["image_one_region"] = vote_table(samples, probs, max_regions=1)
        methods["patch_one_region"] = view_table(samples, probs, max_regions=1)
    return methods


def _kept_samples(samples: RegionSampleSet, max_regions: int | None) -> np.ndarray:
    """Boolean mask over the samples: those among their view's ``max_regions`` densest (all: None)."""
    if max_regions is None:
        return np.ones(len(samples), dtype=bool)
    if max_regions < 1:
        raise ValueError(f"max_regions must be >= 1, got {max_regions}")
    return samples.sample_region < max_regions


def _sample_probs(samples: RegionSampleSet, probs: np.ndarray) -> np.ndarray:
    array = np.asarray(probs, dtype=np.float64)
    if array.shape != (len(samples), len(samples.classes)):
        raise ValueError(
            f"expected probabilities of shape ({len(samples)}, {len(samples.classes)}) "
            f"(one row per sample), got {array.shape}"
        )
    return array
