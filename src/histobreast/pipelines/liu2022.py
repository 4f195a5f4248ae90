"""System B end to end (Liu et al. 2022, MSMV-PFENet): records -> six views x KREM crops -> model.

``train_fold`` builds the key-region datasets of a fold (training: 6 views x the 12 densest level-1
regions per image; validation: 6 views x the densest region), then either trains PFENet and FDNet
jointly with :class:`~histobreast.engine.Trainer` (the paper), or, with ``model.frozen_encoders:
true``, encodes every crop once with the initial encoders (cached on disk, shared by folds and
runs) and trains only the discriminator on the pooled vectors. Either way the fold's model folder
holds the complete model, so ``predict_records`` runs from images.

``predict_records`` scores the densest region of each view (``top_k_test`` regions, the paper: 1)
and returns ``{"image": six-view majority vote, "patch": one row per view}`` (paper B's image- and
patch-level results; with several regions per view every region votes, and ``*_one_region`` keep the
paper's protocol).
``predict_records_svm`` gives the same for Table 4's SVM row: an SVM fitted on a model folder's
pooled features (``histobreast ablate``).

Config keys read here (besides the engine's ``train`` section): ``preprocess.input_size`` (crop
side), ``preprocess.regions`` (``views``, ``top_k_train``, ``top_k_test``, ``krem`` = fields of
:class:`~histobreast.preprocess.krem.KremParams`, ``selection``: ``density`` = KREM or ``random`` =
the paper's random-region control), ``preprocess.stain``, ``preprocess.cache_dir`` (default: a
``cache`` folder next to the fold folders), ``model`` (``msmv_pfenet`` kwargs, ``frozen_encoders``,
``encoder_pretraining``: per-scale pre-training of the encoders before either mode, the from-scratch
stand-in for the paper's ImageNet start; ``cross_fit``: FDNet learns from out-of-fold vectors).
``preprocess.augment`` (e.g. colour jitter; the paper's own augmentation is the six views and
twelve regions) changes the training samples of live training and encoder pre-training, one draw per
sample for all its crops; frozen-encoder mode computes features once, so it rejects it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset, Subset

from histobreast.data.protocol import training_subsets
from histobreast.data.records import ImageRecord
from histobreast.datasets.key_regions import KeyRegionDataset
from histobreast.engine.distributed import resolve_device
from histobreast.engine.features import FeatureDataset, SVMDiscriminator, extract_features
from histobreast.engine.inference import check_batch_size, predict_probabilities
from histobreast.engine.trainer import classification_metrics
from histobreast.errors import ConfigError
from histobreast.models import create_model
from histobreast.models.msmv import MSMVPFENet
from histobreast.pipelines.config import ExperimentConfig
from histobreast.pipelines.encoder_pretraining import pretrain_encoders
from histobreast.pipelines.input_range import training_inputs
from histobreast.pipelines.network import eval_batch_size, network_seed, train_network
from histobreast.pipelines.package import LoadedModel, images_scale, load_model_folder, save_model_folder
from histobreast.pipelines.registry import Pipeline, register_pipeline
from histobreast.predictions import Predictions, region_methods
from histobreast.preprocess.stain import StainNormalizer
from histobreast.preprocess.stain_target import fit_stain_normalizer
from histobreast.seeding import seed_everything
from histobreast.votes import image_predictions

log = logging.getLogger(__name__)

MODEL_NAME = "msmv_pfenet"
#: What the validation reports besides the engine's patch-level val_loss / val_accuracy.
VAL_IMAGE_ACCURACY = "val_image_accuracy"


def model_kwargs(cfg: ExperimentConfig, classes: Sequence[str]) -> dict[str, Any]:
    """``create_model`` kwargs of the experiment's MSMV-PFENet (``num_classes`` filled in)."""
    if cfg.model.name != MODEL_NAME:
        raise ConfigError(f"pipeline liu2022 trains {MODEL_NAME!r}, but model.name is {cfg.model.name!r}")
    if _fits_svm(cfg) and not cfg.model.frozen_encoders:
        raise ConfigError(
            "model.kwargs.discriminator: 'svm' is fitted on encoder features, so it needs "
            "model.frozen_encoders: true (Table 4's SVM row on trained encoders: `histobreast ablate`)"
        )
    return {"num_classes": cfg.model.num_classes or len(classes), **cfg.model.kwargs}


