"""Paper A's compact-model flow on a trained model folder: SEP importance -> prune -> retrain.

``prune_model_folder`` takes a model folder whose network has SEP blocks (System A's hybrid, or a
plain ``googlenet_sep`` image classifier), and:

1. measures the channel importance (mean SE gate per channel, paper A eqs. 5-6) in one no-grad
   pass over the training images (``importance_before.safetensors``);
2. R times (``loops``): removes the fraction ``X = 1 - (1 - O)^(1/R)`` of the lowest-importance
   channels of every SEP-followed layer of every backbone (physically: smaller convs, BatchNorm,
   SE and consumer layers; :mod:`histobreast.compress.prune`), then retrains the pruned network with
   the engine (each branch of a hybrid on its own data, as it was trained), re-measuring the
   importance before each later loop;
3. optionally runs Dynamic Network Surgery on the pruned network (weight masks with splicing
   during one more retraining) and stores its weights compactly (``model.sparse.safetensors``);
4. measures the importance of the final network (``importance_after.safetensors``), draws paper
   A's Fig. 11 (``importance.png``) and writes a normal model folder whose ``model_kwargs`` carry
   the pruned widths, with the pruning record in ``pruning.json``.

With ``ratio = 0`` nothing is removed but the network is retrained all the same, which gives the
like-for-like "O = 0" reference of the compression report.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import logging
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from histobreast.atomic import atomic_write_json
from histobreast.compress.dns import DNSConfig, DynamicNetworkSurgery, save_sparse_weights
from histobreast.compress.importance import compute_channel_importance, save_importance, se_blocks
from histobreast.compress.profile import count_nonzero_parameters, count_parameters
from histobreast.compress.prune import per_loop_fraction, prune_channels, prune_hybrid_channels
from histobreast.config import build_dataclass, config_to_dict, rebuild_dataclass
from histobreast.data.protocol import select_split, validation_split
from histobreast.data.records import ImageRecord
from histobreast.data.splits import fold_number, read_splits_csv
from histobreast.data.task_records import experiment_records
from histobreast.datasets.images import HybridDataset
from histobreast.engine.config import TrainConfig
from histobreast.engine.distributed import resolve_device
from histobreast.engine.trainer import StepCallback
from histobreast.errors import ConfigError
from histobreast.locking import folder_lock
from histobreast.models.googlenet_sep import INCEPTION_NAMES, GoogLeNetSEP
from histobreast.models.hybrid import HybridCNN
from histobreast.outputs import refuse_output_over_inputs
from histobreast.pipelines.config import ExperimentConfig, PruneOptions
from histobreast.pipelines.network import network_seed, train_network
from histobreast.pipelines.package import LoadedModel, load_model_folder, save_model_folder
from histobreast.report.compression import plot_channel_importance
from histobreast.seeding import derive_seed, seed_everything

log = logging.getLogger(__name__)

PRUNING_RECORD = "pruning.json"
OPTIONS_RECORD = "prune_options.json"  # the options an interrupted pruning was started with
SPARSE_WEIGHTS = "model.sparse.safetensors"
# Seed key of the DNS retraining (the pruning loops use their loop numbers 1..R).
DNS_SEED_KEY = 1000
# Fig. 11 shows two layers; we show the first and the widest SEP-followed layer of each backbone.
FIG11_LAYERS = ("se.3a", "se.4e")


def prune_options(cfg: ExperimentConfig, **overrides: Any) -> PruneOptions:
    """The validated ``prune`` section of ``cfg`` with non-None ``overrides`` applied (CLI flags)."""
    changes = {k: v for k, v in overrides.items() if v is not None}
    return rebuild_dataclass(cfg.prune, changes, source=f"config {cfg.name!r}", prefix="prune")


# ---------------------------------------------------------------------------------------------
# Networks: which backbones a model has, pruning them, retraining them
# ---------------------------------------------------------------------------------------------


def sep_backbones(model: nn.Module) -> dict[str, GoogLeNetSEP]:
    """The prunable GoogLeNetSEP backbones of ``model`` by importance-key prefix
    (``""`` for a GoogLeNetSEP, ``"global_branch."`` / ``"local_branch."`` for a hybrid)."""
    if isinstance(model, GoogLeNetSEP):
        backbones = {"": model}
    elif isinstance(model, HybridCNN):
        backbones = {"global_branch.": model.global_branch, "local_branch.": model.local_branch}
    else:
        raise ConfigError(
            f"channel pruning needs a googlenet_sep or hybrid_googlenet_sep model, got {type(model).__name__}"
        )
    for prefix, backbone in backbones.items():
        if not isinstance(backbone, GoogLeNetSEP) or not backbone.has_se:
            raise ConfigError(f"channel pruning needs SEP blocks; backbone {prefix or 'model'!r} has none")
    return backbones


def prune_network(
    model: nn.Module, importance: dict[str, torch.Tensor], fraction: float, internal: bool = False
) -> nn.Module:
    """A new, physically smaller copy of ``model`` without the ``fraction`` of lowest-importance
    channels of every SEP-followed layer (each hybrid branch by its own importances), and with
    ``internal`` of every internal conv too."""
    sep_backbones(model)  # type check with a clear message
    if isinstance(model, HybridCNN):
        return prune_hybrid_channels(model, importance, fraction, internal=internal)
    return prune_channels(model, importance, fraction, internal=internal)


def channel_widths(model: nn.Module) -> dict[str, dict[str, int]]:
    """Output channels of every SEP-followed layer of every backbone: ``{prefix: {layer: C}}``."""
    return {
        prefix or "model": {name: backbone.widths[name].out_channels for name in INCEPTION_NAMES}
        for prefix, backbone in sep_backbones(model).items()
    }


@dataclass
class PruningData:
    """What pruning needs from a pipeline: the importance pass input and one retraining per backbone.

    ``importance`` yields the batches of the whole-model pass; ``retrain[prefix]`` is
    ``(train dataset, validation dataset or loader or None)`` for that backbone.
    """

    importance: DataLoader
    retrain: dict[str, tuple[Dataset, Any]]


def pruning_data(
    cfg: ExperimentConfig,
    model: nn.Module,
    classes: Sequence[str],
    stain: Any,
    train_records: Sequence[ImageRecord],
    val_records: Sequence[ImageRecord],
    batch_size: int = 8,
) -> PruningData:
    """The datasets the model's pipeline trains with (hybrid: global images and grid patches, each
    branch its own; plain image model: images); the importance pass sees the training images
    without augmentation, as the pipeline evaluates them."""
    if isinstance(model, HybridCNN):
        from histobreast.pipelines import zhu2019

        pre = cfg.preprocess
        importance = HybridDataset(
            train_records,
            classes,
            size=pre.input_size,
            grid=tuple(pre.patches.grid),
            patch_size=pre.patches.size,
            stain=stain,
            seed=cfg.seed,
        )
        branches = zhu2019.branch_datasets(
            cfg, train_records, val_records, classes, stain
        )  # the branches' own training data
        return PruningData(
            DataLoader(importance, batch_size=batch_size),
            {"global_branch.": branches["global"], "local_branch.": branches["local"]},
        )
    from histobreast.pipelines.image import eval_loader, image_dataset

    val = eval_loader(cfg, image_dataset(cfg, val_records, classes, train=False, stain=stain)) if val_records else None
    importance = eval_loader(cfg, image_dataset(cfg, train_records, classes, train=False, stain=stain), batch_size)
    return PruningData(importance, {"": (image_dataset(cfg, train_records, classes, train=True, stain=stain), val)})


def measure_importance(
    model: nn.Module, data: PruningData, options: PruneOptions, device: str = "cpu"
) -> dict[str, torch.Tensor]:
    """Mean SE gate per channel of every backbone over the training images (one no-grad pass; a
    hybrid runs both branches whatever its mode)."""
    model.to(device)
    saved_mode = getattr(model, "mode", None)
    if isinstance(model, HybridCNN):
        model.mode = "hybrid"
    try:
        return compute_channel_importance(model, data.importance, device=device, max_batches=options.importance_batches)
    finally:
        if saved_mode is not None:
            model.mode = saved_mode


def retrain_config(train: TrainConfig, options: PruneOptions) -> TrainConfig:
    """The retraining schedule: the model's ``train`` section, with ``retrain_iterations`` steps when set."""
    if options.retrain_iterations is None:
        return train
    mapping = {**config_to_dict(train), "epochs": None, "iterations": options.retrain_iterations}
    return build_dataclass(TrainConfig, mapping, source="prune.retrain_iterations", prefix="train")


