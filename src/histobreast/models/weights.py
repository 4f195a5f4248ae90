"""Weights files: safetensors only, so that loading never executes code from a file.

A pickled ``.pt``/``.pth`` file is refused by :func:`load_weights`; ``convert_torch_weights``
turns a plain state-dict pickle (e.g. torchvision's ImageNet ResNet50 file that a user already has)
into safetensors with PyTorch's restricted ``weights_only`` unpickler.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from histobreast.atomic import atomic_path
from histobreast.errors import CheckpointError

_PICKLE_SUFFIXES = {".pt", ".pth", ".ckpt", ".pkl", ".bin", ".tar"}


# safetensors reports a failed write as "... I/O error: <strerror> (os error <errno>)".
_OS_ERROR = re.compile(r"\(os error (\d+)\)")


def write_safetensors(
    path: str | Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None = None
) -> Path:
    """Write ``tensors`` to ``path`` as safetensors, atomically. A failed write (a full disk) is the
    ``OSError`` naming ``path`` that every other write gives, not safetensors' own error."""
    with atomic_path(path) as tmp:
        try:
            save_file(tensors, str(tmp), metadata=metadata)
        except SafetensorError as err:
            code = _OS_ERROR.search(str(err))
            if code is None:
                raise
            raise OSError(int(code.group(1)), os.strerror(int(code.group(1))), str(path)) from err
    return Path(path)


def save_weights(model_or_state: nn.Module | dict[str, torch.Tensor], path: str | Path) -> Path:
    """Save a module's state dict (or a state dict) to ``path`` as safetensors, atomically."""
    state = model_or_state.state_dict() if isinstance(model_or_state, nn.Module) else model_or_state
    # safetensors refuses shared/non-contiguous storage: store independent contiguous copies.
    tensors = {k: v.detach().to("cpu").contiguous().clone() for k, v in state.items()}
    return write_safetensors(path, tensors)


def read_weights(path: str | Path) -> dict[str, torch.Tensor]:
    """Read a safetensors file into a state dict; pickles and broken files raise CheckpointError."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: weights file not found")
    if path.suffix.lower() in _PICKLE_SUFFIXES:
        raise CheckpointError(
            f"{path}: pickled checkpoints are refused (loading one can run arbitrary code). "
            "Convert a plain state dict with `histobreast models convert-weights` first."
        )
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as err:
        raise CheckpointError(f"{path}: not a readable safetensors file ({err})") from err


def load_weights(model: nn.Module, path: str | Path, *, strict: bool = True, prefix: str = "") -> nn.Module:
    """Load a safetensors file into ``model`` (keys optionally under ``prefix``); name mismatches."""
    state = read_weights(path)
    if prefix:
        state = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
    own = model.state_dict()
    shape_errors = [
        f"{k}: file {tuple(v.shape)} vs model {tuple(own[k].shape)}"
        for k, v in state.items()
        if k in own and own[k].shape != v.shape
    ]
    if shape_errors:
        raise CheckpointError(f"{path}: tensor shapes do not match the model: " + "; ".join(shape_errors[:5]))
    result = model.load_state_dict(state, strict=False)
    if strict and (result.missing_keys or result.unexpected_keys):
        raise CheckpointError(
            f"{path}: keys do not match the model (missing {result.missing_keys[:5]}, "
            f"unexpected {result.unexpected_keys[:5]})"
        )
    return model


def convert_torch_weights(src: str | Path, dst: str | Path) -> Path:
    """Convert a plain state-dict pickle to safetensors using the restricted unpickler only."""
    src = Path(src)
    try:
        obj = torch.load(src, map_location="cpu", weights_only=True)
    except Exception as err:  # the restricted unpickler raises many types
        raise CheckpointError(f"{src}: not a plain tensor state dict ({err})") from err
    if isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CheckpointError(f"{src}: expected a dict of tensors")
    return save_weights(obj, dst)