def _fits_svm(cfg: ExperimentConfig) -> bool:
    return cfg.model.kwargs.get("discriminator") == "svm"


def build_model(cfg: ExperimentConfig, classes: Sequence[str]) -> MSMVPFENet:
    """The experiment's model; its initial weights follow ``cfg.seed`` (so every fold starts equal,
    and frozen encoders, hence their cached features, are shared by the folds). An SVM
    discriminator starts as an FC placeholder (the encoders are built first, so they are the same)."""
    kwargs = model_kwargs(cfg, classes)
    if _fits_svm(cfg):
        kwargs["discriminator"] = "fc"
    seed_everything(network_seed(cfg.seed))
    return create_model(MODEL_NAME, weights=cfg.model.weights, **kwargs)


def region_dataset(
    cfg: ExperimentConfig,
    records: Sequence[ImageRecord],
    classes: Sequence[str],
    levels: Sequence[int],
    *,
    train: bool,
    cache_dir: Path | None,
    stain: StainNormalizer | None = None,
    views: Sequence[str] = (),
    unknown_labels: bool = False,
) -> KeyRegionDataset:
    """The training (``top_k_train`` regions per view, images preloaded, ``preprocess.augment``) or
    evaluation (``top_k_test``) key-region dataset of ``records``; samples are uint8 crops
    normalised by the model."""
    regions = cfg.preprocess.regions
    return KeyRegionDataset(
        records,
        classes,
        top_k=regions.top_k_train if train else regions.top_k_test,
        views=tuple(views) or tuple(regions.views),
        levels=levels,
        params=cfg.preprocess.regions.krem,
        selection=regions.selection,
        seed=cfg.seed,
        cache_dir=cache_dir / "regions" if cache_dir else None,
        stain=stain,
        preload=train,
        uint8=True,
        unknown_labels=unknown_labels,
        augment=cfg.preprocess.augment.if_active() if train else None,
    )


def cache_dir_of(cfg: ExperimentConfig, fold_dir: Path) -> Path:
    """``preprocess.cache_dir``, or ``<experiment folder>/cache`` shared by the folds."""
    return Path(cfg.preprocess.cache_dir) if cfg.preprocess.cache_dir else Path(fold_dir).parent / "cache"


def validation_fn(
    val: KeyRegionDataset, inputs: Dataset, batch_size: int, device: str
) -> Callable[[nn.Module], dict[str, float]]:
    """``validate(model)`` for the Trainer: patch-level ``val_loss``/``val_accuracy`` and the six-view
    vote's ``val_image_accuracy`` over ``inputs`` (``val`` itself, or its cached features)."""

    def validate(model: nn.Module) -> dict[str, float]:
        probs, targets = predict_probabilities(model, DataLoader(inputs, batch_size=batch_size), device)
        image = image_predictions(val, probs)
        return {
            **classification_metrics(probs, targets, prefix="val_"),
            VAL_IMAGE_ACCURACY: float(np.mean(image.predicted == image.labels)),
        }

    return validate


def cross_fitted_features(
    cfg: ExperimentConfig,
    train: KeyRegionDataset,
    parts: int,
    fold_dir: Path,
    cache: Path,
    stain: StainNormalizer | None,
    *,
    batch_size: int,
    device: str,
    resume: bool = False,
) -> FeatureDataset:
    """FDNet's training vectors with every image of ``train`` encoded by encoders that never saw it.

    Encoders pre-trained on a fold's training images fit them (training accuracy far above
    held-out), so a discriminator trained on their vectors learns to trust features that unseen
    images do not have. Here the images are cut into ``parts`` patient-disjoint parts; each part is
    encoded by fresh encoders pre-trained on the other parts' samples of ``train`` (run folders
    ``fold_dir/pretrain/bag<j>/level<L>``), as in stacking.
    """
    position = {record.image_id: j for j, record in enumerate(train.records)}
    features = []
    for split in training_subsets(cfg.data, train.records, parts, cfg.seed):
        fitted, held_out = split.select(train.records, "train"), split.select(train.records, "val")
        model = build_model(cfg, train.classes)
        slices = [train.image_slices[position[r.image_id]] for r in fitted]
        samples = [i for part in slices for i in range(part.start, part.stop)]  # the decoded images, reused
        pretrain_encoders(
            cfg, model, Subset(train, samples), train.classes, fold_dir / "pretrain" / split.name, resume=resume
        )
        held = region_dataset(cfg, held_out, train.classes, model.scales, train=True, cache_dir=cache, stain=stain)
        features.append(extract_features(model, held, cache / "features", batch_size=batch_size, device=device))
        log.info(
            "%s: %s encoded %d held-out images by encoders pre-trained on %d",
            fold_dir,
            split.name,
            len(held_out),
            len(fitted),
        )
    return FeatureDataset(np.concatenate([f.features for f in features]), np.concatenate([f.targets for f in features]))


