"""What every pipeline needs from a config before training: records, classes, splits, a stain target.

- :func:`experiment_records`: read ``data.root`` (any layout), keep ``data.magnification``, map
  labels to the task's classes (``data.task`` / ``data.label_map``) in a fixed class order.
- :func:`experiment_splits`: the evaluation protocol's rounds: BreaKHis's official folds,
  contiguous image-number folds for BACH, patient-disjoint folds otherwise, or a saved split file;
  every split is checked for patient leakage when built.
- :func:`validation_split`: a patient-disjoint validation subset of a fold's training images.
- :func:`fit_stain_normalizer`: the stain target of ``preprocess.stain`` (a reference image, a saved
  target, or ``train``: a typical training image).
- :func:`train_network`: build a registered network (seeded) and train it with the one engine.
- :func:`average_over_views`: test-time augmentation, any prediction function averaged over views.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import Dataset

from histobreast.data.bach import BACH_BINARY, BACH_BINARY_CLASSES, BACH_CLASSES
from histobreast.data.breakhis import BREAKHIS_CLASSES, BREAKHIS_SUBTYPES, read_breakhis_folds
from histobreast.data.config import DataConfig
from histobreast.data.imageio import read_rgb
from histobreast.data.readers import class_names, detect_kind, read_dataset
from histobreast.data.records import ImageRecord, relabel
from histobreast.data.splits import (
    Split,
    bagging_splits,
    contiguous_folds,
    patient_split,
    read_splits_csv,
)
from histobreast.engine.trainer import FitResult, Trainer
from histobreast.errors import ConfigError, DatasetError
from histobreast.models import create_model
from histobreast.pipelines.config import ExperimentConfig
from histobreast.preprocess.config import AugmentConfig
from histobreast.preprocess.stain import (
    ReinhardNormalizer,
    StainError,
    StainNormalizer,
    create_normalizer,
    load_normalizer,
)
from histobreast.preprocess.views import average_over_views, read_view, view_reader  # noqa: F401 (the pipelines' TTA)
from histobreast.seeding import derive_seed, seed_everything

log = logging.getLogger(__name__)

# data.task values with a built-in label mapping: (dataset kind, mapping or record field, classes).
TASKS = {
    ("bach", "binary"): (BACH_BINARY, list(BACH_BINARY_CLASSES)),  # System A: normal+benign vs in situ+invasive
    ("bach", "multiclass"): ({c: c for c in BACH_CLASSES}, list(BACH_CLASSES)),  # the challenge's 4 classes
    ("breakhis", "binary"): ({c: c for c in BREAKHIS_CLASSES}, list(BREAKHIS_CLASSES)),  # benign vs malignant
    ("breakhis", "subtype"): ("subtype", list(BREAKHIS_SUBTYPES)),  # BreaKHis's 8-class task
}
# data.split values: the protocol of each dataset kind under "official".
SPLIT_SCHEMES = ("official", "contiguous", "patient")
# Images the "train" stain target compares before picking the most typical one.
STAIN_CANDIDATES = 16


def dataset_kind(cfg: ExperimentConfig) -> str:
    """The layout of ``data.root`` (``synthetic`` trees have a real layout and are detected)."""
    if not cfg.data.root:
        raise ConfigError("data.root: no dataset folder given (set data.root or pass --data)")
    kind = cfg.data.kind
    return detect_kind(cfg.data.root) if kind in ("auto", "synthetic") else kind


def data_settings_for(cfg: ExperimentConfig, data: str | Path) -> DataConfig:
    """``cfg.data`` for new test images at ``data``: a tree of another layout (a BreaKHis model on a
    class-per-folder tree) is read as that layout, without the magnification or task only BreaKHis has."""
    kind = detect_kind(data)
    if cfg.data.kind in ("auto", "synthetic", kind):
        settings = dataclasses.replace(cfg.data, root=str(data), kind="auto")
    else:
        settings = dataclasses.replace(cfg.data, root=str(data), kind="auto", label_map={})
    if kind != "breakhis":
        settings = dataclasses.replace(settings, magnification=None)
    if settings.task is not None and (kind, settings.task) not in TASKS:
        settings = dataclasses.replace(settings, task=None)  # the model's class names are the labels to find
    return settings


def experiment_records(cfg: ExperimentConfig) -> tuple[list[ImageRecord], list[str]]:
    """The experiment's labelled records and class order (class index = position)."""
    data = cfg.data
    kind = dataset_kind(cfg)
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


