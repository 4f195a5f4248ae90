"""The quick check of pre-trained features: k-NN and linear-probe accuracy on a labelled fold.

An image's feature is the mean pooled vector of the frozen encoder over the image's tiles at the
pre-training scale (non-overlapping ``tile_size`` px tiles of ``tile_microns`` µm, at most
``probe.max_tiles`` evenly spread). A cosine k-NN and a logistic regression (scikit-learn, on
standardised features) are fitted on the fold's training images and scored on its test images,
image by image. ``weights=None`` probes the randomly initialised encoder: the baseline to beat.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import balanced_accuracy_score
from sklearn.neighbors import KNeighborsClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from torch import nn

from histobreast.atomic import atomic_write_json
from histobreast.data.imageio import read_rgb
from histobreast.data.protocol import experiment_splits, select_split
from histobreast.data.records import ImageRecord
from histobreast.data.task_records import experiment_records
from histobreast.engine.distributed import resolve_device
from histobreast.errors import ConfigError
from histobreast.models.encoders import load_encoder_weights
from histobreast.models.ssl import build_trunk
from histobreast.pipelines.pretrain import as_experiment
from histobreast.pipelines.pretrain_config import PretrainRunConfig
from histobreast.preprocess.patches import resize_rgb, sliding_window_patches
from histobreast.preprocess.transforms import to_model_input
from histobreast.seeding import seed_everything


def image_tiles(record: ImageRecord, tile_microns: float, tile_size: int, max_tiles: int) -> np.ndarray:
    """Up to ``max_tiles`` non-overlapping tiles ``(N, s, s, 3)`` of the image at the pre-training scale."""
    image = read_rgb(record.path)
    factor = record.microns_per_pixel / (tile_microns / tile_size)
    height, width = image.shape[:2]
    size = (max(tile_size, round(width * factor)), max(tile_size, round(height * factor)))
    tiles = sliding_window_patches(resize_rgb(image, size), tile_size, overlap=0.0)
    if len(tiles) > max_tiles:
        tiles = tiles[np.linspace(0, len(tiles) - 1, max_tiles).round().astype(int)]
    return tiles


@torch.inference_mode()
def image_features(
    encoder: nn.Module, records: list[ImageRecord], cfg: PretrainRunConfig, device: torch.device
) -> np.ndarray:
    """``(N, D)``: each image's mean pooled encoder vector over its tiles."""
    ssl, probe = cfg.pretrain, cfg.probe
    encoder.eval().to(device)
    features = []
    for record in records:
        batch = to_model_input(image_tiles(record, ssl.tile_microns, ssl.tile_size, probe.max_tiles))
        vectors = [encoder(chunk.to(device)).float() for chunk in batch.split(probe.batch_size)]
        features.append(torch.cat(vectors).mean(dim=0).cpu().numpy())
    return np.stack(features)


def probe_encoder(
    cfg: PretrainRunConfig,
    weights: str | Path | None,
    fold: int,
    device: str = "auto",
    out: str | Path | None = None,
) -> dict[str, Any]:
    """k-NN and linear-probe accuracy of ``weights`` (an encoder file; None: random init) on ``fold``.

    The labelled records, classes and folds are ``cfg.data``'s experiment protocol; the scores are
    also written to ``out`` (a JSON file) when given.
    """
    experiment = as_experiment(cfg)
    records, classes = experiment_records(experiment.data)
    splits = experiment_splits(experiment.data, records, experiment.seed)
    if not 1 <= fold <= len(splits):  # the fold's training images, with no validation hold-out
        raise ConfigError(f"--fold {fold}: the protocol has {len(splits)} folds")
    train = select_split(splits[fold - 1], records, "train")
    test = select_split(splits[fold - 1], records, "test")
    seed_everything(cfg.seed)
    encoder, _ = build_trunk(cfg.pretrain.encoder, **cfg.pretrain.encoder_kwargs)
    if weights is not None:
        load_encoder_weights(encoder, weights, ())
    where = resolve_device(device)
    x_train, x_test = image_features(encoder, train, cfg, where), image_features(encoder, test, cfg, where)
    index = {c: i for i, c in enumerate(classes)}
    y_train = np.array([index[r.label] for r in train])
    y_test = np.array([index[r.label] for r in test])
    knn = KNeighborsClassifier(n_neighbors=min(cfg.probe.knn_k, len(train)), metric="cosine").fit(x_train, y_train)
    linear = make_pipeline(StandardScaler(), LogisticRegression(C=cfg.probe.logistic_c, max_iter=5000))
    linear.fit(x_train, y_train)
    scores: dict[str, Any] = {
        "weights": str(weights) if weights is not None else None,
        "encoder": cfg.pretrain.encoder,
        "fold": fold,
        "classes": classes,
        "train_images": len(train),
        "test_images": len(test),
    }
    for name, model in (("knn", knn), ("linear", linear)):
        predicted = model.predict(x_test)
        scores[f"{name}_accuracy"] = float((predicted == y_test).mean())
        scores[f"{name}_balanced_accuracy"] = float(balanced_accuracy_score(y_test, predicted))
    if out is not None:
        atomic_write_json(out, scores)
    return scores
