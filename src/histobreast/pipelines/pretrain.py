"""``histobreast pretrain``: self-supervised pre-training of any registered network's trunk on unlabelled tiles.

The images: with ``data.fold`` set, that fold's training images of the experiment protocol (the
same records and contiguous/patient folds ``histobreast train`` uses), so no test image of the fold
is seen; without it, every image under ``data.root`` (a pool the user declares disjoint from the
test images; a plain folder of tiles needs ``data.microns_per_pixel`` or a ``histobreast.json``),
or every tissue tile of the slides ``data.root`` names (:mod:`~histobreast.pipelines.pretrain_slides`).
Labels are never read. The run is the engine's one training loop (checkpoints, exact resume, AMP
on GPU, DDP under torchrun) on :class:`~histobreast.datasets.ssl_tiles.SSLTileDataset` and
:class:`~histobreast.models.ssl.SSLModel`; it writes ``OUT/encoder.safetensors`` (the trunk, for
``model.kwargs.encoder_weights``) and ``OUT/pretrain.json`` (config, method, steps, final loss and
every image seen, with its SHA-256; see :mod:`histobreast.pipelines.encoder_provenance`).
"""

from __future__ import annotations

import datetime as _dt
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from histobreast.atomic import atomic_write_json
from histobreast.config import config_to_dict
from histobreast.data.imageio import list_images
from histobreast.data.protocol import experiment_splits, select_split
from histobreast.data.readers import detect_kind
from histobreast.data.records import ImageRecord, read_scale_file
from histobreast.data.task_records import experiment_records
from histobreast.datasets.ssl_tiles import SSLTileDataset
from histobreast.engine.distributed import context_from_env
from histobreast.engine.trainer import Trainer
from histobreast.errors import CheckpointError, ConfigError, DatasetError
from histobreast.models.ssl import SSLLoss, SSLModel
from histobreast.models.weights import save_weights
from histobreast.outputs import refuse_output_over_inputs
from histobreast.pipelines.config import ExperimentConfig
from histobreast.pipelines.encoder_provenance import ENCODER_FILE, FORMAT, FORMAT_VERSION, PRETRAIN_JSON, image_entries
from histobreast.pipelines.pretrain_config import PretrainRunConfig
from histobreast.pipelines.pretrain_slides import SLIDE_SOURCE, read_slide_tile, slide_paths, slide_tile_records
from histobreast.seeding import seed_everything

log = logging.getLogger(__name__)

RUN_DIR = "run"  # the engine's run folder (checkpoints, logs) inside OUT


@dataclass
class PretrainResult:
    """What a pre-training run wrote and how it went."""

    out_dir: Path
    weights: Path
    record: Path
    steps: int
    final_loss: float
    images: int
    seconds: float


def as_experiment(cfg: PretrainRunConfig) -> ExperimentConfig:
    """The experiment whose ``data`` section this run shares: its records and folds are the pre-training's."""
    return ExperimentConfig(name=cfg.name, seed=cfg.seed, data=cfg.data)


def _pool_records(cfg: PretrainRunConfig) -> list[ImageRecord]:
    """Every image under ``data.root`` of a plain folder (no labels needed), at ``data.microns_per_pixel``."""
    root = Path(cfg.data.root or "")
    scale = cfg.data.microns_per_pixel or read_scale_file(root)
    if not isinstance(scale, (int, float)):
        raise ConfigError(
            f"data.microns_per_pixel: {root} is a folder of tiles without a scale; give the µm per pixel "
            "(--set data.microns_per_pixel=0.5) or write a histobreast.json there"
        )
    paths = list_images(root)
    if not paths:
        raise DatasetError(f"{root}: no image files found")
    return [ImageRecord(p, "tissue", p.stem, float(scale), "folder") for p in paths]


def pretrain_records(cfg: PretrainRunConfig) -> list[ImageRecord]:
    """The images the encoder is trained on: ``data.fold``'s training images, else the whole tree."""
    if not cfg.data.root:
        raise ConfigError("data.root: no image folder given (pass --data)")
    root = Path(cfg.data.root)
    slides = slide_paths(root, cfg.pretrain.source)
    if slides is not None:
        if cfg.data.fold is not None:
            raise ConfigError(
                f"data.fold: {root} holds slides, which have no folds; pre-train on them as a pool "
                "(--set data.fold=null): an experiment refuses the encoder if a test image is one of these slides"
            )
        ssl = cfg.pretrain
        return slide_tile_records(
            slides, ssl.tile_microns, ssl.tile_size, min_tissue=ssl.min_tissue, mpp=cfg.data.microns_per_pixel
        )
    kind = detect_kind(root) if cfg.data.kind in ("auto", "synthetic") else cfg.data.kind
    if cfg.data.fold is None and kind == "folder" and not any(p.is_dir() for p in root.iterdir()):
        return _pool_records(cfg)  # a flat folder of tiles
    experiment = as_experiment(cfg)
    try:
        records, _ = experiment_records(experiment.data)
    except DatasetError:
        if cfg.data.fold is not None:
            raise
        return _pool_records(cfg)  # e.g. nested folders of unlabelled tiles
    if cfg.data.fold is None:
        return records
    split = experiment_splits(experiment.data, records, experiment.seed)[cfg.data.fold - 1]
    return select_split(split, records, "train")