def retrain_backbones(
    model: nn.Module,
    data: PruningData,
    cfg: ExperimentConfig,
    train: TrainConfig,
    run_dir: Path,
    seed: int,
    callbacks: Sequence[StepCallback] = (),
    resume: bool = False,
) -> dict[str, float]:
    """Retrain every backbone of ``model`` in place (``run_dir/<branch>``; ``resume`` continues
    interrupted runs); returns the last validation metrics, prefixed by branch for a hybrid."""
    metrics: dict[str, float] = {}
    for number, (prefix, backbone) in enumerate(sep_backbones(model).items()):
        seed_everything(network_seed(seed, number))
        train_data, val_data = data.retrain[prefix]
        name = prefix.rstrip(".").replace("_branch", "") or "model"
        result = train_network(
            cfg,
            backbone,
            train_data,
            val_data,
            run_dir / name,
            resume=resume,
            settings=train,
            seed=network_seed(seed, number),
            model_name="googlenet_sep",
            model_kwargs=backbone.model_kwargs,
            callbacks=callbacks,
        )
        metrics.update({f"{prefix.replace('_branch.', '_')}{k}": v for k, v in result.final_metrics.items()})
    model.cpu()
    return metrics


# ---------------------------------------------------------------------------------------------
# The flow on a model folder
# ---------------------------------------------------------------------------------------------


