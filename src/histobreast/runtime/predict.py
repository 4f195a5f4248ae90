"""Exported folder + records -> the same ``Predictions`` (and predictions.csv) as the PyTorch path, no torch.

:func:`predict_exported` mirrors the pipelines' ``predict_records``: System A's five methods
(``hybrid`` first, by :func:`histobreast.vote_rules.system_a_methods`), a plain classifier's
``image``, System B's six-view vote ``image`` and per-view ``patch``
(:func:`histobreast.predictions.region_methods`), a Spanhol 2016 member's ``image`` (its patches
combined by its patch rule), an ensemble's vote (``ensemble``, with its ``uncertainty`` column)
then each member's headline. Which one applies is export.json's ``inputs.kind``, never the
pipeline's name. :func:`predict_exported_images` / :func:`predict_to_csv` are the ``predict`` command on an
exported folder: the same scale rule, training-range flags, method choice, CSV and case review
(``--review``) as ``histobreast predict``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from histobreast.data.imageio import collect_images
from histobreast.data.records import ImageRecord, unlabelled
from histobreast.errors import CheckpointError
from histobreast.pipelines.image_predictions import ImagePredictions, check_outputs, write_review
from histobreast.pipelines.input_range import flag_unlike_training, prediction_scale
from histobreast.predictions import (
    Predictions,
    choose_method,
    combine_predictions,
    predictions_from_records,
    region_methods,
)
from histobreast.preprocess.key_region_samples import RegionSamples
from histobreast.preprocess.model_arrays import model_array
from histobreast.preprocess.views import average_over_views
from histobreast.runtime.folder import (
    EXPORT_JSON,
    INPUT_NAME,
    OUTPUT_NAME,
    ExportedEnsemble,
    ExportedModel,
    open_session,
    read_exported,
)
from histobreast.runtime.inputs import (
    hybrid_batches,
    image_batches,
    image_key_regions,
    key_region_params,
    model_stain,
    spanhol_patches,
)
from histobreast.vote_rules import DEFAULT_FUSION_WEIGHT, DEFAULT_MIN_SPREAD, combine_members, system_a_methods


def model_sessions(model: ExportedModel, threads: int | None = None) -> dict[str, Any]:
    """One onnxruntime session per network, each checked against the description (class count)."""
    sessions = {}
    n_classes = len(model.classes)
    for name, network in model.networks.items():
        session = open_session(network.path, threads)
        width = session.get_outputs()[0].shape[-1]
        if network.produces == "probabilities" and isinstance(width, int) and width != n_classes:
            raise CheckpointError(
                f"{network.path}: outputs {width} class probabilities but {model.path / EXPORT_JSON} "
                f"lists {n_classes} classes {model.classes}"
            )
        sessions[name] = session
    return sessions


def _run(session: Any, array: np.ndarray) -> np.ndarray:
    return session.run([OUTPUT_NAME], {INPUT_NAME: np.ascontiguousarray(array, dtype=np.float32)})[0]


def _system_a(
    model: ExportedModel, sessions: dict[str, Any], records: Sequence[ImageRecord], view: str | None, batch: int | None
) -> dict[str, np.ndarray]:
    kwargs = model.info.get("model_kwargs", {})
    global_parts, patch_parts = [], []
    for global_images, patches in hybrid_batches(model, records, view, batch):
        global_parts.append(_run(sessions[model.role_name("global")], global_images))
        flat = _run(sessions[model.role_name("local")], patches.reshape(-1, *patches.shape[2:]))
        patch_parts.append(flat.reshape(*patches.shape[:2], -1))
    return system_a_methods(
        np.concatenate(global_parts),
        np.concatenate(patch_parts),
        kwargs.get("fusion_weight", DEFAULT_FUSION_WEIGHT),
        kwargs.get("min_spread", DEFAULT_MIN_SPREAD),
    )


def _plain(
    model: ExportedModel, sessions: dict[str, Any], records: Sequence[ImageRecord], view: str | None, batch: int | None
) -> dict[str, np.ndarray]:
    parts = [_run(sessions[model.role_name("image")], images) for images in image_batches(model, records, view, batch)]
    return {"image": np.concatenate(parts).astype(np.float64)}


def system_b_features(encoders: Sequence[Any], crops: np.ndarray) -> np.ndarray:
    """System B's per-scale features ``(n, S, D)`` of uint8 crop stacks ``(n, S, s, s, 3)``: encoder
    ``i`` on scale ``i``."""
    inputs = model_array(crops)
    return np.stack([_run(encoder, inputs[:, i]) for i, encoder in enumerate(encoders)], axis=1)


def system_b_probabilities(
    encoders: Sequence[Any], fdnet: Any, crops: np.ndarray, batch_size: int | None = None
) -> np.ndarray:
    """Per-sample probabilities of System B's uint8 crop stacks: :func:`system_b_features`, then
    FDNet; ``batch_size`` samples per call (None: all at once)."""
    step = batch_size or max(1, len(crops))
    parts = [_run(fdnet, system_b_features(encoders, crops[i : i + step])) for i in range(0, len(crops), step)]
    return np.concatenate(parts)


def _system_b(
    model: ExportedModel,
    sessions: dict[str, Any],
    records: Sequence[ImageRecord],
    tta_views: Sequence[str],
    batch: int | None,
) -> dict[str, Predictions]:
    """Six views x KREM crops of each image (``tta_views`` replace the trained views, as in the torch
    path), the encoders and FDNet per sample, then the six-view vote and the per-view table."""
    views = tuple(tta_views) or tuple(model.inputs["views"])
    params, stain = key_region_params(model), model_stain(model)
    encoders = [sessions[n.name] for n in model.by_role("encoder")]
    fdnet = sessions[model.role_name("fdnet")]
    regions_of, sizes, probs = [], [], []
    for record in records:
        regions, crops, size = image_key_regions(model, record, views, params, stain)
        regions_of.append(regions)
        sizes.append(size)
        probs.append(system_b_probabilities(encoders, fdnet, crops, batch))
    samples = RegionSamples(list(records), model.classes, views, sizes, regions_of)
    return region_methods(samples, np.concatenate(probs) if probs else np.zeros((0, len(model.classes))))


def _spanhol(
    model: ExportedModel,
    sessions: dict[str, Any],
    records: Sequence[ImageRecord],
    tta_views: Sequence[str],
    batch: int | None,
) -> dict[str, Predictions]:
    """A Spanhol 2016 member: each image's sliding-window patch probabilities combined by its patch
    rule (TTA and batch size are not used, as in the torch path)."""
    stain, rule = model_stain(model), model.inputs["patch_rule"]
    rows = []
    for record in records:
        patches = np.concatenate(
            [_run(sessions[model.role_name("image")], b) for b in spanhol_patches(model, record, stain)]
        )
        rows.append(combine_members(patches[:, None, :], rule)[0])
    probs = np.stack(rows) if rows else np.zeros((0, len(model.classes)))
    return {"image": predictions_from_records(records, probs, model.classes)}


def _averaged(run: Any) -> Any:
    """A per-view runner (System A, plain) as a whole runner: TTA averages its runs over the views."""

    def predict(
        model: ExportedModel,
        sessions: dict[str, Any],
        records: Sequence[ImageRecord],
        tta_views: Sequence[str],
        batch: int | None,
    ) -> dict[str, Predictions]:
        probs = average_over_views(lambda view: run(model, sessions, records, view, batch), tta_views)
        return {name: predictions_from_records(records, p, model.classes) for name, p in probs.items()}

    return predict


#: How each kind of input building (export.json's ``inputs.kind``) predicts.
_INPUT_KINDS = {
    "hybrid": _averaged(_system_a),
    "image": _averaged(_plain),
    "key_regions": _system_b,
    "spanhol_patches": _spanhol,
}


def predict_model(
    model: ExportedModel,
    records: Sequence[ImageRecord],
    *,
    tta_views: Sequence[str] = (),
    batch_size: int | None = None,
    threads: int | None = None,
    sessions: Mapping[str, Any] | None = None,
) -> dict[str, Predictions]:
    """One exported model's predictions: one table per method, the headline first. ``batch_size``:
    images per onnxruntime call (System B: crop stacks, default one image's; Spanhol: not used).
    ``sessions``: :func:`model_sessions` opened once by a caller that predicts many times (None:
    opened here, on ``threads``)."""
    sessions = dict(sessions) if sessions is not None else model_sessions(model, threads)
    return _INPUT_KINDS[model.input_kind](model, sessions, records, tta_views, batch_size)


def predict_exported(
    folder: str | Path | ExportedModel | ExportedEnsemble,
    records: Sequence[ImageRecord],
    *,
    tta_views: Sequence[str] = (),
    batch_size: int | None = None,
    threads: int | None = None,
    sessions: Mapping[str, Any] | None = None,
) -> dict[str, Predictions]:
    """An exported model's methods, or an ensemble's vote followed by each member's headline.
    ``sessions``: :func:`open_sessions` of ``folder``, opened once by a caller that predicts many
    times (None: opened here, on ``threads``)."""
    exported = read_exported(folder) if isinstance(folder, (str, Path)) else folder
    options: dict[str, Any] = {"tta_views": tta_views, "batch_size": batch_size, "threads": threads}
    if isinstance(exported, ExportedModel):
        return predict_model(exported, records, sessions=sessions, **options)
    members = {
        name: next(iter(predict_model(m, records, sessions=sessions[name] if sessions else None, **options).values()))
        for name, m in exported.members.items()
    }
    return {"ensemble": combine_predictions(members, exported.rule), **members}  # type: ignore[arg-type]


def open_sessions(exported: ExportedModel | ExportedEnsemble, threads: int | None = None) -> dict[str, Any]:
    """:func:`predict_exported`'s sessions: a model's :func:`model_sessions`, or an ensemble's per member."""
    if isinstance(exported, ExportedModel):
        return model_sessions(exported, threads)
    return {name: model_sessions(member, threads) for name, member in exported.members.items()}


def headline_model(exported: ExportedModel | ExportedEnsemble) -> ExportedModel:
    """The exported model whose scale and training range apply (an ensemble's members share them)."""
    return exported if isinstance(exported, ExportedModel) else next(iter(exported.members.values()))


def headline_info(exported: ExportedModel | ExportedEnsemble) -> dict[str, Any]:
    """The model.json whose scale and training range apply (an ensemble's members share them)."""
    return headline_model(exported).info


def predict_exported_images(
    folder: str | Path,
    inputs: Sequence[str | Path],
    *,
    tta: bool = False,
    method: str | None = None,
    microns_per_pixel: float | None = None,
    batch_size: int | None = None,
    threads: int | None = None,
) -> ImagePredictions:
    """:func:`histobreast.pipelines.predict.predict_images` on an exported folder: the same scale rule,
    training-range flags and method choice, every method's table (the case review's readings)."""
    from histobreast.preprocess.views import SIX_VIEWS

    folder, paths = Path(folder), [Path(p) for p in inputs]
    exported = read_exported(folder)
    info = headline_info(exported)
    physical = bool(headline_model(exported).inputs["physical_scale"])  # export.json says (the registry loads torch)
    scale, note = prediction_scale(info, microns_per_pixel, folder, physical_pipeline=physical)
    records = unlabelled(collect_images(paths), scale)
    unlike = flag_unlike_training(records, info)
    results = predict_exported(
        exported, records, tta_views=SIX_VIEWS if tta else (), batch_size=batch_size, threads=threads
    )
    chosen, _ = choose_method(results, method, unlike)
    rule = exported.rule if isinstance(exported, ExportedEnsemble) else None
    sources = [str(p) for p in paths]
    return ImagePredictions(folder, sources, records, results, chosen, rule, tta, unlike, note)


def predict_to_csv(
    folder: Path,
    inputs: list[Path],
    out: Path,
    *,
    review: Path | None = None,
    thresholds: Mapping[str, float] | None = None,
    **options: Any,
) -> list[str]:
    """``histobreast predict`` on an exported folder: writes ``out`` (and the case review into ``review``,
    flagged by ``thresholds``: min_confidence / min_agreement) and returns the lines to print;
    ``options`` as :func:`predict_exported_images`'."""
    check_outputs(inputs, out, review)
    result = predict_exported_images(folder, inputs, **options)
    pred = result.predictions
    pred.to_csv(out)
    summary = ", ".join(f"{c} {n}" for c, n in result.class_counts().items())
    lines = [result.scale_note] if result.scale_note else []
    lines += [
        f"outside the training images (flagged): {i}: {'; '.join(r)}"
        for i, r in sorted(result.outside_training.items())
    ]
    lines.append(f"{len(pred)} image{'s' * (len(pred) != 1)} ({result.describe()}, onnxruntime): {summary} -> {out}")
    if review is not None:
        written = write_review(result, review, **(thresholds or {}))
        lines.append(f"case review: {written['html']}")
    return lines
