"""Which images a pre-trained encoder saw, and the refusal of one that saw a test image.

``histobreast pretrain`` writes ``pretrain.json`` beside its ``encoder.safetensors``: the config,
the method, and every image the encoder was trained on (id, path, SHA-256 of the file; for a
slide's tile, the slide and the tile's box). Every path that trains networks from
``model.kwargs.encoder_weights`` (or ``model.weights``) on a fold — experiments and so the
ablation's rows, bagging (``ensemble train``), the compression study (``prune study``) — gets its
config from :func:`checked_fold_config`: it checks that none of the fold's test images is among
them (by content hash, so a copy under another name is caught too; a test image cut from a slide
the encoder saw is caught by the slide), refuses the fold otherwise, and records the encoder's
images in the fold's folder. A weights file without ``pretrain.json`` (e.g. converted ImageNet
weights) saw no images of ours; it is recorded as such.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from histobreast.atomic import atomic_write_json
from histobreast.config import read_json
from histobreast.data.records import ImageRecord
from histobreast.errors import CheckpointError, ConfigError, SplitLeakageError
from histobreast.preprocess.cache import file_fingerprint

PRETRAIN_JSON = "pretrain.json"
ENCODER_FILE = "encoder.safetensors"
#: Written into each fold folder of an experiment that starts from an encoder weights file.
FOLD_RECORD = "encoder_provenance.json"
FORMAT = "histobreast-pretrain"
FORMAT_VERSION = 1


def image_entries(records: Iterable[ImageRecord]) -> list[dict[str, Any]]:
    """``{"id", "path", "sha256"}`` of every record: what ``pretrain.json`` lists as seen.

    A slide's tile (a record with ``extra["box"]``) is ``{"id": "<slide>@x,y", "path", "sha256"}``
    of the slide file, plus ``"slide"`` (its stem) and ``"box"`` (level-0 ``[x, y, w, h]``).
    """
    entries: list[dict[str, Any]] = []
    for r in records:
        entry: dict[str, Any] = {"id": r.image_id, "path": str(r.path), "sha256": file_fingerprint(r.path)}
        box = r.extra.get("box")
        if box is not None:
            coords = [int(v) for v in box.split(",")]
            entry.update(id=f"{r.path.stem}@{coords[0]},{coords[1]}", slide=r.path.stem, box=coords)
        entries.append(entry)
    return entries


def read_provenance(weights: str | Path) -> dict[str, Any] | None:
    """The ``pretrain.json`` beside ``weights`` that describes it, or None (no record: not pre-trained here)."""
    weights = Path(weights)
    record = weights.parent / PRETRAIN_JSON
    if not record.is_file():
        return None
    info = read_json(record, "pre-training record", error=CheckpointError, format=FORMAT, version=FORMAT_VERSION)
    if info.get("weights") != weights.name:
        return None  # the record of another file in the same folder
    if not isinstance(info.get("images"), list):
        raise CheckpointError(f"{record}: 'images' must be the list of images the encoder saw")
    return info


#: In ``model.kwargs.encoder_weights``, the fold number: one pre-trained encoder per fold in cross-validation.
FOLD_FIELD = "{fold}"


def fold_start_weights(cfg: Any, fold: int | None) -> Any:
    """``cfg`` (an ``ExperimentConfig``) with ``{fold}`` in ``model.kwargs.encoder_weights`` replaced by ``fold``.

    ``fold=None`` drops a templated path (for the build check that runs before any fold is chosen).
    """
    path = cfg.model.kwargs.get("encoder_weights")
    if not isinstance(path, str) or FOLD_FIELD not in path:
        return cfg
    kwargs = dict(cfg.model.kwargs)
    if fold is None:
        del kwargs["encoder_weights"]
    else:
        kwargs["encoder_weights"] = path.replace(FOLD_FIELD, str(fold))
    return dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, kwargs=kwargs))


def start_weights(model: Any) -> list[str]:
    """The weights files an experiment's ``model`` section starts from (``kwargs.encoder_weights``, ``weights``)."""
    paths = [model.kwargs.get("encoder_weights"), model.weights]
    return [str(p) for p in paths if p]