def _importance_lists(importance: dict[str, torch.Tensor], prefix: str) -> dict[str, list[float]]:
    return {key: importance[f"{prefix}{key}"].tolist() for key in FIG11_LAYERS}


def plot_importance(
    before: dict[str, torch.Tensor], after: dict[str, torch.Tensor], model: nn.Module, out_dir: Path
) -> list[Path]:
    """Paper A Fig. 11 for each backbone: importance per channel and histogram, before and after."""
    paths = []
    for prefix in sep_backbones(model):
        name = prefix.rstrip(".") or "model"
        paths.append(
            plot_channel_importance(
                _importance_lists(before, prefix),
                out_dir / f"importance_{name}.png",
                after=_importance_lists(after, prefix),
                title=f"SEP channel importance ({name})",
            )
        )
    return paths


def run_dns(
    model: nn.Module,
    data: PruningData,
    cfg: ExperimentConfig,
    train: TrainConfig,
    run_dir: Path,
    options: PruneOptions,
    resume: bool = False,
) -> tuple[nn.Module, dict[str, float]]:
    """Dynamic Network Surgery on every conv/linear layer while retraining once more.

    Returns the model with the masks baked in and each layer's fraction of weights kept (which
    layers the surgery thinned is what decides a sparse kernel's speed-up on deployment).
    """
    surgery = DynamicNetworkSurgery(model, DNSConfig(sensitivity=options.dns_sensitivity), seed=cfg.seed)
    retrain_backbones(
        model,
        data,
        cfg,
        train,
        run_dir,
        derive_seed(cfg.seed, DNS_SEED_KEY),
        callbacks=[lambda _: surgery.step()],
        resume=resume,
    )
    log.info("DNS kept %.1f %% of the masked weights", 100 * surgery.remaining_fraction())
    densities = surgery.layer_densities()
    return surgery.finalize(), densities


def training_records(
    loaded: LoadedModel, data: str | Path | None = None
) -> tuple[list[ImageRecord], list[ImageRecord]]:
    """``(train, val)`` images to prune and retrain a model folder with.

    With ``data``: every image under that folder (read like the model's training data, with its
    task's labels), a ``data.val_fraction`` of the patients held out for validation. Without: the
    model's own training images, found through its experiment folder (``<run>/foldK/model`` next
    to ``<run>/splits.csv``), split into train and validation as the experiment split them.
    """
    cfg = loaded.cfg
    if data is not None:
        records, classes = experiment_records(dataclasses.replace(cfg.data, root=str(data)))
        fold_records, fold = records, 1
    else:
        fold_dir = loaded.path.resolve().parent
        splits_csv = fold_dir.parent / "splits.csv"
        if not splits_csv.is_file():
            raise ConfigError(
                f"{loaded.path}: not inside an experiment folder ({splits_csv} not found); "
                "pass --data with the training images"
            )
        split = next((s for s in read_splits_csv(splits_csv) if s.name == fold_dir.name), None)
        if split is None:
            raise ConfigError(f"{splits_csv}: has no split named {fold_dir.name!r} (the folder of {loaded.path})")
        records, classes = experiment_records(cfg.data)
        fold_records = select_split(split, records, "train") + select_split(split, records, "val")
        fold = fold_number(fold_dir.name) or 1
    if list(classes) != list(loaded.classes):
        raise ConfigError(f"{loaded.path}: the data's classes {classes} differ from the model's {loaded.classes}")
    return validation_split(cfg.data, fold_records, cfg.seed, fold)


def check_resumed_options(path: Path, options: dict[str, Any], resume: bool) -> None:
    """Record the pruning options in ``path`` before any work; a resume with other options is refused
    (its checkpoints hold networks pruned another way, and would fail on tensor shapes)."""
    if resume and path.is_file():
        before = json.loads(path.read_text(encoding="utf-8"))
        changed = [f"{k}: {before.get(k)!r} -> {v!r}" for k, v in options.items() if before.get(k, v) != v]
        if changed:
            raise ConfigError(
                f"{path}: cannot resume, the pruning was started with other options ({'; '.join(changed)}); "
                "pass the same options or a new --out"
            )
    atomic_write_json(path, options)


