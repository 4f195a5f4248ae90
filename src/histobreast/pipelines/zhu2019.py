"""System A (Zhu et al. 2019): the hybrid CNN, its two branches trained separately, five evaluation methods.

Training follows the paper: the **global branch** learns from whole images resized to
``preprocess.input_size`` (paper: 224), the **local branch** from single grid patches, each
labelled with its image's label (``preprocess.patches``: a 5x3 grid of 224 px patches cut from the
image resized to 1120x672); both are the config's network (``model.name``, default
``googlenet_sep``: GoogLeNet-BN + SEP with auxiliary heads), trained one after the other by the
engine with the same ``train`` section (engine run folders ``fold_dir/global`` and
``fold_dir/local``). They are then assembled into ``hybrid_googlenet_sep`` (patch vote: mean after
the released code's 0.3 max-min confidence filter; fusion ``P = λ P_local + (1 − λ) P_global``,
λ = 0.6) and written as one model folder.

Evaluation scores every method of the paper's Tables 2-3 from one pass over both branches:
``hybrid`` (method 3, the headline), ``global`` (method 1), ``local`` (method 2), and the max-rule
ablations ``hybrid_max`` (3 Max) and ``local_max`` (2 Max).

Hybrid-level settings live in ``model.kwargs`` beside the branch network's own kwargs:
``fusion_weight`` (λ) and ``min_spread`` (the confidence filter; null disables it). For CPU
schedules ``preprocess.patches.per_image`` trains the local branch on that many random patches
per image and epoch (all patches by default, as in the paper).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader

from histobreast.config import Problems
from histobreast.data.records import ImageRecord
from histobreast.datasets.images import GridPatchDataset, HybridDataset, ImageDataset
from histobreast.engine.inference import autocast, check_batch_size, resolve_flag, to_device
from histobreast.errors import ConfigError
from histobreast.models.googlenet_sep import MIN_INPUT_SIZE, GoogLeNetSEP
from histobreast.models.hybrid import HybridCNN
from histobreast.pipelines.config import ExperimentConfig
from histobreast.pipelines.input_range import training_inputs
from histobreast.pipelines.network import build_network, eval_batch_size, train_network
from histobreast.pipelines.package import (
    LoadedModel,
    as_loaded,
    finished_model_folder,
    images_scale,
    save_model_folder,
)
from histobreast.pipelines.registry import Pipeline, register_pipeline
from histobreast.predictions import Predictions, predictions_from_records
from histobreast.preprocess.stain import StainNormalizer
from histobreast.preprocess.stain_target import fit_stain_normalizer
from histobreast.preprocess.views import average_over_views, view_reader
from histobreast.vote_rules import DEFAULT_FUSION_WEIGHT, DEFAULT_MIN_SPREAD
from histobreast.vote_rules import SYSTEM_A_METHODS as METHODS
from histobreast.vote_rules import system_a_methods as method_probabilities

log = logging.getLogger(__name__)

HYBRID_NAME = "hybrid_googlenet_sep"
BRANCH_NETWORKS = ("googlenet_sep", "googlenet_bn")
# Seed keys of the two branches' initial weights (different draws for the two networks).
_GLOBAL_SEED, _LOCAL_SEED = 1, 2
# model.kwargs keys that configure the hybrid, not the branch networks.
HYBRID_KEYS = ("fusion_weight", "min_spread")


def config_problems(cfg: ExperimentConfig) -> Problems:
    """Both branches are GoogLeNets (the whole image and each patch): inputs big enough for their pooling."""
    for key, size in (("input_size", cfg.preprocess.input_size), ("patches.size", cfg.preprocess.patches.size)):
        if size < MIN_INPUT_SIZE:
            yield f"preprocess.{key}", f"must be >= {MIN_INPUT_SIZE} px for GoogLeNet's pooling, got {size}"


def split_kwargs(cfg: ExperimentConfig) -> tuple[dict[str, Any], dict[str, Any]]:
    """``(branch kwargs, hybrid kwargs)`` from ``model.kwargs``; checks the branch network name."""
    if cfg.model.name not in BRANCH_NETWORKS:
        raise ConfigError(
            f"model.name: pipeline zhu2019 trains {' or '.join(BRANCH_NETWORKS)} branches, got {cfg.model.name!r}"
        )
    branch = {k: v for k, v in cfg.model.kwargs.items() if k not in HYBRID_KEYS}
    hybrid = {
        "fusion_weight": cfg.model.kwargs.get("fusion_weight", DEFAULT_FUSION_WEIGHT),
        "min_spread": cfg.model.kwargs.get("min_spread", DEFAULT_MIN_SPREAD),
    }
    return branch, hybrid


def branch_datasets(
    cfg: ExperimentConfig,
    train_records: Sequence[ImageRecord],
    val_records: Sequence[ImageRecord],
    classes: Sequence[str],
    stain: StainNormalizer | None,
) -> dict[str, tuple[Any, Any]]:
    """``branch -> (training dataset, validation dataset or None)`` for the global and local branches
    (also what pruning retrains each branch on)."""
    pre = cfg.preprocess
    common: dict[str, Any] = {"stain": stain, "seed": cfg.seed}
    grid = {"grid": tuple(pre.patches.grid), "patch_size": pre.patches.size}
    augment = cfg.preprocess.augment.if_active()
    return {
        "global": (
            ImageDataset(
                train_records, classes, size=pre.input_size, copies=pre.augment.copies, augment=augment, **common
            ),
            ImageDataset(val_records, classes, size=pre.input_size, **common) if val_records else None,
        ),
        "local": (
            GridPatchDataset(
                train_records,
                classes,
                patches_per_image=pre.patches.per_image,
                copies=pre.augment.copies,
                augment=augment,
                **grid,
                **common,
            ),
            GridPatchDataset(val_records, classes, **grid, **common) if val_records else None,
        ),
    }


def train_fold(
    cfg: ExperimentConfig,
    train_records: Sequence[ImageRecord],
    val_records: Sequence[ImageRecord],
    classes: Sequence[str],
    fold_dir: Path,
    *,
    resume: bool = False,
) -> Path:
    """Train the global then the local branch on one fold; write the assembled hybrid to ``fold_dir/model``.

    With ``resume`` a finished fold is returned as it is, a finished branch is reloaded from its
    run folder, and an interrupted one continues from its last checkpoint.
    """
    fold_dir = Path(fold_dir)
    finished = finished_model_folder(fold_dir, resume)
    if finished is not None:
        return finished
    classes = list(classes)
    branch_kwargs, hybrid_kwargs = split_kwargs(cfg)
    num_classes = cfg.model.num_classes or len(classes)
    stain = fit_stain_normalizer(cfg.preprocess.stain, train_records, cfg.seed)
    branches: dict[str, GoogLeNetSEP] = {}
    metrics: dict[str, Any] = {}
    for (branch, (train, val)), seed_key in zip(
        branch_datasets(cfg, train_records, val_records, classes, stain).items(), (_GLOBAL_SEED, _LOCAL_SEED)
    ):
        model = build_network(cfg, num_classes, seed_key, kwargs=branch_kwargs)
        log.info("%s: training the %s branch on %d samples", fold_dir, branch, len(train))
        result = train_network(
            cfg,
            model,
            train,
            val,
            fold_dir / branch,
            classes,
            resume=resume,
            model_name=cfg.model.name,
            model_kwargs=model.model_kwargs,
        )  # type: ignore[arg-type]
        branches[branch] = model  # type: ignore[assignment]
        metrics[branch] = result.final_metrics
    hybrid = HybridCNN(branches["global"].cpu(), branches["local"].cpu(), **hybrid_kwargs)
    return save_model_folder(
        fold_dir / "model",
        hybrid,
        cfg,
        classes,
        stain=stain,
        metrics=metrics,
        model_name=HYBRID_NAME,
        microns_per_pixel=images_scale(train_records),
        training_inputs=training_inputs(train_records),
    )


@torch.inference_mode()
def branch_probabilities(
    model: HybridCNN, loader: DataLoader, device: torch.device, amp: bool | str = "auto"
) -> tuple[np.ndarray, np.ndarray]:
    """Global probabilities ``(N, C)`` and per-patch local probabilities ``(N, P, C)`` over ``loader``."""
    use_amp = resolve_flag(amp, device)  # type: ignore[arg-type]
    global_parts, patch_parts = [], []
    model.eval()
    for inputs, _ in loader:
        inputs = to_device(inputs, device)
        with autocast(device, use_amp):
            out = model.branch_outputs(inputs["global"], inputs["patches"])
        global_parts.append(out["global"].float().cpu())
        patch_parts.append(out["patches"].float().cpu())
    return torch.cat(global_parts).numpy(), torch.cat(patch_parts).numpy()


def predict_records(
    model_folder_or_loaded: str | Path | LoadedModel,
    records: Sequence[ImageRecord],
    *,
    tta_views: Sequence[str] = (),
    batch_size: int | None = None,
    device: str = "auto",
) -> dict[str, Predictions]:
    """One :class:`Predictions` per method of :data:`METHODS` (``hybrid`` first).

    With ``tta_views`` each method's probabilities are averaged over the views of every image.
    Labels outside the model's classes become -1 (unlabelled images).
    """
    check_batch_size(batch_size)
    loaded = as_loaded(model_folder_or_loaded, device)
    device_ = next(loaded.model.parameters()).device
    model = loaded.model
    if not isinstance(model, HybridCNN):
        raise ConfigError(f"{loaded.path}: pipeline zhu2019 needs a hybrid model, got {type(model).__name__}")
    pre = loaded.cfg.preprocess

    def predict(view: str | None) -> dict[str, np.ndarray]:
        data = HybridDataset(
            records,
            loaded.classes,
            size=pre.input_size,
            grid=tuple(pre.patches.grid),
            patch_size=pre.patches.size,
            stain=loaded.stain,
            require_labels=False,
            read_image=view_reader(view),
        )
        loader = DataLoader(
            data, batch_size=batch_size or eval_batch_size(loaded.cfg), num_workers=loaded.cfg.train.num_workers
        )
        global_probs, patch_probs = branch_probabilities(model, loader, device_, loaded.cfg.train.amp)
        return method_probabilities(global_probs, patch_probs, model.fusion_weight, model.min_spread)

    probs = average_over_views(predict, tta_views)
    return {name: predictions_from_records(records, probs[name], loaded.classes) for name in METHODS}


PIPELINE = register_pipeline(
    Pipeline(
        name="zhu2019",
        summary="System A: hybrid GoogLeNet-BN + SEP, global and local branches fused (Zhu et al. 2019)",
        methods=METHODS,
        train_fold=train_fold,
        predict_records=predict_records,
        networks=(HYBRID_NAME,),
        model_keys=HYBRID_KEYS,
        network_kwargs=lambda cfg: split_kwargs(cfg)[0],
        config_problems=config_problems,
    )
)
