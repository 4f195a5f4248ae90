"""The quick check of pre-trained features: k-NN and linear-probe accuracy on labelled folds.

An image's feature is the mean pooled vector of the frozen encoder over the image's tiles at the
pre-training scale (non-overlapping ``tile_size`` px tiles of ``tile_microns`` µm, at most
``probe.max_tiles`` evenly spread). A cosine k-NN and a logistic regression (scikit-learn, on
standardised features) are fitted on a fold's training images and scored on its test images,
image by image. ``weights=None`` probes the randomly initialised encoder: the baseline to beat.
Over several folds the test predictions are saved as an experiment's are
(``OUT/fold<N>/predictions/{linear,knn}.csv``), so ``histobreast compare`` pairs a probe with
another probe or with any trained experiment on the same images.
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
from histobreast.config import read_json, to_jsonable
from histobreast.data.imageio import read_rgb
from histobreast.data.protocol import experiment_splits, select_split
from histobreast.data.records import ImageRecord
from histobreast.data.task_records import experiment_records
from histobreast.engine.distributed import resolve_device
from histobreast.errors import ConfigError
from histobreast.metrics.evaluation import summarise_folds
from histobreast.models.encoders import load_encoder_weights
from histobreast.models.ssl import build_trunk
from histobreast.outputs import refuse_output_over_inputs
from histobreast.pipelines.encoder_provenance import FOLD_FIELD, refuse_seen_test_images
from histobreast.pipelines.fold_predictions import write_fold_predictions
from histobreast.pipelines.pretrain import as_experiment
from histobreast.pipelines.pretrain_config import PretrainRunConfig
from histobreast.predictions import Predictions, predictions_from_records
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


PROBE_JSON = "probe.json"  # one fold's scores in OUT/fold<N>/, every fold's and their summary in OUT/
METHODS = ("linear", "knn")  # saved in this order: the linear probe is the headline


def fold_weights(weights: str | Path | None, fold: int) -> str | None:
    """``weights`` with ``{fold}`` replaced by ``fold`` (one pre-trained encoder per fold), or None."""
    return None if weights is None else str(weights).replace(FOLD_FIELD, str(fold))


def probe_settings(cfg: PretrainRunConfig) -> dict[str, Any]:
    """What a probe's scores depend on besides the weights and the fold: a saved fold is reused only if equal."""
    ssl = cfg.pretrain
    return to_jsonable(
        {
            "seed": cfg.seed,
            "data": cfg.data,
            "encoder": ssl.encoder,
            "encoder_kwargs": dict(ssl.encoder_kwargs),
            "tile_microns": ssl.tile_microns,
            "tile_size": ssl.tile_size,
            "probe": cfg.probe,
        }
    )


def probe_fold(
    cfg: PretrainRunConfig, weights: str | Path | None, fold: int, device: str = "auto"
) -> tuple[dict[str, Any], dict[str, Predictions]]:
    """Scores and test predictions (``linear``, ``knn``) of ``weights`` (None: random init) on ``fold``.

    The labelled records, classes and folds are ``cfg.data``'s experiment protocol. An encoder whose
    ``pretrain.json`` lists one of the fold's test images is refused (:class:`SplitLeakageError`).
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
        refuse_seen_test_images(weights, test, fold)
        load_encoder_weights(encoder, weights, ())
    where = resolve_device(device)
    x_train, x_test = image_features(encoder, train, cfg, where), image_features(encoder, test, cfg, where)
    index = {c: i for i, c in enumerate(classes)}
    y_train = np.array([index[r.label] for r in train])
    knn = KNeighborsClassifier(n_neighbors=min(cfg.probe.knn_k, len(train)), metric="cosine").fit(x_train, y_train)
    linear = make_pipeline(StandardScaler(), LogisticRegression(C=cfg.probe.logistic_c, max_iter=5000))
    linear.fit(x_train, y_train)
    scores: dict[str, Any] = {
        "weights": str(weights) if weights is not None else None,
        "encoder": cfg.pretrain.encoder,
        "settings": probe_settings(cfg),
        "fold": fold,
        "classes": classes,
        "train_images": len(train),
        "test_images": len(test),
    }
    predictions = {}
    for name, model in zip(METHODS, (linear, knn)):
        probs = np.zeros((len(test), len(classes)))
        probs[:, model.classes_] = model.predict_proba(x_test)  # a class absent from training keeps 0
        predictions[name] = pred = predictions_from_records(test, probs, classes)
        scores[f"{name}_accuracy"] = float((pred.predicted == pred.labels).mean())
        scores[f"{name}_balanced_accuracy"] = float(balanced_accuracy_score(pred.labels, pred.predicted))
    return scores, predictions


def probe_folds(
    cfg: PretrainRunConfig,
    weights: str | Path | None,
    folds: list[int] | None = None,
    device: str = "auto",
    out: str | Path | None = None,
) -> dict[str, Any]:
    """Probe ``weights`` (``{fold}`` in the path: that fold's encoder; None: random init) on ``folds``
    (None: every fold of the protocol); the per-fold scores and their mean ± std over the folds.

    With ``out`` each fold's scores and test predictions go to ``out/fold<N>/`` as they finish, and
    ``out/probe.json`` holds them all; a fold already probed there with the same weights is read
    back, not redone, so an interrupted probe resumes.
    """
    experiment = as_experiment(cfg)
    records, _ = experiment_records(experiment.data)
    n_folds = len(experiment_splits(experiment.data, records, experiment.seed))
    chosen = list(folds) if folds else list(range(1, n_folds + 1))
    if out is not None:
        inputs = [cfg.data.root, *(fold_weights(weights, f) for f in chosen if weights is not None)]
        refuse_output_over_inputs(out, [Path(p) for p in inputs if p], "--out", folder=True)
    results = []
    for fold in chosen:
        done = Path(out) / f"fold{fold}" / PROBE_JSON if out is not None else None
        own = fold_weights(weights, fold)
        if done is not None and done.is_file():
            previous = read_json(done, "probe scores")
            if previous.get("weights") == own and previous.get("settings") == probe_settings(cfg):
                results.append(previous)
                continue
        scores, predictions = probe_fold(cfg, own, fold, device=device)
        if done is not None:
            write_fold_predictions(done.parent, predictions)
            atomic_write_json(done, scores)
        results.append(scores)
    numeric = [{k: v for k, v in r.items() if k.endswith("accuracy")} for r in results]
    summary = {
        "weights": str(weights) if weights is not None else None,
        "encoder": cfg.pretrain.encoder,
        "folds": results,
        "summary": summarise_folds(numeric)["metrics"],
    }
    if out is not None:
        atomic_write_json(Path(out) / PROBE_JSON, summary)
    return summary