def _total_steps(cfg: PretrainRunConfig, dataset_size: int) -> int:
    train = cfg.train
    return train.iterations if train.iterations is not None else train.epochs * (dataset_size // train.batch_size)  # type: ignore[operator]


def run_pretrain(cfg: PretrainRunConfig, out_dir: str | Path, *, resume: bool = False) -> PretrainResult:
    """Pre-train ``cfg.pretrain.encoder`` on :func:`pretrain_records`; write the encoder and its record into ``out_dir``.

    Without ``resume`` a folder that already holds an encoder or a checkpoint is refused; with it
    an interrupted run continues from its last checkpoint to the same weights.
    """
    out = Path(out_dir)
    if cfg.data.root:
        refuse_output_over_inputs(out, [cfg.data.root], "--out", folder=True)
    weights, record = out / ENCODER_FILE, out / PRETRAIN_JSON
    if weights.exists() and not resume:
        raise CheckpointError(f"{weights}: already exists; choose a new --out (or --resume a run)")
    records = pretrain_records(cfg)
    ssl = cfg.pretrain
    dataset = SSLTileDataset(
        records,
        tile_microns=ssl.tile_microns,
        tile_size=ssl.tile_size,
        tiles_per_image=ssl.tiles_per_image,
        augment=ssl.augment,
        local_views=ssl.local_views,
        local_size=ssl.local_size,
        local_crop_scale=ssl.local_crop_scale,
        seed=cfg.seed,
        read_image=read_slide_tile if any(r.source == SLIDE_SOURCE for r in records) else None,
    )
    seed_everything(cfg.seed)  # the initial weights: a run is repeatable, a resumed one continues the same run
    model = SSLModel(
        ssl.encoder,
        ssl.method,
        encoder_kwargs=ssl.encoder_kwargs,
        hidden_dim=ssl.hidden_dim,
        output_dim=ssl.output_dim,
        momentum=ssl.momentum,
        temperature=ssl.temperature,
        teacher_temperature=ssl.teacher_temperature,
    )
    total = _total_steps(cfg, len(dataset))
    log.info(
        "pre-training %s (%s) on %d images, %d tiles per epoch, %d steps",
        ssl.encoder,
        ssl.method,
        len(records),
        len(dataset),
        total,
    )
    started = time.perf_counter()
    trainer = Trainer(
        model,
        cfg.train,
        seed=cfg.seed,
        run_dir=out / RUN_DIR,
        loss_fn=SSLLoss(ssl.method, ssl.temperature, dino=getattr(model, "dino_loss", None)),
        callbacks=[lambda t: model.momentum_update(t.state.step, total)],
        experiment=cfg,
        metadata={"stage": "pretrain", "method": ssl.method, "encoder": ssl.encoder},
    )
    result = trainer.fit(dataset, resume=resume)
    final_loss = float(result.history[-1]["train_loss"]) if result.history else float("nan")
    seconds = time.perf_counter() - started
    if context_from_env().is_main:
        save_weights(model.encoder_state(), weights)
        atomic_write_json(record, _record(cfg, records, result.steps, final_loss, result.history, seconds))
    return PretrainResult(out, weights, record, result.steps, final_loss, len(records), seconds)


def _record(
    cfg: PretrainRunConfig, records: list[ImageRecord], steps: int, loss: float, history: list[Any], seconds: float
) -> dict[str, Any]:
    return {
        "format": FORMAT,
        "version": FORMAT_VERSION,
        "weights": ENCODER_FILE,
        "encoder": cfg.pretrain.encoder,
        "encoder_kwargs": dict(cfg.pretrain.encoder_kwargs),
        "method": cfg.pretrain.method,
        "tile_microns": cfg.pretrain.tile_microns,
        "tile_size": cfg.pretrain.tile_size,
        "fold": cfg.data.fold,
        "steps": steps,
        "final_loss": loss,
        "loss_history": [{"step": row["step"], "train_loss": row["train_loss"]} for row in history],
        "seconds": round(seconds, 1),
        "finished": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "torch_threads": torch.get_num_threads(),
        "config": config_to_dict(cfg),
        "images": image_entries(records),
    }
