"""Explain a model folder or an ensemble on images, and write the overlays and raw maps.

``explain(model, records)`` dispatches on the model's pipeline (System A hybrid, System B,
plain classifier, a Spanhol 2016 member). An ensemble explains the class its members' vote calls: every member's
headline map of that class, combined by the ensemble's rule (sum: the mean; max: the per-pixel
maximum; majority: the mean over the members that voted for the class). ``write_explanations``
writes, under ``out_dir``::

    <image>.png                one figure per image: the maps over it, a colour bar, the class explained
    maps/<image>/<map>.npy     every map (float32, the image shrunk to at most 512 px on its longest side)
    explanations.json          per image: class explained, probabilities, method, map files and size, boxes
"""

from __future__ import annotations

import io
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from histobreast.atomic import atomic_write_bytes, atomic_write_json
from histobreast.data.imageio import read_rgb
from histobreast.data.records import ImageRecord
from histobreast.errors import ConfigError
from histobreast.explain.cam import DEFAULT_METHOD, ExplainError, check_method, rescale
from histobreast.explain.maps import Explanation
from histobreast.explain.overlay import card_overlay, plot_explanation
from histobreast.explain.plain import explain_classifier
from histobreast.explain.spanhol import explain_spanhol_member
from histobreast.explain.system_a import explain_hybrid
from histobreast.explain.system_b import explain_msmv
from histobreast.pipelines import image, liu2022, spanhol2016, zhu2019
from histobreast.pipelines.bagging import is_ensemble_folder, predict_ensemble, read_ensemble_folder
from histobreast.pipelines.package import LoadedModel, as_loaded

Explainer = Callable[..., list[Explanation]]
#: Model pipelines that have maps, and how each is explained.
EXPLAINERS: dict[str, Explainer] = {
    zhu2019.PIPELINE.name: explain_hybrid,
    liu2022.PIPELINE.name: explain_msmv,
    image.PIPELINE.name: explain_classifier,
    spanhol2016.PIPELINE.name: explain_spanhol_member,  # each member; the fused baseline is an ensemble folder
}
MANIFEST = "explanations.json"


def class_index(name: str, classes: Sequence[str]) -> int:
    """The index of class ``name``; a one-line ConfigError naming the model's classes otherwise."""
    if name not in classes:
        raise ConfigError(f"--class: {name!r} is not one of the model's classes {list(classes)}")
    return list(classes).index(name)


def explain_loaded(
    loaded: LoadedModel,
    records: Sequence[ImageRecord],
    *,
    method: str = DEFAULT_METHOD,
    targets: Sequence[int | None] | None = None,
) -> list[Explanation]:
    """One :class:`Explanation` per record from a loaded model folder (see :data:`EXPLAINERS`)."""
    check_method(method)
    if loaded.pipeline not in EXPLAINERS:
        raise ExplainError(
            f"{loaded.path}: model kind {loaded.pipeline!r} has no map; maps exist for {', '.join(EXPLAINERS)} models"
        )
    return EXPLAINERS[loaded.pipeline](loaded, records, method=method, targets=targets)


def explain(
    model: str | Path | LoadedModel,
    records: Sequence[ImageRecord],
    *,
    method: str = DEFAULT_METHOD,
    targets: Sequence[int | None] | None = None,
    device: str = "auto",
) -> list[Explanation]:
    """Explanations of ``records`` by a model folder, a loaded model or an ensemble folder.

    ``targets[i]`` is the class index to explain for record ``i`` (None: the model's call).
    """
    check_method(method)
    if not isinstance(model, LoadedModel) and is_ensemble_folder(model):
        return explain_ensemble(model, records, method=method, targets=targets, device=device)
    return explain_loaded(as_loaded(model, device), records, method=method, targets=targets)


def explain_ensemble(
    path: str | Path,
    records: Sequence[ImageRecord],
    *,
    method: str = DEFAULT_METHOD,
    targets: Sequence[int | None] | None = None,
    device: str = "auto",
) -> list[Explanation]:
    """Maps ``ensemble`` (headline: the members' maps combined by the rule) and one per member."""
    folder = read_ensemble_folder(path)
    voted = predict_ensemble(path, records, device=device)
    called = voted.ensemble.predicted
    chosen = [int(called[i]) if targets is None or targets[i] is None else int(targets[i]) for i in range(len(records))]
    members = {
        name: explain_loaded(as_loaded(member, device), records, method=method, targets=chosen)
        for name, member in zip(folder.member_names(), folder.members)
    }
    out = []
    for i, record in enumerate(records):
        maps = {name: explanations[i].maps[explanations[i].headline] for name, explanations in members.items()}
        if folder.rule == "max":
            combined = np.max(list(maps.values()), axis=0)
        else:
            voters = [n for n in maps if folder.rule == "sum" or voted.members[n].predicted[i] == chosen[i]]
            combined = np.mean([maps[n] for n in voters or list(maps)], axis=0)
        first = next(iter(members.values()))[i]
        out.append(
            Explanation.of_record(
                record,
                classes=voted.ensemble.classes,
                probs=voted.ensemble.probs[i],
                target=chosen[i],
                method=method,
                image_size=first.image_size,
                maps={"ensemble": rescale(combined), **maps},
            )
        )
    return out


def card_overlays(
    model: str | Path, records: Sequence[ImageRecord], targets: Sequence[int], *, device: str = "auto"
) -> dict[str, tuple[np.ndarray, str]]:
    """For the case review's cards: per image id, the headline map of class ``targets[i]`` blended on the
    image (:func:`~histobreast.explain.overlay.card_overlay`) and its caption."""
    overlays = {}
    for found in explain(model, records, targets=targets, device=device):
        caption = f"right: {found.method} map of {found.target_class} ({found.headline} map)"
        overlays[found.image_id] = (card_overlay(found, read_rgb(found.path)), caption)
    return overlays


def safe_name(text: str) -> str:
    """``text`` as a file name: runs of characters other than letters, digits, ``_.-`` become ``_``."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text)


def _npy_bytes(values: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, values.astype(np.float32))
    return buffer.getvalue()


def write_explanations(explanations: Sequence[Explanation], out_dir: str | Path, model: str = "") -> Path:
    """Write each explanation's figure and maps, then ``explanations.json`` (last; returned)."""
    out_dir = Path(out_dir)
    entries: list[dict[str, Any]] = []
    for explanation in explanations:
        name = safe_name(explanation.image_id)
        figure = plot_explanation(explanation, read_rgb(explanation.path), out_dir / f"{name}.png")
        files = {}
        for map_name, values in explanation.maps.items():
            target = out_dir / "maps" / name / f"{safe_name(map_name)}.npy"
            atomic_write_bytes(target, _npy_bytes(values))
            files[map_name] = target.relative_to(out_dir).as_posix()
        height, width = explanation.maps[explanation.headline].shape
        entries.append(
            {
                "image_id": explanation.image_id,
                "path": explanation.path,
                "class_explained": explanation.target_class,
                "probabilities": dict(zip(explanation.classes, map(float, explanation.probs))),
                "method": explanation.method,
                "figure": figure.relative_to(out_dir).as_posix(),
                "headline": explanation.headline,
                "maps": files,
                "map_size": [width, height],
                "image_size": list(explanation.image_size),
                "boxes": {k: [{"box": list(b), "kind": kind} for b, kind in v] for k, v in explanation.boxes.items()},
            }
        )
    return atomic_write_json(out_dir / MANIFEST, {"model": model, "images": entries})
