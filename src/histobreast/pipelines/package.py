"""Model folders: one trained classifier with everything needed to apply it to new images.

A model folder is what ``predict``, ``evaluate``, ``prune`` and ``ensemble`` consume::

    model/
      model.json          {"format": "histobreast-model", "version": 1, "pipeline", "model_name",
                           "model_kwargs", "classes", "preprocess", "microns_per_pixel", "config",
                           "metrics", "created", ...extra}
      model.safetensors   the weights

``model_kwargs`` rebuild the network with ``create_model(model_name, **model_kwargs)`` (a pruned
network's widths included); ``preprocess`` is the resolved pre-processing section with the fitted
stain target under ``preprocess.stain.fitted``. An ensemble folder (``ensemble.json``) is not a
model folder: :func:`load_model_folder` refuses it and names the ensemble API.
"""

from __future__ import annotations

import datetime as _dt
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from histobreast.atomic import atomic_write_json
from histobreast.config import build_dataclass, config_to_dict, read_json, to_jsonable
from histobreast.data.records import scale_problem
from histobreast.engine.distributed import resolve_device
from histobreast.errors import CheckpointError
from histobreast.models import create_model
from histobreast.models.googlenet_sep import GoogLeNetSEP
from histobreast.models.hybrid import HybridCNN
from histobreast.models.weights import load_weights, save_weights
from histobreast.pipelines.config import ExperimentConfig, parse_config
from histobreast.pipelines.registry import exclusive_networks, get_pipeline, pipeline_names
from histobreast.preprocess.config import PreprocessConfig
from histobreast.preprocess.stain import StainNormalizer, fitted_stain

MODEL_FORMAT = "histobreast-model"
ENSEMBLE_FORMAT = "histobreast-ensemble"
FORMAT_VERSION = 1
MODEL_JSON = "model.json"
WEIGHTS_FILE = "model.safetensors"
ENSEMBLE_JSON = "ensemble.json"

# Models whose own ``model_kwargs`` property rebuilds them (pruned widths included), by registry name.
_SELF_DESCRIBING: tuple[tuple[type[nn.Module], str], ...] = (
    (HybridCNN, "hybrid_googlenet_sep"),
    (GoogLeNetSEP, "googlenet_sep"),
)


@dataclass
class LoadedModel:
    """A model folder in memory: the model (eval mode), its ``model.json`` and what it implies."""

    model: nn.Module
    info: dict[str, Any]
    classes: list[str]
    pipeline: str
    cfg: ExperimentConfig
    path: Path
    stain: StainNormalizer | None = None

    @property
    def preprocess(self) -> dict[str, Any]:
        """The resolved pre-processing section stored with the model."""
        return dict(self.info.get("preprocess", {}))


def model_identity(model: nn.Module, cfg: ExperimentConfig, classes: Sequence[str]) -> tuple[str, dict[str, Any]]:
    """``(registry name, kwargs)`` that rebuild ``model``: its own ``model_kwargs`` for System A's
    networks (so pruned widths survive), else ``cfg.model`` with ``num_classes`` filled in."""
    for cls, name in _SELF_DESCRIBING:
        if isinstance(model, cls):
            return name, dict(model.model_kwargs)  # type: ignore[attr-defined]
    return cfg.model.name, {"num_classes": cfg.model.num_classes or len(classes), **cfg.model.kwargs}


def stain_section(cfg: ExperimentConfig, stain: StainNormalizer | None) -> dict[str, Any]:
    """``preprocess`` as stored in model.json: the config section plus the fitted stain target."""
    section = config_to_dict(cfg.preprocess)
    section["stain"]["fitted"] = stain.to_dict() if stain is not None else None
    return section


