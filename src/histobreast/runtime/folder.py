"""Exported folders: ``export.json`` + one ``.onnx`` per network, read and checked without torch.

A model's exported folder::

    exported/
      export.json   {"format": "histobreast-onnx", "version": 1, "kind": "model",
                     "inputs": {"kind": "hybrid" | "image" | "key_regions" | "spanhol_patches",
                                "physical_scale", ...the kind's own settings},
                     "networks": [{"name", "file", "sha256", "role", "produces", "sample_shape",
                                   "precision"}, ...],
                     "model": {...the source model.json: pipeline, classes, preprocess (stain target
                               included), microns_per_pixel, training_inputs, model_kwargs (fusion λ,
                               vote rule), config...},
                     "parity": {network: max abs difference}, "quantization": {...} (INT8 only)}
      global.onnx, local.onnx     (System A) | image.onnx | encoder0.onnx... fdnet.onnx (System B)

An ensemble's exported folder holds ``{"kind": "ensemble", "rule", "classes", "members": [{"name",
"folder"}]}`` and one exported model folder per member. Every problem is one line naming the file.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from histobreast.config import read_json
from histobreast.errors import CheckpointError

EXPORT_FORMAT = "histobreast-onnx"
EXPORT_VERSION = 1
EXPORT_JSON = "export.json"
INPUT_NAME, OUTPUT_NAME = "input", "output"
ENSEMBLE_RULES = ("sum", "max", "majority")
#: The network roles each kind of input building needs, in order (``key_regions``: one encoder per
#: level, then FDNet); export.json's ``inputs.kind`` says which kind a model is.
INPUT_ROLES = {
    "hybrid": ("global", "local"),
    "image": ("image",),
    "spanhol_patches": ("image",),
    "key_regions": ("encoder", "fdnet"),
}


@dataclass
class ExportedNetwork:
    """One network of an exported folder: its file and what it maps to what."""

    name: str
    path: Path
    role: str
    produces: str
    sample_shape: tuple[int, ...]
    precision: str


@dataclass
class ExportedModel:
    """A checked exported model folder: its networks and the source model's description."""

    path: Path
    description: dict[str, Any]
    networks: dict[str, ExportedNetwork]

    @property
    def info(self) -> dict[str, Any]:
        """The source model's ``model.json`` (pipeline, classes, preprocess, scale, training range...)."""
        return self.description["model"]

    @property
    def classes(self) -> list[str]:
        return list(self.info["classes"])

    @property
    def inputs(self) -> dict[str, Any]:
        """How the networks' inputs are built: export.json's ``inputs`` (``kind``, ``physical_scale``...)."""
        return self.description["inputs"]

    @property
    def input_kind(self) -> str:
        return str(self.inputs["kind"])

    def by_role(self, role: str) -> list[ExportedNetwork]:
        """The networks of ``role``, in export.json's order (System B: its encoders, coarse first)."""
        return [n for n in self.networks.values() if n.role == role]

    def role_name(self, role: str) -> str:
        """The name of the one network of ``role`` (the read checked there is exactly one)."""
        return self.by_role(role)[0].name


@dataclass
class ExportedEnsemble:
    """A checked exported ensemble: its members (exported model folders) and their voting rule."""

    path: Path
    description: dict[str, Any]
    members: dict[str, ExportedModel]

    @property
    def rule(self) -> str:
        return str(self.description["rule"])


def is_exported_folder(path: str | Path) -> bool:
    """Whether ``path`` is a folder holding ``export.json`` (what ``predict`` runs through onnxruntime)."""
    return (Path(path) / EXPORT_JSON).is_file()