def check_model_builds(cfg: ExperimentConfig) -> None:
    """Build ``cfg.model`` once before any data is read, so a wrong ``model.kwargs`` key fails first, by name."""
    from histobreast.pipelines import get_pipeline  # the pipeline says which kwargs reach the network

    split = getattr(get_pipeline(cfg.pipeline), "split_kwargs", None)
    kwargs = split(cfg)[0] if split is not None else cfg.model.kwargs
    try:
        with torch.device("meta"):  # shapes only: no memory, no initialisation cost
            create_model(cfg.model.name, num_classes=cfg.model.num_classes or 2, **kwargs)
    except (TypeError, ValueError) as err:
        raise ConfigError(f"model.kwargs: {cfg.model.name!r} cannot be built with {cfg.model.kwargs} ({err})") from err


def require_two_classes(records: Sequence[ImageRecord], classes: Sequence[str], root: object) -> None:
    """Refuse to train on data holding images of fewer than two classes (a one-class model scores 1.000)."""
    present = sorted({r.label for r in records})
    if len(present) < 2:
        empty = [c for c in classes if c not in present]
        raise DatasetError(
            f"{root}: only class {present[0] if present else 'none'} has images"
            f"{f' ({empty} have none)' if empty else ''}; a classifier needs images of at least two classes"
        )


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
                split, name=f"fold{j}", subsets={i: "test" if s == "val" else s for i, s in split.subsets.items()}
            )
        )
    return folds


def _original_labels(records: Sequence[ImageRecord]) -> list[ImageRecord]:
    return [dataclasses.replace(r, label=r.extra.get("original_label", r.label)) for r in records]


def experiment_splits(cfg: ExperimentConfig, records: Sequence[ImageRecord]) -> list[Split]:
    """Every round of the experiment's protocol (``fold1`` ...), subsets ``train`` and ``test``.

    ``data.folds_file`` (a splits.csv, a dsfoldN.txt or a Folds.csv) wins; otherwise
    ``data.split``: ``official`` = BreaKHis's dsfold files under ``data.root`` (or its mkfold/),
    contiguous image-number folds for BACH (neighbouring images share a patient), patient folds
    for other trees; ``contiguous`` and ``patient`` force those schemes (``data.n_folds`` rounds).
    """
    data = cfg.data
    if data.split not in SPLIT_SCHEMES:
        raise ConfigError(f"data.split: must be one of {', '.join(SPLIT_SCHEMES)}, got {data.split!r}")
    if data.folds_file:
        path = Path(data.folds_file)
        if not path.exists():
            raise ConfigError(f"data.folds_file: {path} not found")
        splits = (
            read_splits_csv(path) if path.suffix == ".csv" and path.name != "Folds.csv" else read_breakhis_folds(path)
        )
        return _restricted(splits, records, str(path))
    kind = dataset_kind(cfg)
    scheme = data.split
    if scheme == "official":
        scheme = {"breakhis": "official", "bach": "contiguous"}.get(kind, "patient")
    if scheme == "official":
        return _restricted(read_breakhis_folds(data.root), records, f"{data.root} (official folds)")  # type: ignore[arg-type]
    if scheme == "contiguous":
        # Image numbers run per original class (BACH's b001.. and is001..), so contiguity is cut there.
        return contiguous_folds(_original_labels(records), data.n_folds)
    return _patient_folds(records, data.n_folds, cfg.seed)


def training_subsets(
    cfg: ExperimentConfig, records: Sequence[ImageRecord], k: int, contiguous: bool | None = None
) -> list[Split]:
    """k patient-disjoint subsets of a training set, as k splits ``bag<j>`` (``val`` = subset j,
    ``train`` = the others): contiguous image-number ranges per original class where ``contiguous``
    (default: for BACH, whose neighbouring images share a patient), else seeded patient groups."""
    if contiguous is None:
        contiguous = dataset_kind(cfg) == "bach"
    if not contiguous:
        return bagging_splits(records, k, seed=cfg.seed)
    # Image numbers run per original class (BACH: b001..., is001...), so contiguous ranges are cut
    # there, not in a task class that merges two numberings (the splits hold ids and patients only).
    return bagging_splits(_original_labels(records), k, seed=cfg.seed, contiguous=True)


def validation_split(
    cfg: ExperimentConfig, train_records: Sequence[ImageRecord], fold: int = 1
) -> tuple[list[ImageRecord], list[ImageRecord]]:
    """``(train, val)``: ``data.val_fraction`` of the images as whole patients (0: no validation)."""
    fraction = cfg.data.val_fraction
    train_records = list(train_records)
    if fraction == 0:
        return train_records, []
    split = patient_split(
        train_records,
        {"train": 1.0 - fraction, "val": fraction},
        seed=cfg.seed * 1000 + fold,
        name=f"fold{fold}-validation",
    )
    return split.select(train_records, "train"), split.select(train_records, "val")


def select_split(split: Split, records: Sequence[ImageRecord], subset: str) -> list[ImageRecord]:
    """``split.select`` that returns [] for a subset the split does not have."""
    return split.select(records, subset) if subset in split.subset_names else []


