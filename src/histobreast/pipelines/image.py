"""The plain whole-image classifier pipeline (``pipeline: image``), e.g. the ResNet18 baseline.

One registered network sees one image per sample: the whole image resized to
``preprocess.input_size`` (default), or, with ``preprocess.microns_per_pixel``, the image
resampled to that physical scale with random ``input_size`` crops for training and the whole
resampled image at test time (the network must pool globally, as torchvision's ResNets do; test
images then go one per batch, since their sizes follow the images). Augmentation, colour jitter,
stain normalisation and ``augment.copies`` come from ``preprocess``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from torch.utils.data import DataLoader

from histobreast.data.records import ImageRecord
from histobreast.datasets.images import ImageDataset
from histobreast.engine.inference import check_batch_size, predict_probabilities
from histobreast.pipelines.config import ExperimentConfig
from histobreast.pipelines.input_range import training_inputs
from histobreast.pipelines.network import build_network, eval_batch_size, train_network
from histobreast.pipelines.package import (
    LoadedModel,
    as_loaded,
    finished_model_folder,
    images_scale,
    model_identity,
    save_model_folder,
)
from histobreast.pipelines.registry import Pipeline, register_pipeline
from histobreast.predictions import Predictions, predictions_from_records
from histobreast.preprocess.stain import StainNormalizer
from histobreast.preprocess.stain_target import fit_stain_normalizer
from histobreast.preprocess.views import average_over_views, view_reader

METHODS = ("image",)


def image_dataset(
    cfg: ExperimentConfig,
    records: Sequence[ImageRecord],
    classes: Sequence[str],
    *,
    train: bool,
    stain: StainNormalizer | None,
    **options: Any,
) -> ImageDataset:
    """The dataset the config describes, for training (augmented, random crops) or evaluation."""
    pre = cfg.preprocess
    return ImageDataset(
        records,
        classes,
        size=pre.input_size,
        microns_per_pixel=pre.microns_per_pixel,
        crop="random" if train else "none",
        copies=pre.augment.copies if train else 1,
        augment=pre.augment.if_active() if train else None,
        stain=stain,
        seed=cfg.seed,
        **options,
    )


def eval_loader(cfg: ExperimentConfig, dataset: ImageDataset, batch_size: int | None = None) -> DataLoader:
    """Evaluation batches in dataset order; one image per batch when images keep their own size."""
    whole = dataset.microns_per_pixel is not None and dataset.crop == "none"
    return DataLoader(
        dataset, batch_size=1 if whole else (batch_size or eval_batch_size(cfg)), num_workers=cfg.train.num_workers
    )


def train_fold(
    cfg: ExperimentConfig,
    train_records: Sequence[ImageRecord],
    val_records: Sequence[ImageRecord],
    classes: Sequence[str],
    fold_dir: Path,
    *,
    resume: bool = False,
) -> Path:
    """Train the network on one fold (engine run folder ``fold_dir/image``) and write ``fold_dir/model``."""
    fold_dir = Path(fold_dir)
    finished = finished_model_folder(fold_dir, resume)
    if finished is not None:
        return finished
    classes = list(classes)
    stain = fit_stain_normalizer(cfg.preprocess.stain, train_records, cfg.seed)
    model = build_network(cfg, cfg.model.num_classes or len(classes))
    train = image_dataset(cfg, train_records, classes, train=True, stain=stain)
    val = eval_loader(cfg, image_dataset(cfg, val_records, classes, train=False, stain=stain)) if val_records else None
    name, kwargs = model_identity(model, cfg, classes)
    result = train_network(
        cfg, model, train, val, fold_dir / "image", classes, resume=resume, model_name=name, model_kwargs=kwargs
    )
    return save_model_folder(
        fold_dir / "model",
        model.cpu(),
        cfg,
        classes,
        stain=stain,
        metrics=result.final_metrics,
        microns_per_pixel=images_scale(train_records),
        training_inputs=training_inputs(train_records),
    )


def predict_records(
    model_folder_or_loaded: str | Path | LoadedModel,
    records: Sequence[ImageRecord],
    *,
    tta_views: Sequence[str] = (),
    batch_size: int | None = None,
    device: str = "auto",
) -> dict[str, Predictions]:
    """``{"image": Predictions}``: one row per record, probabilities averaged over ``tta_views``."""
    check_batch_size(batch_size)
    loaded = as_loaded(model_folder_or_loaded, device)
    device_ = next(loaded.model.parameters()).device
    model = loaded.model

    def predict(view: str | None) -> dict[str, np.ndarray]:
        data = image_dataset(
            loaded.cfg,
            records,
            loaded.classes,
            train=False,
            stain=loaded.stain,
            require_labels=False,
            read_image=view_reader(view),
        )
        probs, _ = predict_probabilities(model, eval_loader(loaded.cfg, data, batch_size), device_)
        return {"image": probs}

    probs = average_over_views(predict, tta_views)
    return {"image": predictions_from_records(records, probs["image"], loaded.classes)}


PIPELINE = register_pipeline(
    Pipeline(
        name="image",
        summary="plain whole-image classifier (e.g. the ResNet18 baseline)",
        methods=METHODS,
        train_fold=train_fold,
        predict_records=predict_records,
    )
)
