"""One entry point for every dataset layout and split scheme, canonical class orders, and image checks."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from histobreast.data.bach import BACH_BINARY_CLASSES, BACH_CLASSES, find_photos_dir, read_bach
from histobreast.data.breakhis import BREAKHIS_CLASSES, BREAKHIS_SUBTYPES, TREE_PREFIX, official_folds, read_breakhis
from histobreast.data.folder import read_folder
from histobreast.data.imageio import SkipReport, image_size, raise_or_skip, read_rgb
from histobreast.data.records import SCALE_FILE, ImageRecord
from histobreast.data.splits import Split, bagging_splits, contiguous_folds, patient_split
from histobreast.errors import DatasetError, ImageReadError

DATASET_KINDS = ("breakhis", "bach", "folder")
_READERS: dict[str, Callable[..., list[ImageRecord]]] = {
    "breakhis": read_breakhis,
    "bach": read_bach,
    "folder": read_folder,
}
#: Known label sets and their canonical order (class index = position).
CLASS_ORDERS: tuple[tuple[str, ...], ...] = (BACH_CLASSES, BACH_BINARY_CLASSES, BREAKHIS_CLASSES, BREAKHIS_SUBTYPES)


def detect_kind(root: str | Path) -> str:
    """Guess a tree's layout: ``breakhis`` (a BreaKHis_v1 tree or SOB_*.png files), ``bach`` (a
    Photos folder with BACH class folders), else ``folder``."""
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"{root}: dataset folder not found")
    tree_top = TREE_PREFIX.parts[0]
    if root.name == tree_top or (root / tree_top).is_dir() or next(root.rglob("SOB_*.png"), None) is not None:
        return "breakhis"
    try:
        find_photos_dir(root)
    except DatasetError:
        return "folder"
    return "bach"


def read_dataset(root: str | Path, kind: str = "auto", **options: Any) -> list[ImageRecord]:
    """Read a dataset of any supported layout; ``options`` go to the layout's reader.

    ``kind`` is ``auto`` (see :func:`detect_kind`), ``breakhis``, ``bach`` or ``folder``.
    """
    if kind == "auto":
        kind = detect_kind(root)
    if kind not in _READERS:
        raise DatasetError(f"unknown dataset kind {kind!r}; expected auto or one of {DATASET_KINDS}")
    try:
        return _READERS[kind](root, **options)
    except TypeError as err:
        raise DatasetError(f"{kind} reader: {err}") from err


def _candidate_roots(image: Path) -> list[Path]:
    """Folders above ``image`` that may be the root of its dataset, nearest first: a BACH ``Photos``
    folder, a ``BreaKHis_v1`` tree, a folder holding ``histobreast.json``."""
    found = []
    for folder in image.parents:
        is_photos = folder.name == "Photos" and any((folder / label).is_dir() for label in BACH_CLASSES)
        if is_photos or folder.name == TREE_PREFIX.parts[0] or (folder / SCALE_FILE).is_file():
            found.append(folder)
    return found


def dataset_record(image: str | Path, root: str | Path | None = None) -> tuple[ImageRecord, Path]:
    """The record a dataset reader gives ``image`` (its µm/px, label, patient), and the root it read.

    ``root`` names the dataset; without it the nearest tree above the image whose reader lists it
    is used (see :func:`_candidate_roots`). An image no such tree lists raises :class:`DatasetError`.
    """
    image = Path(image).resolve()
    roots = [Path(root)] if root is not None else _candidate_roots(image)
    for candidate in roots:
        try:
            records = read_dataset(candidate, skip=SkipReport(), verify=False)
        except DatasetError:
            if root is not None:
                raise
            continue
        for record in records:
            if Path(record.path).resolve() == image:
                return record, candidate
    if root is not None:
        raise DatasetError(f"{image}: not an image of the dataset {root}")
    raise DatasetError(
        f"{image}: its scale is unknown: it is not inside a BACH Photos folder, a BreaKHis_v1 tree or a "
        f"folder dataset with {SCALE_FILE}; give the microns per pixel (CLI --mpp) or the dataset (--data)"
    )


def class_names(records: Iterable[ImageRecord]) -> list[str]:
    """The class order for these records: a known dataset's full canonical order, else sorted labels.

    BACH gives ``Normal, Benign, InSitu, Invasive`` even when a subset lacks a class, so class
    indices agree across splits; unknown label sets (folder datasets) are sorted.
    """
    labels = {r.label for r in records}
    for order in CLASS_ORDERS:
        if labels <= set(order):
            return list(order)
    return sorted(labels)


def check_images(
    records: Sequence[ImageRecord], skip: SkipReport | None = None, decode: bool = True
) -> list[ImageRecord]:
    """The records whose image can be read: fully decoded (``decode``, catches truncation) or header only.

    A bad image raises :class:`ImageReadError`, or is recorded in ``skip`` and left out.
    """
    check = read_rgb if decode else image_size
    good = []
    for record in records:
        try:
            check(record.path)
        except ImageReadError as err:
            raise_or_skip(err, record.path, skip)
            continue
        good.append(record)
    return good


SPLIT_SCHEMES = ("official", "contiguous", "patient", "bagging")


def make_splits(
    records: Sequence[ImageRecord],
    scheme: str,
    *,
    k: int = 5,
    seed: int = 0,
    fractions: Mapping[str, float] | None = None,
    folds_source: str | Path | None = None,
) -> list[Split]:
    """Splits of ``records`` by ``scheme``, each patient-disjoint (checked):

    - ``official``: the BreaKHis fold files at ``folds_source`` restricted to ``records``;
    - ``contiguous``: ``k`` folds of contiguous image-number ranges per class (BACH);
    - ``patient``: one stratified patient-level split by ``fractions`` (default train/val/test 0.7/0.15/0.15);
    - ``bagging``: ``k`` disjoint subsets, split j validating on subset j (contiguous ranges for BACH).
    """
    if scheme == "official":
        if folds_source is None:
            raise DatasetError("the official scheme needs the BreaKHis fold files (dsfold*.txt or Folds.csv)")
        return official_folds(records, folds_source)
    if scheme == "contiguous":
        return contiguous_folds(records, k)
    if scheme == "patient":
        return [patient_split(records, fractions, seed=seed)]
    if scheme == "bagging":
        return bagging_splits(records, k, seed, contiguous=all(r.source == "bach" for r in records))
    raise DatasetError(f"unknown split scheme {scheme!r}; expected one of {SPLIT_SCHEMES}")
