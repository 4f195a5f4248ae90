"""A ``data`` section's labelled records: dataset layout, the task's label mapping, the class order.

:func:`experiment_records` reads ``data.root`` (any layout), keeps ``data.magnification``, maps
labels to the task's classes (``data.task`` / ``data.label_map``) in a fixed class order;
:func:`data_settings_for` adapts a model's ``data`` section to a folder of new test images.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path

from histobreast.data.bach import BACH_BINARY, BACH_BINARY_CLASSES, BACH_CLASSES
from histobreast.data.breakhis import BREAKHIS_CLASSES, BREAKHIS_SUBTYPES
from histobreast.data.config import DataConfig
from histobreast.data.readers import class_names, detect_kind, read_dataset
from histobreast.data.records import ImageRecord, relabel
from histobreast.errors import ConfigError, DatasetError

# data.task values with a built-in label mapping: (dataset kind, mapping or record field, classes).
TASKS = {
    ("bach", "binary"): (BACH_BINARY, list(BACH_BINARY_CLASSES)),  # System A: normal+benign vs in situ+invasive
    ("bach", "multiclass"): ({c: c for c in BACH_CLASSES}, list(BACH_CLASSES)),  # the challenge's 4 classes
    ("breakhis", "binary"): ({c: c for c in BREAKHIS_CLASSES}, list(BREAKHIS_CLASSES)),  # benign vs malignant
    ("breakhis", "subtype"): ("subtype", list(BREAKHIS_SUBTYPES)),  # BreaKHis's 8-class task
}


def dataset_kind(data: DataConfig) -> str:
    """The layout of ``data.root`` (``synthetic`` trees have a real layout and are detected)."""
    if not data.root:
        raise ConfigError("data.root: no dataset folder given (set data.root or pass --data)")
    return detect_kind(data.root) if data.kind in ("auto", "synthetic") else data.kind


def data_settings_for(data: DataConfig, root: str | Path) -> DataConfig:
    """``data`` for new test images at ``root``: a tree of another layout (a BreaKHis model on a
    class-per-folder tree) is read as that layout, without the magnification or task only BreaKHis has."""
    kind = detect_kind(root)
    if data.kind in ("auto", "synthetic", kind):
        settings = dataclasses.replace(data, root=str(root), kind="auto")
    else:
        settings = dataclasses.replace(data, root=str(root), kind="auto", label_map={})
    if kind != "breakhis":
        settings = dataclasses.replace(settings, magnification=None)
    if settings.task is not None and (kind, settings.task) not in TASKS:
        settings = dataclasses.replace(settings, task=None)  # the model's class names are the labels to find
    return settings


def experiment_records(data: DataConfig) -> tuple[list[ImageRecord], list[str]]:
    """The labelled records of ``data`` and their class order (class index = position)."""
    kind = dataset_kind(data)
    options: dict[str, object] = {}
    if data.microns_per_pixel is not None:
        options["microns_per_pixel"] = data.microns_per_pixel
    if data.magnification is not None:
        if kind != "breakhis":
            raise ConfigError(f"data.magnification: only BreaKHis has magnifications, but {data.root} is a {kind} tree")
        options["magnifications"] = [data.magnification]
    records = read_dataset(data.root, kind, **options)  # type: ignore[arg-type]
    classes = list(data.classes)
    if data.label_map:
        records = relabel(records, data.label_map)
    elif data.task is not None:
        if (kind, data.task) not in TASKS:
            known = ", ".join(f"{t} ({k})" for k, t in TASKS)
            raise ConfigError(
                f"data.task: {data.task!r} is not known for {kind} data; known: {known}, or give data.label_map"
            )
        mapping, task_classes = TASKS[(kind, data.task)]
        records = relabel(records, (lambda r: getattr(r, mapping)) if isinstance(mapping, str) else mapping)
        classes = classes or task_classes
    classes = classes or class_names(records)
    unknown = sorted({r.label for r in records} - set(classes))
    if unknown:
        raise ConfigError(f"data.classes: labels {unknown} of {data.root} are not among the classes {classes}")
    return records, classes


def require_two_classes(records: Sequence[ImageRecord], classes: Sequence[str], root: object) -> None:
    """Refuse to train on data holding images of fewer than two classes (a one-class model scores 1.000)."""
    present = sorted({r.label for r in records})
    if len(present) < 2:
        empty = [c for c in classes if c not in present]
        raise DatasetError(
            f"{root}: only class {present[0] if present else 'none'} has images"
            f"{f' ({empty} have none)' if empty else ''}; a classifier needs images of at least two classes"
        )
