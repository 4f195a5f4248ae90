"""The Spanhol et al. 2016 baseline (paper A's Table 9 comparison) as a pipeline.

Spanhol et al. (IJCNN 2016) trained a small patch CNN (:mod:`histobreast.models.spanhol`) on
32x32 and on 64x64 patches, extracted by a sliding window with 50 % overlap or at random
positions, classified an image by combining its patches' probabilities, and fused the four
resulting models with the max rule. Here each of the four models is an ordinary model folder,
and the fused baseline is an ensemble folder (``ensemble.json``, rule ``max``) holding them, so
``histobreast ensemble evaluate`` works on it as on any ensemble.

``train_fold`` trains the members (one engine run each, ``fold_dir/<member>/``) and writes the
ensemble at ``fold_dir/model``; ``predict_records`` on that folder returns the fused result first
(``"max_fusion"``) and then every member (``"patch32_sliding"`` ...), on a single member folder
``{"image": ...}``. At test time every member cuts its image into sliding windows of its own size
(50 % overlap); the patch probabilities are combined by ``patch_rule`` (sum = mean, Spanhol's sum
rule; or max).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch

from histobreast.data.records import ImageRecord
from histobreast.datasets.spanhol_patches import SpanholPatchDataset, image_patch_batches, load_scaled
from histobreast.engine.distributed import resolve_device
from histobreast.engine.inference import check_batch_size
from histobreast.errors import CheckpointError, DatasetError
from histobreast.models import create_model
from histobreast.pipelines.bagging import is_ensemble_folder, predict_ensemble, save_ensemble_folder
from histobreast.pipelines.config import ExperimentConfig
from histobreast.pipelines.input_range import training_inputs
from histobreast.pipelines.network import network_seed, train_network
from histobreast.pipelines.package import LoadedModel, images_scale, load_model_folder, save_model_folder
from histobreast.pipelines.registry import Pipeline, register_pipeline
from histobreast.predictions import Predictions, predictions_from_records
from histobreast.preprocess.stain_target import fit_stain_normalizer
from histobreast.seeding import seed_everything
from histobreast.votes import combine_members

NAME = "spanhol2016"
MODEL_NAME = "spanhol_patch_cnn"


def train_fold(
    cfg: ExperimentConfig,
    train_records: Sequence[ImageRecord],
    val_records: Sequence[ImageRecord],
    classes: Sequence[str],
    fold_dir: str | Path,
    *,
    resume: bool = False,
) -> Path:
    """Train the four (patch size x extraction) members and write the max-rule ensemble at
    ``fold_dir/model`` (members in ``fold_dir/model/<member>``); returns that folder."""
    options = cfg.spanhol
    fold_dir = Path(fold_dir)
    if resume and is_ensemble_folder(fold_dir / "model"):
        return fold_dir / "model"
    stain = fit_stain_normalizer(cfg.preprocess.stain, train_records, cfg.seed)
    inputs = training_inputs(train_records)  # every member's model.json: predict flags unlike images
    members = []
    for number, (name, size, extraction) in enumerate(options.members()):
        folder = fold_dir / "model" / name
        if resume and (folder / "model.json").is_file():
            members.append(folder)  # finished before the interruption
            continue
        seed = network_seed(cfg.seed, number)
        seed_everything(seed)
        kwargs = {"num_classes": len(classes), "patch_size": size}
        model = create_model(MODEL_NAME, **kwargs)
        patches = dict(patch_size=size, overlap=options.overlap, scale=options.scale, stain=stain, seed=seed)
        train_data = SpanholPatchDataset(
            train_records, classes, extraction=extraction, random_patches=options.random_patches, **patches
        )
        val_data = SpanholPatchDataset(val_records, classes, **patches) if val_records else None
        result = train_network(
            cfg,
            model,
            train_data,
            val_data,
            fold_dir / name,
            classes,
            resume=resume,
            seed=seed,
            model_name=MODEL_NAME,
            model_kwargs=kwargs,
        )
        member = {"name": name, "patch_size": size, "extraction": extraction, **asdict(options)}
        members.append(
            save_model_folder(
                folder,
                model.cpu(),
                cfg,
                classes,
                stain=stain,
                metrics=result.final_metrics,
                extra={"spanhol": member},
                model_name=MODEL_NAME,
                model_kwargs=kwargs,
                microns_per_pixel=images_scale(train_records),
                training_inputs=inputs,
            )
        )
    return save_ensemble_folder(
        fold_dir / "model",
        members,
        options.fusion,
        classes=classes,
        extra={"pipeline": NAME, "config": cfg.name},
    )


def member_settings(info: dict[str, Any]) -> dict[str, Any]:
    """A member folder's ``spanhol`` settings (patch size, overlap, scale, patch rule); CheckpointError otherwise."""
    settings = info.get("spanhol")
    if not isinstance(settings, dict):
        raise CheckpointError(
            f"model folder of {info.get('model_name')!r} has no 'spanhol' settings: not a Spanhol 2016 member"
        )
    return settings


@torch.inference_mode()
def predict_member_records(loaded: LoadedModel, records: Sequence[ImageRecord], *, device: str = "auto") -> Predictions:
    """One member's image predictions: sliding-window patches of each (scaled) image, patch
    probabilities combined by the member's ``patch_rule``."""
    settings = member_settings(loaded.info)
    device_ = resolve_device(device)
    model = loaded.model.to(device_).eval()
    stain = loaded.stain
    rows = []
    for record in records:
        image = load_scaled(record, settings["scale"], stain)
        try:
            batches = image_patch_batches(
                image, settings["patch_size"], settings["overlap"], settings["eval_batch_size"]
            )
        except DatasetError as err:  # an image smaller than a patch: say which
            raise DatasetError(f"{record.path}: {err}") from None
        probs = torch.cat([model.predict_proba(batch.to(device_)).float().cpu() for batch in batches])
        rows.append(combine_members(probs[:, None, :], settings["patch_rule"])[0])
    probs_array = torch.stack(rows).numpy() if rows else np.zeros((0, len(loaded.classes)))
    return predictions_from_records(records, probs_array, loaded.classes)


def predict_records(
    model_folder_or_loaded: Any,
    records: Sequence[ImageRecord],
    *,
    tta_views: Sequence[str] = (),
    batch_size: int | None = None,
    device: str = "auto",
) -> dict[str, Predictions]:
    """``{"<rule>_fusion": fused, <member>: ...}`` for the baseline's ensemble folder, or
    ``{"image": ...}`` for one member folder. ``tta_views`` and ``batch_size`` are not used by
    this baseline (patches are batched by the member's ``eval_batch_size``), but a bad one is refused."""
    check_batch_size(batch_size)
    if isinstance(model_folder_or_loaded, (str, Path)) and is_ensemble_folder(model_folder_or_loaded):
        result = predict_ensemble(model_folder_or_loaded, records, device=device)
        return {f"{result.rule}_fusion": result.ensemble, **result.members}
    loaded = (
        model_folder_or_loaded
        if isinstance(model_folder_or_loaded, LoadedModel)
        else load_model_folder(model_folder_or_loaded)
    )
    return {"image": predict_member_records(loaded, records, device=device)}


PIPELINE = register_pipeline(
    Pipeline(
        name=NAME,
        summary="baseline: patch CNNs on 32 and 64 px patches fused by the max rule (Spanhol et al. 2016)",
        methods=("max_fusion",),
        train_fold=train_fold,
        predict_records=predict_records,
    )
)
