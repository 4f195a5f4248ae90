"""Exported folder + records -> the same ``Predictions`` (and predictions.csv) as the PyTorch path, no torch.

:func:`predict_exported` mirrors the pipelines' ``predict_records``: System A's five methods
(``hybrid`` first, by :func:`histobreast.vote_rules.system_a_methods`), a plain classifier's
``image``, an ensemble's vote (``ensemble``, with its ``uncertainty`` column) then each member's
headline. :func:`predict_exported_images` / :func:`predict_to_csv` are the ``predict`` command on an
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
from histobreast.predictions import Predictions, choose_method, combine_predictions, predictions_from_records
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
from histobreast.runtime.inputs import hybrid_batches, image_batches
from histobreast.vote_rules import DEFAULT_FUSION_WEIGHT, DEFAULT_MIN_SPREAD, system_a_methods


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
        global_parts.append(_run(sessions["global"], global_images))
        flat = _run(sessions["local"], patches.reshape(-1, *patches.shape[2:]))
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
    parts = [_run(sessions["image"], images) for images in image_batches(model, records, view, batch)]
    return {"image": np.concatenate(parts).astype(np.float64)}


_PIPELINES = {"zhu2019": _system_a, "image": _plain}


def predict_model(
    model: ExportedModel,
    records: Sequence[ImageRecord],
    *,
    tta_views: Sequence[str] = (),
    batch_size: int | None = None,
    threads: int | None = None,
) -> dict[str, Predictions]:
    """One exported model's predictions: one table per method, the headline first."""
    if model.pipeline not in _PIPELINES:
        raise CheckpointError(
            f"{model.path / EXPORT_JSON}: the runtime applies {', '.join(_PIPELINES)} models, not {model.pipeline!r} "
            "(System B exports and is benchmarked, but its KREM views are not in the runtime yet)"
        )
    sessions = model_sessions(model, threads)
    run = _PIPELINES[model.pipeline]
    probs = average_over_views(lambda view: run(model, sessions, records, view, batch_size), tta_views)
    return {name: predictions_from_records(records, p, model.classes) for name, p in probs.items()}


def predict_exported(
    folder: str | Path | ExportedModel | ExportedEnsemble,
    records: Sequence[ImageRecord],
    *,
    tta_views: Sequence[str] = (),
    batch_size: int | None = None,
    threads: int | None = None,
) -> dict[str, Predictions]:
    """An exported model's methods, or an ensemble's vote followed by each member's headline."""
    exported = read_exported(folder) if isinstance(folder, (str, Path)) else folder
    options: dict[str, Any] = {"tta_views": tta_views, "batch_size": batch_size, "threads": threads}
    if isinstance(exported, ExportedModel):
        return predict_model(exported, records, **options)
    members = {name: next(iter(predict_model(m, records, **options).values())) for name, m in exported.members.items()}
    return {"ensemble": combine_predictions(members, exported.rule), **members}  # type: ignore[arg-type]


def headline_info(exported: ExportedModel | ExportedEnsemble) -> dict[str, Any]:
    """The model.json whose scale and training range apply (an ensemble's members share them)."""
    return (exported if isinstance(exported, ExportedModel) else next(iter(exported.members.values()))).info


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
    # the runtime's pipelines (PIPELINE_NETWORKS) resize whole images or grids; the registry would load torch
    scale, note = prediction_scale(info, microns_per_pixel, folder, physical_pipeline=False)
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
