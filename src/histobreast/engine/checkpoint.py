"""Checkpoints: safetensors weights + a JSON state, written so that a crash never leaves half of one.

A checkpoint named ``tag`` (``last``, ``best``) in a folder is three files::

    <tag>.json                               what it is: step, metrics, model_name/kwargs, config,
                                             and the trainer state with tensors replaced by names
    <tag>-step00000123.model.safetensors     model weights (histobreast.models.weights.save_weights)
    <tag>-step00000123.state.safetensors     optimizer tensors (until the run ends) and torch RNG
                                             states (never pickle)

The two tensor files are written first (each atomically), then ``<tag>.json`` is atomically
replaced to point at them, then older files of that tag are removed. A run killed at any moment
leaves a JSON that points at complete files. Loading never unpickles anything.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file
from torch import nn

from histobreast.atomic import atomic_write_json
from histobreast.config import read_json
from histobreast.errors import CheckpointError
from histobreast.models.weights import load_weights, read_weights, save_weights, write_safetensors

FORMAT = "histobreast-checkpoint"
FORMAT_VERSION = 1
CHECKPOINT_DIR = "checkpoints"


@dataclass(frozen=True)
class Checkpoint:
    """A checkpoint on disk: its JSON ``info`` and the folder its tensor files are in.

    A bare weights file (``.safetensors``) is a checkpoint with empty ``info``.
    """

    path: Path
    info: dict[str, Any]
    weights_path: Path
    state_path: Path | None

    @property
    def step(self) -> int:
        """Optimizer steps taken when it was written (0 for a bare weights file)."""
        return int(self.info.get("step", 0))

    @property
    def model_name(self) -> str | None:
        """Registry name of the model, if the trainer was told it."""
        return self.info.get("model_name")

    @property
    def model_kwargs(self) -> dict[str, Any]:
        """Constructor kwargs that rebuild the model (pruned widths included)."""
        return dict(self.info.get("model_kwargs") or {})

    def state_dict(self) -> dict[str, torch.Tensor]:
        """The model weights (pickled files are refused by ``read_weights``)."""
        return read_weights(self.weights_path)

    def load_into(self, model: nn.Module, strict: bool = True) -> nn.Module:
        """Load the weights into ``model``; mismatched names or shapes raise CheckpointError."""
        return load_weights(model, self.weights_path, strict=strict)

    def trainer_state(self) -> Any:
        """The saved trainer state with its tensors put back (optimizer, RNG states, counters)."""
        skeleton = self.info.get("state")
        if skeleton is None:
            raise CheckpointError(f"{self.path}: holds no trainer state (only `last` checkpoints can be resumed)")
        tensors: dict[str, torch.Tensor] = {}
        if self.state_path is not None:
            try:
                tensors = load_file(str(self.state_path))
            except (SafetensorError, OSError, ValueError) as err:
                raise CheckpointError(f"{self.state_path}: not a readable safetensors file ({err})") from err
        return unflatten_tensors(skeleton, tensors, where=str(self.path))


def save_checkpoint(
    directory: str | Path,
    tag: str,
    *,
    model: nn.Module | Mapping[str, torch.Tensor],
    step: int,
    info: Mapping[str, Any] | None = None,
    state: Any = None,
) -> Path:
    """Write checkpoint ``tag`` into ``directory`` atomically; returns the JSON path.

    ``info`` is JSON-able metadata (metrics, model_name, model_kwargs, config ...); ``state`` is
    any nesting of dicts/lists/tuples/scalars/tensors (optimizer state, RNG states): its tensors go
    to the ``.state.safetensors`` file, the rest to the JSON.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    stem = f"{tag}-step{step:08d}"
    weights_name = f"{stem}.model.safetensors"
    save_weights(dict(model.state_dict()) if isinstance(model, nn.Module) else dict(model), directory / weights_name)
    record: dict[str, Any] = {
        "format": FORMAT,
        "version": FORMAT_VERSION,
        "tag": tag,
        "step": step,
        "weights": weights_name,
        "tensors": None,
        **(info or {}),
    }
    if state is not None:
        skeleton, tensors = flatten_tensors(state)
        record["state"] = skeleton
        if tensors:
            record["tensors"] = f"{stem}.state.safetensors"
            write_safetensors(directory / record["tensors"], tensors)
    json_path = atomic_write_json(directory / f"{tag}.json", record)
    keep = {weights_name, record["tensors"]}
    for stale in directory.glob(f"{tag}-step*.safetensors"):
        if stale.name not in keep:
            stale.unlink(missing_ok=True)
    return json_path