def images_scale(records: Sequence[Any]) -> float | None:
    """The median µm/px of training records: the scale ``predict`` assumes for new images by default."""
    scales = sorted(r.microns_per_pixel for r in records)
    return scales[len(scales) // 2] if scales else None


def save_model_folder(
    path: str | Path,
    model: nn.Module,
    cfg: ExperimentConfig,
    classes: Sequence[str],
    *,
    stain: StainNormalizer | None = None,
    metrics: Mapping[str, Any] | None = None,
    extra: Mapping[str, Any] | None = None,
    model_name: str | None = None,
    model_kwargs: Mapping[str, Any] | None = None,
    microns_per_pixel: float | None = None,
    training_inputs: Mapping[str, Any] | None = None,
) -> Path:
    """Write ``model.safetensors`` then ``model.json`` (atomically, the JSON last) into ``path``.

    ``model_name``/``model_kwargs`` default to :func:`model_identity`; ``microns_per_pixel`` (the
    training images' scale, see :func:`images_scale`) to ``data.microns_per_pixel``. ``extra`` keys
    are added to model.json (they may not replace the standard ones). ``training_inputs`` (see
    :func:`histobreast.pipelines.input_range.training_inputs`) lets ``predict`` flag unlike inputs.
    Returns ``path``.
    """
    path = Path(path)
    name, kwargs = model_identity(model, cfg, classes)
    name = model_name or name
    kwargs = dict(model_kwargs) if model_kwargs is not None else kwargs
    # The start file is spent: model.safetensors holds the trained weights, so the folder loads
    # without it (the config below still names it, for the leakage record).
    kwargs.pop("encoder_weights", None)
    info: dict[str, Any] = {
        "format": MODEL_FORMAT,
        "version": FORMAT_VERSION,
        "pipeline": cfg.pipeline,
        "model_name": name,
        "model_kwargs": kwargs,
        "classes": list(classes),
        "preprocess": stain_section(cfg, stain),
        "microns_per_pixel": microns_per_pixel if microns_per_pixel is not None else cfg.data.microns_per_pixel,
        "config": config_to_dict(cfg),
        "metrics": to_jsonable(dict(metrics or {})),
        **({"training_inputs": dict(training_inputs)} if training_inputs else {}),
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }
    clashes = sorted(set(extra or {}) & set(info))
    if clashes:
        raise ValueError(f"extra keys {clashes} would replace standard model.json keys")
    info.update(extra or {})
    save_weights(model, path / WEIGHTS_FILE)
    atomic_write_json(path / MODEL_JSON, info)
    return path


def read_model_info(path: str | Path) -> dict[str, Any]:
    """The ``model.json`` of a model folder, checked; errors say what the folder is instead."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"{path}: model folder not found")
    if path.is_file():
        raise CheckpointError(f"{path}: expected a model folder (holding {MODEL_JSON} and {WEIGHTS_FILE}), got a file")
    if (path / ENSEMBLE_JSON).is_file():
        raise CheckpointError(
            f"{path}: is an ensemble ({ENSEMBLE_JSON}), not a single model; load it with "
            "histobreast.pipelines.bagging, or pass it to `histobreast predict` or `histobreast ensemble evaluate`"
        )
    meta = path / MODEL_JSON
    if not meta.is_file():
        hint = " (an experiment folder? its models are in fold*/model)" if any(path.glob("fold*/model")) else ""
        raise CheckpointError(f"{path}: no {MODEL_JSON}; not a model folder{hint}")
    info = read_json(meta, "model", error=CheckpointError, format=MODEL_FORMAT, version=FORMAT_VERSION)
    missing = [k for k in ("pipeline", "model_name", "model_kwargs", "classes", "config") if k not in info]
    if missing:
        raise CheckpointError(f"{meta}: missing keys {missing}")
    problem = next(_info_problems(info), None)
    if problem is not None:
        raise CheckpointError(f"{meta}: {problem[0]}: {problem[1]}")
    return info


def _info_problems(info: Mapping[str, Any]) -> Iterator[tuple[str, str]]:
    """(key, problem) for values of a model.json that cannot be what :func:`save_model_folder` wrote."""
    classes, kwargs, scale = info["classes"], info["model_kwargs"], info.get("microns_per_pixel")
    if not isinstance(classes, list) or len(classes) < 2 or not all(isinstance(c, str) and c for c in classes):
        yield "classes", f"must be a list of at least two class names, got {classes!r}"
    elif len(set(classes)) != len(classes):
        yield "classes", f"has duplicates: {classes}"
    if not isinstance(kwargs, dict):
        yield "model_kwargs", f"must be a mapping, got {kwargs!r}"
    elif "num_classes" in kwargs and isinstance(classes, list) and kwargs["num_classes"] != len(classes):
        yield "model_kwargs.num_classes", f"is {kwargs['num_classes']!r} but 'classes' lists {len(classes)}"
    if scale is not None and (isinstance(scale, bool) or not isinstance(scale, (int, float)) or scale_problem(scale)):
        yield (
            "microns_per_pixel",
            scale_problem(scale) if isinstance(scale, (int, float)) else f"not a number: {scale!r}",
        )
    if not isinstance(info.get("preprocess", {}), dict):
        yield "preprocess", f"must be a mapping, got {info['preprocess']!r}"
    name, pipeline = info["model_name"], info["pipeline"]
    # A network only one pipeline can apply (its predict_records relies on their branches or views),
    # and that pipeline applies only its own networks.
    if pipeline not in pipeline_names():
        yield "pipeline", f"must be one of {', '.join(pipeline_names())}, got {pipeline!r}"
        return
    owners = exclusive_networks()
    if owners.get(name, pipeline) != pipeline or (name not in owners and get_pipeline(pipeline).networks):
        yield "model_name", f"{name!r} is not a network of the {pipeline!r} pipeline"


def _preprocess_of(info: Mapping[str, Any], cfg: ExperimentConfig, meta: str) -> PreprocessConfig:
    """The model's pre-processing: its ``preprocess`` section (the one source of truth), validated."""
    section = to_jsonable(dict(info.get("preprocess") or config_to_dict(cfg.preprocess)))
    section["stain"] = {k: v for k, v in dict(section.get("stain") or {}).items() if k != "fitted"}
    return build_dataclass(PreprocessConfig, section, source=meta, prefix="preprocess")


def load_model_folder(path: str | Path, device: str = "cpu") -> LoadedModel:
    """Rebuild a model folder's network, load its weights, put it in eval mode on ``device``."""
    path = Path(path)
    info = read_model_info(path)
    meta = str(path / MODEL_JSON)
    cfg = parse_config(info["config"], source=f"{meta}: config")
    cfg = replace(cfg, preprocess=_preprocess_of(info, cfg, meta))
    kwargs = dict(info["model_kwargs"])
    try:
        model = create_model(info["model_name"], **kwargs)
    except (TypeError, ValueError, KeyError) as err:
        raise CheckpointError(f"{meta}: model_kwargs do not build {info['model_name']!r} ({err})") from err
    load_weights(model, path / WEIGHTS_FILE)
    model.to(device).eval()
    return LoadedModel(
        model=model,
        info=info,
        classes=list(info["classes"]),
        pipeline=info["pipeline"],
        cfg=cfg,
        path=path,
        stain=fitted_stain(info, meta),
    )


def as_loaded(model_folder_or_loaded: str | Path | LoadedModel, device: str | torch.device = "auto") -> LoadedModel:
    """A :class:`LoadedModel` on ``device`` (``auto``: the GPU when there is one) from a folder or a loaded model."""
    device = resolve_device(device) if isinstance(device, str) else device
    if isinstance(model_folder_or_loaded, LoadedModel):
        model_folder_or_loaded.model.to(device)
        return model_folder_or_loaded
    return load_model_folder(model_folder_or_loaded, device=str(device))


def finished_model_folder(fold_dir: str | Path, resume: bool) -> Path | None:
    """``fold_dir/model`` when resuming a fold whose model folder is already written, else None."""
    target = Path(fold_dir) / "model"
    return target if resume and (target / MODEL_JSON).is_file() else None