def checked_fold_config(
    cfg: Any, fold: int | None, test_records: Sequence[ImageRecord], record_dir: Path | None
) -> Any:
    """The config a fold's networks are built from: ``{fold}`` resolved, start weights checked.

    ``cfg`` is an ``ExperimentConfig``; ``fold`` the fold number (None outside cross-validation,
    where a ``{fold}`` path is an error); ``test_records`` the images the fold is tested on. Raises
    :class:`SplitLeakageError` for start weights pre-trained on one of them, and writes
    ``record_dir/encoder_provenance.json`` (``record_dir`` None: nothing written, e.g. a DDP worker).
    """
    path = cfg.model.kwargs.get("encoder_weights")
    if fold is None and isinstance(path, str) and FOLD_FIELD in path:
        raise ConfigError(f"model.kwargs.encoder_weights: {path} names {FOLD_FIELD}, but no fold is chosen (--fold)")
    fold_cfg = fold_start_weights(cfg, fold)
    check_encoder_unseen(fold_cfg.model, test_records, fold, record_dir)
    return fold_cfg


def check_encoder_unseen(
    model: Any, test_records: Sequence[ImageRecord], fold: int | None, fold_dir: Path | None
) -> None:
    """Refuse a fold whose start weights were pre-trained on one of its test images; record what they saw.

    ``model`` is the experiment's ``model`` section. Raises :class:`SplitLeakageError` naming the
    weights file and the first such test image.
    """
    seen_records: list[dict[str, Any]] = []
    for weights in start_weights(model):
        info = refuse_seen_test_images(weights, test_records, fold)
        if info is None:
            seen_records.append({"weights": weights, "pretrain_json": None, "images": []})
            continue
        ids = [entry.get("id") for entry in info["images"]]
        seen_records.append(
            {"weights": weights, "pretrain_json": str(Path(weights).parent / PRETRAIN_JSON), "images": ids}
        )
    if seen_records and fold_dir is not None:
        atomic_write_json(Path(fold_dir) / FOLD_RECORD, {"fold": fold, "start_weights": seen_records})


def refuse_seen_test_images(
    weights: str | Path, test_records: Sequence[ImageRecord], fold: int | None
) -> dict[str, Any] | None:
    """``weights``' pre-training record (None: none), after refusing an encoder that saw a test image.

    Raises :class:`SplitLeakageError` naming the weights file and the first of ``test_records``
    (fold ``fold``'s test images) that its ``pretrain.json`` lists as seen.
    """
    info = read_provenance(weights)
    if info is None:
        return None
    reason = _first_seen(info["images"], test_records)
    if reason is not None:
        where = (
            f" of fold {fold}; pre-train on that fold's training images (data.fold={fold})"
            if fold
            else "; pre-train on the training images"
        )
        raise SplitLeakageError(
            f"{weights}: the encoder was pre-trained on {reason}, a test image{where} or a pool disjoint "
            "from every test fold"
        )
    return info


def _first_seen(entries: Sequence[Any], test_records: Sequence[ImageRecord]) -> str | None:
    """What the encoder saw of the first test record it saw (its file, or its slide), or None."""
    seen = {entry.get("sha256"): entry for entry in entries if isinstance(entry, Mapping)}
    seen_paths = {str(Path(entry.get("path", "")).resolve()) for entry in seen.values()}
    # slide sample's crops have their slide as patient: a test crop of a seen slide is refused by that
    slides = {entry["slide"] for entry in entries if isinstance(entry, Mapping) and entry.get("slide")}
    for record in test_records:
        if str(record.path.resolve()) in seen_paths or file_fingerprint(record.path) in seen:
            return f"{record.path} ({record.image_id})"
        if record.patient_id in slides:
            return f"tiles of slide {record.patient_id}, the patient of {record.path} ({record.image_id})"
    return None