def find_checkpoint(path: str | Path, tag: str = "best") -> Path:
    """The checkpoint file meant by ``path``: a run folder, a checkpoints folder, or a file.

    For a folder, ``<tag>.json`` in it or in its ``checkpoints/`` sub-folder.
    """
    path = Path(path)
    if path.is_dir():
        for candidate in (path / CHECKPOINT_DIR / f"{tag}.json", path / f"{tag}.json"):
            if candidate.is_file():
                return candidate
        raise CheckpointError(
            f"{path}: no `{tag}` checkpoint here (looked for {CHECKPOINT_DIR}/{tag}.json and {tag}.json)"
        )
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint not found")
    return path


def read_checkpoint(path: str | Path, tag: str = "best") -> Checkpoint:
    """Open a checkpoint (see :func:`find_checkpoint`); a non-JSON file is taken as bare weights."""
    path = find_checkpoint(path, tag)
    if path.suffix.lower() != ".json":
        return Checkpoint(path=path, info={}, weights_path=path, state_path=None)
    info = read_json(path, "checkpoint", error=CheckpointError, format=FORMAT, version=FORMAT_VERSION)
    weights = _sibling(path, info.get("weights"), "weights")
    state = _sibling(path, info["tensors"], "tensors") if info.get("tensors") else None
    return Checkpoint(path=path, info=info, weights_path=weights, state_path=state)


def load_model(path: str | Path, tag: str = "best", **overrides: Any) -> tuple[nn.Module, Checkpoint]:
    """Rebuild the model of a checkpoint (``create_model(model_name, **model_kwargs)``) with its weights."""
    from histobreast.models.registry import create_model

    checkpoint = read_checkpoint(path, tag)
    if checkpoint.model_name is None:
        raise CheckpointError(f"{checkpoint.path}: records no model_name; build the model yourself and use load_into()")
    model = create_model(checkpoint.model_name, **{**checkpoint.model_kwargs, **overrides})
    checkpoint.load_into(model)
    return model, checkpoint


def _sibling(json_path: Path, name: Any, key: str) -> Path:
    # Names only, never paths: a checkpoint JSON must not point outside its own folder.
    if not isinstance(name, str) or not name or Path(name).name != name:
        raise CheckpointError(f'{json_path}: "{key}" must be a file name in the same folder, got {name!r}')
    target = json_path.parent / name
    if not target.is_file():
        raise CheckpointError(f"{json_path}: its {key} file {name} is missing")
    return target


# --- nested state <-> (JSON skeleton, flat tensor dict) -----------------------------------------

_TENSOR, _TUPLE, _ITEMS = "__tensor__", "__tuple__", "__items__"


def flatten_tensors(obj: Any) -> tuple[Any, dict[str, torch.Tensor]]:
    """Split a nested structure into a JSON-able skeleton and a flat ``{name: tensor}`` dict.

    Tensors become ``{"__tensor__": name}``, tuples ``{"__tuple__": [...]}``, and mappings with
    non-string keys (an optimizer's ``state`` is keyed by parameter index) ``{"__items__": [[k, v]...]}``.
    """
    tensors: dict[str, torch.Tensor] = {}

    def walk(node: Any, path: str) -> Any:
        if isinstance(node, torch.Tensor):
            tensors[path] = node.detach().to("cpu").contiguous().clone()
            return {_TENSOR: path}
        if isinstance(node, Mapping):
            if all(isinstance(k, str) for k in node):
                return {k: walk(v, f"{path}.{k}") for k, v in node.items()}
            return {_ITEMS: [[k, walk(v, f"{path}.{k}")] for k, v in node.items()]}
        if isinstance(node, tuple):
            return {_TUPLE: [walk(v, f"{path}.{i}") for i, v in enumerate(node)]}
        if isinstance(node, list):
            return [walk(v, f"{path}.{i}") for i, v in enumerate(node)]
        if node is None or isinstance(node, (bool, int, float, str)):
            return node
        raise TypeError(f"cannot store a {type(node).__name__} at {path or 'top level'} in a checkpoint")

    return walk(obj, "state"), tensors


def unflatten_tensors(skeleton: Any, tensors: Mapping[str, torch.Tensor], where: str = "<checkpoint>") -> Any:
    """Inverse of :func:`flatten_tensors`."""

    def walk(node: Any) -> Any:
        if isinstance(node, dict):
            if _TENSOR in node:
                name = node[_TENSOR]
                if name not in tensors:
                    raise CheckpointError(f"{where}: tensor {name!r} is missing from its state file")
                return tensors[name]
            if _TUPLE in node:
                return tuple(walk(v) for v in node[_TUPLE])
            if _ITEMS in node:
                return {k: walk(v) for k, v in node[_ITEMS]}
            return {k: walk(v) for k, v in node.items()}
        if isinstance(node, list):
            return [walk(v) for v in node]
        return node

    return walk(skeleton)
