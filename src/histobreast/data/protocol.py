"""The evaluation protocol of a ``data`` section: its rounds (folds), each fold's train / validation /
test images, and the patient-disjoint training subsets of bagging.

:func:`read_fold` is the one way from a config to a fold's images (records -> protocol splits ->
fold -> validation hold-out -> test); :func:`fold_records` is the same step on records and splits
already read (an experiment reads them once for all its folds). Fold names and folder names are
:func:`~histobreast.data.splits.fold_name` / :func:`~histobreast.data.splits.fold_number`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from histobreast.data.breakhis import read_breakhis_folds
from histobreast.data.config import DataConfig
from histobreast.data.records import ImageRecord
from histobreast.data.splits import Split, bagging_splits, contiguous_folds, fold_name, patient_split, read_splits_csv
from histobreast.data.task_records import dataset_kind, experiment_records
from histobreast.errors import ConfigError, DatasetError
from histobreast.seeding import derive_seed

# data.split values: the protocol of each dataset kind under "official".
PROTOCOL_SCHEMES = ("official", "contiguous", "patient")


@dataclass(frozen=True)
class Fold:
    """One round of the protocol and its images."""

    number: int  # 1-based
    split: Split
    training: list[ImageRecord]  # the split's train subset, before the validation hold-out
    train: list[ImageRecord]
    val: list[ImageRecord]  # data.val_fraction of ``training``, whole patients
    test: list[ImageRecord]  # the images evaluated: the test subset, or ``val`` when evaluating on it


def _restricted(splits: Sequence[Split], records: Sequence[ImageRecord], source: str) -> list[Split]:
    """Splits limited to ``records``; a record that a split does not mention is an error."""
    ids = [r.image_id for r in records]
    out = []
    for split in splits:
        split = split.restrict(ids)
        missing = split.unassigned(records)
        if missing:
            raise DatasetError(
                f"{source}: {split.name} does not assign {len(missing)} image(s), e.g. {missing[0].path}"
            )
        out.append(split)
    return out


def _patient_folds(records: Sequence[ImageRecord], k: int, seed: int) -> list[Split]:
    """k patient-disjoint folds stratified by label: fold j tests on part j, trains on the rest."""
    folds = []
    for j, split in enumerate(bagging_splits(records, k, seed), start=1):
        folds.append(
            dataclasses.replace(
                split, name=fold_name(j), subsets={i: "test" if s == "val" else s for i, s in split.subsets.items()}
            )
        )
    return folds


def _original_labels(records: Sequence[ImageRecord]) -> list[ImageRecord]:
    return [dataclasses.replace(r, label=r.extra.get("original_label", r.label)) for r in records]


def experiment_splits(data: DataConfig, records: Sequence[ImageRecord], seed: int) -> list[Split]:
    """Every round of the protocol (``fold1`` ...), subsets ``train`` and ``test``.

    ``data.folds_file`` (a splits.csv, a dsfoldN.txt or a Folds.csv) wins; otherwise
    ``data.split``: ``official`` = BreaKHis's dsfold files under ``data.root`` (or its mkfold/),
    contiguous image-number folds for BACH (neighbouring images share a patient), patient folds
    for other trees (seeded by ``seed``); ``contiguous`` and ``patient`` force those schemes
    (``data.n_folds`` rounds).
    """
    if data.split not in PROTOCOL_SCHEMES:
        raise ConfigError(f"data.split: must be one of {', '.join(PROTOCOL_SCHEMES)}, got {data.split!r}")
    if data.folds_file:
        path = Path(data.folds_file)
        if not path.exists():
            raise ConfigError(f"data.folds_file: {path} not found")
        splits = (
            read_splits_csv(path) if path.suffix == ".csv" and path.name != "Folds.csv" else read_breakhis_folds(path)
        )
        return _restricted(splits, records, str(path))
    kind = dataset_kind(data)
    scheme = data.split
    if scheme == "official":
        scheme = {"breakhis": "official", "bach": "contiguous"}.get(kind, "patient")
    if scheme == "official":
        return _restricted(read_breakhis_folds(data.root), records, f"{data.root} (official folds)")  # type: ignore[arg-type]
    if scheme == "contiguous":
        # Image numbers run per original class (BACH's b001.. and is001..), so contiguity is cut there.
        return contiguous_folds(_original_labels(records), data.n_folds)
    return _patient_folds(records, data.n_folds, seed)


def training_subsets(
    data: DataConfig, records: Sequence[ImageRecord], k: int, seed: int, contiguous: bool | None = None
) -> list[Split]:
    """k patient-disjoint subsets of a training set, as k splits ``bag<j>`` (``val`` = subset j,
    ``train`` = the others): contiguous image-number ranges per original class where ``contiguous``
    (default: for BACH, whose neighbouring images share a patient), else seeded patient groups."""
    if contiguous is None:
        contiguous = dataset_kind(data) == "bach"
    if not contiguous:
        return bagging_splits(records, k, seed=seed)
    # Image numbers run per original class (BACH: b001..., is001...), so contiguous ranges are cut
    # there, not in a task class that merges two numberings (the splits hold ids and patients only).
    return bagging_splits(_original_labels(records), k, seed=seed, contiguous=True)


def validation_split(
    data: DataConfig, train_records: Sequence[ImageRecord], seed: int, fold: int = 1
) -> tuple[list[ImageRecord], list[ImageRecord]]:
    """``(train, val)``: ``data.val_fraction`` of the images as whole patients (0: no validation)."""
    fraction = data.val_fraction
    train_records = list(train_records)
    if fraction == 0:
        return train_records, []
    split = patient_split(
        train_records,
        {"train": 1.0 - fraction, "val": fraction},
        seed=derive_seed(seed, fold),
        name=f"{fold_name(fold)}-validation",
    )
    return split.select(train_records, "train"), split.select(train_records, "val")


def select_split(split: Split, records: Sequence[ImageRecord], subset: str) -> list[ImageRecord]:
    """``split.select`` that returns [] for a subset the split does not have."""
    return split.select(records, subset) if subset in split.subset_names else []


def choose_folds(data: DataConfig, n_folds: int, folds: Iterable[int] | Literal["all"] | None) -> list[int]:
    """The 1-based fold numbers to run: ``"all"``, the given ones, or None (``data.fold`` if set, else all)."""
    available = list(range(1, n_folds + 1))
    if folds is None:
        folds = [data.fold] if data.fold is not None else "all"
    if folds == "all":
        return available
    chosen = sorted(set(folds))  # type: ignore[arg-type]
    bad = [f for f in chosen if f not in available]
    if bad:
        raise ConfigError(f"fold(s) {bad} do not exist; this protocol has folds 1-{n_folds}")
    return chosen


def fold_records(
    data: DataConfig,
    seed: int,
    fold: int,
    records: Sequence[ImageRecord],
    splits: Sequence[Split],
    *,
    evaluate: Literal["test", "val"] = "test",
    option: str = "fold",
) -> Fold:
    """Fold ``fold`` (1-based) of ``splits``: its training images split into train and validation,
    and the images it evaluates; ``option`` names the setting that chose the fold in errors."""
    if not 1 <= fold <= len(splits):
        raise ConfigError(f"{option} {fold}: the protocol has {len(splits)} folds")
    split = splits[fold - 1]
    training = select_split(split, records, "train")
    train, val = validation_split(data, training, seed, fold)
    test = select_split(split, records, "test") if evaluate == "test" else val
    if not test:
        raise DatasetError(f"{split.name}: no {evaluate} images to evaluate")
    return Fold(fold, split, training, train, val, test)


def read_fold(
    data: DataConfig, seed: int, fold: int, *, evaluate: Literal["test", "val"] = "test", option: str = "fold"
) -> tuple[Fold, list[str]]:
    """Fold ``fold`` of the protocol of ``data`` read from disk, and the class order."""
    records, classes = experiment_records(data)
    return fold_records(
        data, seed, fold, records, experiment_splits(data, records, seed), evaluate=evaluate, option=option
    ), classes