def train_fold(
    cfg: ExperimentConfig,
    train_records: Sequence[ImageRecord],
    val_records: Sequence[ImageRecord],
    classes: Sequence[str],
    fold_dir: Path,
    *,
    resume: bool = False,
) -> Path:
    """Train one fold and write its model folder ``fold_dir/model`` (returned).

    With ``model.encoder_pretraining`` each encoder is first trained alone on its scale
    (:func:`pretrain_encoders`, run folders ``fold_dir/pretrain/level<L>``). Then live mode trains
    the whole model (run folder ``fold_dir/msmv``); frozen mode
    (``model.frozen_encoders``) trains the discriminator on cached features (``fold_dir/discriminator``),
    or fits the SVM (``discriminator: svm``) on them; with ``model.cross_fit`` those training
    features are out-of-fold (:func:`cross_fitted_features`). With ``resume`` a finished fold is returned as
    it is and an interrupted one continues.
    """
    fold_dir = Path(fold_dir)
    target = fold_dir / "model"
    if resume and (target / "model.json").is_file():
        return target
    classes = list(classes)
    stain = fit_stain_normalizer(cfg.preprocess.stain, train_records, cfg.seed)
    model = build_model(cfg, classes)
    cache = cache_dir_of(cfg, fold_dir)
    train = region_dataset(cfg, train_records, classes, model.scales, train=True, cache_dir=cache, stain=stain)
    val = (
        region_dataset(cfg, val_records, classes, model.scales, train=False, cache_dir=cache, stain=stain)
        if val_records
        else None
    )
    log.info(
        "%s: %d training samples (%d images), %d validation samples",
        fold_dir,
        len(train),
        len(train_records),
        len(val) if val is not None else 0,
    )
    train.prepare()
    pretrain_encoders(cfg, model, train, classes, fold_dir / "pretrain", resume=resume)
    kwargs = model_kwargs(cfg, classes)
    batch = eval_batch_size(cfg)
    if cfg.model.frozen_encoders:
        device = str(resolve_device(cfg.train.device))
        features = cache / "features"
        if cfg.model.cross_fit:
            train_inputs = cross_fitted_features(
                cfg, train, cfg.model.cross_fit, fold_dir, cache, stain, batch_size=batch, device=device, resume=resume
            )
        else:
            train_inputs = extract_features(model, train, features, batch_size=batch, device=device)
        validate = None
        if val is not None:
            val_features = extract_features(model, val, features, batch_size=batch, device=device)
            validate = validation_fn(val, val_features, batch, device)
        if _fits_svm(cfg):
            svm = SVMDiscriminator(len(classes)).fit_features(train_inputs)
            model.discriminator = svm.to_module(model.feature_dim, len(model.scales))
            kwargs.update(
                svm_support_vectors=len(model.discriminator.support_vectors),
                svm_seen_classes=len(model.discriminator.classes),
            )
            metrics = validate(model.discriminator) if validate is not None else {}
        else:
            metrics = train_network(
                cfg,
                model.discriminator,
                train_inputs,
                None,
                fold_dir / "discriminator",
                classes,
                resume=resume,
                validate=validate,
            ).final_metrics
    else:
        validate = validation_fn(val, val, batch, cfg.train.device) if val is not None else None
        metrics = train_network(
            cfg,
            model,
            train,
            None,
            fold_dir / "msmv",
            classes,
            resume=resume,
            validate=validate,
            model_name=MODEL_NAME,
            model_kwargs=kwargs,
        ).final_metrics
    model.eval()
    return save_model_folder(
        target,
        model.cpu(),
        cfg,
        classes,
        stain=stain,
        metrics=metrics,
        model_kwargs=kwargs,
        microns_per_pixel=images_scale(train_records),
        training_inputs=training_inputs(train_records),
    )  # KREM's windows are physical