def prune_model_folder(
    model_folder: str | Path | LoadedModel,
    out_dir: str | Path,
    train_records: Sequence[ImageRecord],
    val_records: Sequence[ImageRecord] = (),
    *,
    options: PruneOptions | None = None,
    train: TrainConfig | None = None,
    resume: bool = False,
) -> Path:
    """Prune and retrain the model of ``model_folder`` on ``train_records`` (validating on
    ``val_records``); write the pruned model folder ``out_dir`` and return it.

    ``options`` default to the model config's ``prune`` section; ``train`` (the retraining
    schedule) to its ``train`` section with ``options.retrain_iterations`` applied. The pruned
    networks are a deterministic function of the model and the data, so ``resume`` continues
    interrupted retraining runs in ``out_dir/runs``.
    """
    out_dir = Path(out_dir)
    loaded = model_folder if isinstance(model_folder, LoadedModel) else load_model_folder(model_folder)
    if not se_blocks(loaded.model):
        raise ConfigError(
            f"{loaded.path}: its {loaded.info.get('model_name')!r} model (pipeline {loaded.pipeline}) has "
            "no SEP blocks to prune; prune takes System A models (zhu2019 hybrid or googlenet_sep)"
        )
    refuse_output_over_inputs(out_dir, [loaded.path], "--out", folder=True)
    options = options or prune_options(loaded.cfg)
    with folder_lock(out_dir):  # one writer per pruned model folder, as per experiment folder
        check_resumed_options(out_dir / OPTIONS_RECORD, asdict(options), resume)
        train = train or retrain_config(loaded.cfg.train, options)
        return _prune_and_retrain(loaded, out_dir, train_records, val_records, options, train, resume)


def _prune_and_retrain(
    loaded: LoadedModel,
    out_dir: Path,
    train_records: Sequence[ImageRecord],
    val_records: Sequence[ImageRecord],
    options: PruneOptions,
    train: TrainConfig,
    resume: bool,
) -> Path:
    """:func:`prune_model_folder`'s work, under ``out_dir``'s lock."""
    cfg: ExperimentConfig = loaded.cfg
    device = str(resolve_device(train.device))  # the importance passes run where training runs
    model = copy.deepcopy(loaded.model).cpu()
    data = pruning_data(cfg, model, loaded.classes, loaded.stain, train_records, val_records, options.batch_size)
    fraction = per_loop_fraction(options.ratio, options.loops)
    first = measure_importance(model, data, options, device)
    save_importance(first, out_dir / "importance_before.safetensors")
    importance, loops, metrics = first, [], {}
    for loop in range(1, options.loops + 1):
        if loop > 1:
            importance = measure_importance(model, data, options, device)
        model = prune_network(model, importance, fraction, internal=options.internal)
        log.info("loop %d/%d: pruned %.3f of the channels, retraining", loop, options.loops, fraction)
        metrics = retrain_backbones(
            model, data, cfg, train, out_dir / "runs" / f"loop{loop}", derive_seed(cfg.seed, loop), resume=resume
        )
        loops.append({"loop": loop, "fraction": fraction, "widths": channel_widths(model), "metrics": metrics})
    record: dict[str, Any] = {
        "source": str(loaded.path),
        "options": asdict(options),
        "per_loop_fraction": fraction,
        "loops": loops,
        "parameters_before": count_parameters(loaded.model),
        "parameters_after": count_parameters(model),
        "train_images": len(train_records),
        "val_images": len(val_records),
    }
    if options.dns:
        model, densities = run_dns(model, data, cfg, train, out_dir / "runs" / "dns", options, resume)
        record["dns"] = {
            "sensitivity": options.dns_sensitivity,
            "nonzero_parameters": count_nonzero_parameters(model),
            "layer_density": densities,
        }
    after = measure_importance(model, data, options, device)
    model.cpu()
    save_importance(after, out_dir / "importance_after.safetensors")
    record["figures"] = [p.name for p in plot_importance(first, after, model, out_dir)]
    model.eval()
    summary = {
        "source": record["source"],
        "ratio": options.ratio,
        "loops": options.loops,
        "per_loop_fraction": fraction,
        "dns": options.dns,
        "internal": options.internal,
    }
    save_model_folder(
        out_dir,
        model,
        cfg,
        loaded.classes,
        stain=loaded.stain,
        metrics=metrics,
        extra={"pruning": summary},
        microns_per_pixel=loaded.info.get("microns_per_pixel"),
        training_inputs=loaded.info.get("training_inputs"),
    )
    if options.dns:
        save_sparse_weights(model, out_dir / SPARSE_WEIGHTS)
    atomic_write_json(out_dir / PRUNING_RECORD, record)
    return out_dir