def file_sha256(path: Path) -> str:
    """Hex SHA-256 of a file (export.json records each .onnx's, so truncation or swaps are caught)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def read_description(path: str | Path) -> dict[str, Any]:
    """``path/export.json``, checked for format and version; errors say what the folder is instead."""
    path = Path(path)
    meta = path / EXPORT_JSON
    if not meta.is_file():
        hint = " (a model folder? export it first: histobreast export)" if (path / "model.json").is_file() else ""
        raise CheckpointError(f"{path}: not an exported folder (no {EXPORT_JSON}){hint}")
    description = read_json(meta, "exported model", error=CheckpointError, format=EXPORT_FORMAT, version=EXPORT_VERSION)
    if description.get("kind") not in ("model", "ensemble"):
        raise CheckpointError(f"{meta}: 'kind' must be 'model' or 'ensemble', got {description.get('kind')!r}")
    return description


def _network(folder: Path, entry: Mapping[str, Any], meta: Path) -> ExportedNetwork:
    try:
        name, file, sha, role = str(entry["name"]), str(entry["file"]), str(entry["sha256"]), str(entry["role"])
        shape = tuple(int(n) for n in entry["sample_shape"])
    except (KeyError, TypeError, ValueError) as err:
        raise CheckpointError(f"{meta}: a 'networks' entry lacks name/file/sha256/role/sample_shape ({err})") from None
    onnx_path = folder / file
    if not onnx_path.is_file():
        raise CheckpointError(f"{onnx_path}: network {name!r} listed in {meta.name} is missing")
    if file_sha256(onnx_path) != sha:
        raise CheckpointError(f"{onnx_path}: does not match its sha256 in {meta.name} (truncated or replaced)")
    produces = str(entry.get("produces", "probabilities"))
    return ExportedNetwork(name, onnx_path, role, produces, shape, str(entry["precision"]))


def _check_inputs(description: Mapping[str, Any], meta: Path) -> None:
    inputs = description.get("inputs")
    if not isinstance(inputs, dict) or "kind" not in inputs or "physical_scale" not in inputs:
        raise CheckpointError(
            f"{meta}: no 'inputs' description (made by an older histobreast export); re-export the model folder"
        )
    if inputs["kind"] not in INPUT_ROLES:
        raise CheckpointError(f"{meta}: inputs kind {inputs['kind']!r} is not one of {', '.join(INPUT_ROLES)}")


def _check_roles(model: ExportedModel, meta: Path) -> None:
    """Every role the input kind needs is there once (System B: one encoder per level), nothing else."""
    kind = model.input_kind
    wanted = {role: 1 for role in INPUT_ROLES[kind]}
    if kind == "key_regions":
        wanted["encoder"] = len(model.inputs.get("levels", ()))
    have = {role: len(model.by_role(role)) for role in {*wanted, *(n.role for n in model.networks.values())}}
    if have != {role: wanted.get(role, 0) for role in have}:
        listed = [f"{n.name} ({n.role})" for n in model.networks.values()]
        needs = ", ".join(f"{count} {role}" for role, count in wanted.items())
        raise CheckpointError(f"{meta}: inputs {kind!r} need networks {needs}; export.json lists {listed}")


def read_exported_model(path: str | Path) -> ExportedModel:
    """An exported model folder, every listed ``.onnx`` present and matching its checksum."""
    path = Path(path)
    description = read_description(path)
    meta = path / EXPORT_JSON
    if description["kind"] != "model":
        raise CheckpointError(f"{meta}: is an exported ensemble; read it with read_exported")
    info = description.get("model")
    if not isinstance(info, dict) or not all(k in info for k in ("pipeline", "classes", "preprocess")):
        raise CheckpointError(f"{meta}: 'model' must hold the source model.json (pipeline, classes, preprocess)")
    entries = description.get("networks")
    if not isinstance(entries, list) or not entries:
        raise CheckpointError(f"{meta}: 'networks' must be a non-empty list")
    _check_inputs(description, meta)
    networks = {n.name: n for n in (_network(path, e, meta) for e in entries)}
    model = ExportedModel(path, description, networks)
    _check_roles(model, meta)
    return model


def read_exported(path: str | Path) -> ExportedModel | ExportedEnsemble:
    """An exported model or ensemble folder, checked (members included)."""
    path = Path(path)
    description = read_description(path)
    if description["kind"] == "model":
        return read_exported_model(path)
    entries = description.get("members")
    if (
        not isinstance(entries, list)
        or not entries
        or not all(isinstance(e, dict) and isinstance(e.get("name"), str) and e.get("folder") for e in entries)
    ):
        raise CheckpointError(f"{path / EXPORT_JSON}: 'members' must be a non-empty list of {{name, folder}}")
    if description.get("rule") not in ENSEMBLE_RULES:
        raise CheckpointError(f"{path / EXPORT_JSON}: 'rule' must be one of {', '.join(ENSEMBLE_RULES)}")
    members = {e["name"]: read_exported_model(path / str(e["folder"])) for e in entries}
    return ExportedEnsemble(path, description, members)


def open_session(path: str | Path, threads: int | None = None) -> Any:
    """An onnxruntime CPU session of ``path``; ``threads`` caps its intra-op threads (None: ORT's default).

    A file onnxruntime cannot parse (truncated, not ONNX) is one line naming it.
    """
    import onnxruntime as ort

    options = ort.SessionOptions()
    if threads is not None:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    options.log_severity_level = 3  # errors only: the QDQ graphs' constant-folding notes are not the user's
    try:
        return ort.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])
    except Exception as err:  # onnxruntime raises its own exception types for unreadable graphs
        raise CheckpointError(f"{path}: onnxruntime cannot load it ({str(err).splitlines()[0][:200]})") from None
