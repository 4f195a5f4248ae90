"""``histobreast export``: a model or ensemble folder -> an exported folder the torch-free runtime runs.

Every network of the model (:func:`histobreast.export.networks.model_networks`) becomes one
``.onnx`` checked for parity with PyTorch; ``export.json`` (format in :mod:`histobreast.runtime.folder`)
lists them (name, file, role), says how their inputs are built (``inputs``:
:func:`~histobreast.export.networks.model_inputs`) and carries the source model.json whole, so classes, pre-processing,
stain target, µm/px, fusion λ and vote rules travel with the graphs. An ensemble exports every
member into its own sub-folder. The folder is built in a temporary sibling and renamed when
complete: an interrupted or refused export leaves nothing.
"""

from __future__ import annotations

import datetime as _dt
from pathlib import Path
from typing import Any

from histobreast.atomic import atomic_folder, atomic_write_json
from histobreast.errors import ConfigError
from histobreast.export.networks import model_inputs, model_networks
from histobreast.export.onnx import PARITY_TOLERANCE, check_parity, export_network
from histobreast.outputs import refuse_output_over_inputs
from histobreast.pipelines.bagging import is_ensemble_folder, read_ensemble_folder
from histobreast.pipelines.package import load_model_folder
from histobreast.runtime.folder import EXPORT_FORMAT, EXPORT_JSON, EXPORT_VERSION, file_sha256, read_exported


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def network_entry(
    name: str, path: Path, role: str, produces: str, sample_shape: tuple[int, ...], precision: str
) -> dict:
    """One ``networks`` entry of export.json (the file is named relative to its folder)."""
    return {
        "name": name,
        "file": path.name,
        "sha256": file_sha256(path),
        "role": role,
        "produces": produces,
        "sample_shape": list(sample_shape),
        "precision": precision,
    }


def export_model_into(source: Path, folder: Path, tolerance: float = PARITY_TOLERANCE) -> dict[str, Any]:
    """Export model folder ``source`` into the existing empty ``folder``; returns its export.json."""
    loaded = load_model_folder(source)
    entries, parity = [], {}
    for network in model_networks(loaded):
        path = export_network(network, folder / f"{network.name}.onnx")
        parity[network.name] = check_parity(network, path, tolerance)
        entries.append(network_entry(network.name, path, network.role, network.output, network.sample_shape, "fp32"))
    description = {
        "format": EXPORT_FORMAT,
        "version": EXPORT_VERSION,
        "kind": "model",
        "inputs": model_inputs(loaded),
        "networks": entries,
        "model": loaded.info,
        "parity": {"max_abs_difference": parity, "tolerance": tolerance},
        "exported_from": str(source.resolve()),
        "created": _now(),
    }
    atomic_write_json(folder / EXPORT_JSON, description)
    return description


def member_folder(name: str) -> str:
    """A member's sub-folder name in an exported ensemble (its display name, one path segment)."""
    return name.replace("/", "__")


def check_new_folder(out: Path, inputs: list[Path]) -> None:
    """``--out`` must be a new folder, neither an input nor around or inside one."""
    refuse_output_over_inputs(out, inputs, "--out", folder=True)
    if out.exists():
        raise ConfigError(f"--out {out}: already exists; choose a new folder (exports never overwrite)")


def export_onnx(source: str | Path, out: str | Path, tolerance: float = PARITY_TOLERANCE) -> Path:
    """Export a model or ensemble folder to the new folder ``out``; returns ``out``."""
    source, out = Path(source), Path(out)
    check_new_folder(out, [source])
    with atomic_folder(out) as tmp:
        if not is_ensemble_folder(source):
            export_model_into(source, tmp, tolerance)
        else:
            ensemble = read_ensemble_folder(source)
            members = []
            for name, member in zip(ensemble.member_names(), ensemble.members):
                (tmp / member_folder(name)).mkdir()
                export_model_into(member, tmp / member_folder(name), tolerance)
                members.append({"name": name, "folder": member_folder(name)})
            manifest = {
                "format": EXPORT_FORMAT,
                "version": EXPORT_VERSION,
                "kind": "ensemble",
                "rule": ensemble.rule,
                "classes": ensemble.info.get("classes"),
                "members": members,
                "exported_from": str(source.resolve()),
                "created": _now(),
            }
            atomic_write_json(tmp / EXPORT_JSON, manifest)
        read_exported(tmp)  # what the runtime will read: checked before the folder appears
    return out