def predict_records(
    model_folder_or_loaded: str | Path | LoadedModel,
    records: Sequence[ImageRecord],
    *,
    tta_views: Sequence[str] = (),
    batch_size: int | None = None,
    device: str = "auto",
) -> dict[str, Predictions]:
    """``{"image": six-view majority vote per image, "patch": one row per view}``.

    Each view contributes its ``top_k_test`` densest key regions (the paper: 1); ``tta_views``
    replaces the config's views (the voters). Labels outside the model's classes become -1
    (unlabelled images). The vote's tie rule: the larger summed probability, then the lower class
    index. With several regions per view every region votes, and ``"image_one_region"`` /
    ``"patch_one_region"`` add the paper's protocol from the same scores: only each view's first
    region (the densest with KREM; the first draw in the random-region control).
    """
    check_batch_size(batch_size)
    target = resolve_device(device)
    loaded = (
        model_folder_or_loaded
        if isinstance(model_folder_or_loaded, LoadedModel)
        else load_model_folder(model_folder_or_loaded, device=str(target))
    )
    loaded.model.to(target)
    cfg = loaded.cfg
    cache = Path(cfg.preprocess.cache_dir) if cfg.preprocess.cache_dir else None
    data = region_dataset(
        cfg,
        records,
        loaded.classes,
        loaded.model.scales,
        train=False,
        cache_dir=cache,
        stain=loaded.stain,
        views=tta_views,
        unknown_labels=True,
    )
    probs, _ = predict_probabilities(
        loaded.model, DataLoader(data, batch_size=batch_size or eval_batch_size(cfg)), target
    )
    return _evaluation_methods(data, probs)


def _evaluation_methods(data: KeyRegionDataset, probs: np.ndarray | Tensor) -> dict[str, Predictions]:
    """Image and patch tables of per-sample ``probs``, plus the one-region-per-view protocol when
    the data has several regions per view (:func:`histobreast.predictions.region_methods`)."""
    return region_methods(data, probs.double().numpy() if isinstance(probs, Tensor) else np.asarray(probs))


def predict_records_svm(
    model_folder: str | Path,
    train_records: Sequence[ImageRecord],
    records: Sequence[ImageRecord],
    *,
    batch_size: int | None = None,
    device: str = "auto",
) -> dict[str, Predictions]:
    """Table 4's "PFENet + SVM": an SVM fitted on the pooled features of ``model_folder``'s encoders
    over ``train_records`` (6 views x ``top_k_train`` regions), then :func:`predict_records`' outputs
    with the SVM's probabilities. Features are cached next to the model's regions; the SVM is refitted
    each time (seconds; it is never pickled)."""
    check_batch_size(batch_size)
    loaded = load_model_folder(model_folder, device="cpu")
    cfg, model, classes = loaded.cfg, loaded.model, loaded.classes
    cache = cache_dir_of(cfg, Path(model_folder).parent)  # where train_fold kept the source model's features
    device = str(resolve_device(device))
    batch = batch_size or eval_batch_size(cfg)
    train = region_dataset(cfg, train_records, classes, model.scales, train=True, cache_dir=cache, stain=loaded.stain)
    test = region_dataset(
        cfg, records, classes, model.scales, train=False, cache_dir=cache, stain=loaded.stain, unknown_labels=True
    )
    model.to(device)
    svm = SVMDiscriminator(len(classes)).fit_features(
        extract_features(model, train, cache / "features", batch_size=batch, device=device)
    )
    probs = svm.predict_proba(
        extract_features(model, test, cache / "features", batch_size=batch, device=device).features
    )
    return _evaluation_methods(test, probs)


PIPELINE = register_pipeline(
    Pipeline(
        name="liu2022",
        summary="System B: MSMV-PFENet on six views x KREM key regions, six-view vote (Liu et al. 2022)",
        methods=("image", "patch"),
        train_fold=train_fold,
        predict_records=predict_records,
        networks=(MODEL_NAME,),
        physical_scale=True,  # KREM's windows are physical
    )
)