def _typical_image(cfg: ExperimentConfig, records: Sequence[ImageRecord]) -> tuple[ImageRecord, np.ndarray]:
    """The training image whose tissue LAB statistics are nearest the median of up to 16 seeded picks."""
    rng = np.random.default_rng(cfg.seed)
    picks = [records[i] for i in sorted(rng.choice(len(records), min(STAIN_CANDIDATES, len(records)), replace=False))]
    stats, images = [], []
    for record in picks:
        image = read_rgb(record.path)
        try:
            fitted = ReinhardNormalizer().fit(image)
        except StainError:
            continue
        stats.append(np.concatenate([fitted.target_mean, fitted.target_std]))  # type: ignore[list-item]
        images.append((record, image))
    if not images:
        raise StainError(f"preprocess.stain.target 'train': none of {len(picks)} training images has enough tissue")
    stats_array = np.array(stats)
    scale = stats_array.std(axis=0) + 1e-6
    distance = np.abs((stats_array - np.median(stats_array, axis=0)) / scale).sum(axis=1)
    return images[int(np.argmin(distance))]


def fit_stain_normalizer(cfg: ExperimentConfig, train_records: Sequence[ImageRecord]) -> StainNormalizer | None:
    """The fitted normaliser of ``preprocess.stain`` (None for ``method: none``).

    ``target`` is a reference image, a target JSON saved by ``histobreast stain fit`` (its method
    must match), or ``train``: fitted on the most typical of up to 16 seeded training images
    (nearest the median tissue colour statistics), never on a test image.
    """
    stain = cfg.preprocess.stain
    if stain.method == "none":
        return None
    target = stain.target or "train"
    if target == "train":
        record, image = _typical_image(cfg, list(train_records))
        log.info("stain target: %s fitted on training image %s", stain.method, record.path)
        return create_normalizer(stain.method, stain.pixels).fit(image)
    path = Path(target)
    if not path.is_file():
        raise ConfigError(f"preprocess.stain.target: {path} not found")
    if path.suffix.lower() == ".json":
        normalizer = load_normalizer(path)
        if normalizer.method != stain.method:
            raise ConfigError(
                f"preprocess.stain.target: {path} holds a {normalizer.method} target, "
                f"but preprocess.stain.method is {stain.method}"
            )
        if isinstance(normalizer, ReinhardNormalizer) and normalizer.pixels != stain.pixels:
            raise ConfigError(
                f"preprocess.stain.target: {path} was fitted on {normalizer.pixels} pixels, "
                f"but preprocess.stain.pixels is {stain.pixels}"
            )
        return normalizer
    try:
        return create_normalizer(stain.method, stain.pixels).fit(read_rgb(path))
    except StainError as err:
        raise StainError(f"preprocess.stain.target {path}: {err}") from None


def augment_config(cfg: ExperimentConfig) -> AugmentConfig | None:
    """``preprocess.augment`` when it changes anything, else None (no augmentation work per item)."""
    return cfg.preprocess.augment if cfg.preprocess.augment.active else None


def eval_batch_size(cfg: ExperimentConfig) -> int:
    """Images per inference batch: ``evaluate.batch_size``, else ``train.eval_batch_size``, else ``train.batch_size``."""
    return cfg.evaluate.batch_size or cfg.train.eval_batch_size or cfg.train.batch_size


def build_network(
    cfg: ExperimentConfig,
    num_classes: int,
    seed_key: int = 0,
    name: str | None = None,
    kwargs: Mapping[str, Any] | None = None,
) -> nn.Module:
    """``create_model`` for the config's network with initial weights seeded by ``(seed, seed_key)``."""
    seed_everything(derive_seed(cfg.seed, seed_key))
    kwargs = dict(cfg.model.kwargs if kwargs is None else kwargs)
    return create_model(name or cfg.model.name, num_classes=num_classes, weights=cfg.model.weights, **kwargs)


def train_network(
    cfg: ExperimentConfig,
    model: nn.Module,
    train_data: Dataset,
    val_data: Any,
    run_dir: Path,
    classes: Sequence[str],
    *,
    resume: bool,
    model_name: str | None = None,
    model_kwargs: Mapping[str, Any] | None = None,
) -> FitResult:
    """Train ``model`` in place with ``cfg.train`` (engine run folder ``run_dir``); returns the fit summary."""
    trainer = Trainer(
        model,
        cfg.train,
        seed=cfg.seed,
        run_dir=run_dir,
        model_name=model_name or cfg.model.name,
        model_kwargs=model_kwargs,
        experiment=cfg,
        metadata={"classes": list(classes)},
    )
    result = trainer.fit(train_data, val_data, resume=resume)
    model.eval()
    return result
