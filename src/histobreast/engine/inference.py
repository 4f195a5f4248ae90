"""Running a model over batches: device transfer, forward calls, class probabilities.

Batches are ``(inputs, target)`` where ``inputs`` is a tensor or a dict of tensors. A dict is
passed as keyword arguments (``model(**inputs)``) when its keys can be Python argument names;
otherwise, e.g. the hybrid model's ``{"global": ..., "patches": ...}`` (``global`` is a Python
keyword), it is passed as one positional mapping, as ``compress.importance`` does.
"""

from __future__ import annotations

import keyword
from collections.abc import Iterable, Mapping
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor, nn

from histobreast.engine.distributed import resolve_device
from histobreast.engine.losses import main_logits
from histobreast.errors import ConfigError

Inputs = Tensor | Mapping[str, Tensor]
Flag = bool | Literal["auto"]


def check_batch_size(batch_size: int | None) -> None:
    """Refuse a batch size that is not a whole number >= 1 (``None``: the model's own); 0 once
    silently meant the default and a negative one failed deep in the data loader."""
    if batch_size is not None and (isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1):
        raise ConfigError(f"batch_size: must be a whole number >= 1 (None: the model's default), got {batch_size!r}")


def resolve_flag(flag: Flag, device: torch.device) -> bool:
    """``auto`` means on for CUDA devices, off elsewhere (bf16 autocast, channels_last)."""
    return device.type == "cuda" if flag == "auto" else bool(flag)


def to_device(inputs: Inputs, device: torch.device, channels_last: bool = False) -> Inputs:
    """Copy a tensor or dict of tensors to ``device`` without blocking; 4-D image batches go channels_last."""

    def move(t: Tensor) -> Tensor:
        t = t.to(device, non_blocking=True)
        return t.contiguous(memory_format=torch.channels_last) if channels_last and t.dim() == 4 else t

    if isinstance(inputs, Mapping):
        return {k: move(v) for k, v in inputs.items()}
    return move(inputs)


def call_model(fn: Any, inputs: Inputs) -> Any:
    """``fn(**inputs)`` for a dict whose keys can be argument names, else ``fn(inputs)``."""
    if isinstance(inputs, Mapping) and all(k.isidentifier() and not keyword.iskeyword(k) for k in inputs):
        return fn(**inputs)
    return fn(inputs)


def autocast(device: torch.device, enabled: bool) -> torch.autocast:
    """bf16 autocast on ``device`` (no loss scaling is needed for bf16)."""
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=enabled)


@torch.inference_mode()
def predict_probabilities(
    model: nn.Module,
    dataloader: Iterable[tuple[Inputs, Any]],
    device: str | torch.device = "auto",
    amp: Flag = "auto",
    channels_last: Flag = "auto",
) -> tuple[np.ndarray, np.ndarray]:
    """Class probabilities ``(N, C)`` float32 and targets ``(N,)`` int64 over ``dataloader``.

    Uses ``model.predict_proba`` when the model has one (voting models), else the softmax of its
    logits. The model is put in eval mode and returned to its previous mode afterwards.
    """
    device = resolve_device(device) if isinstance(device, str) else device
    use_amp, use_cl = resolve_flag(amp, device), resolve_flag(channels_last, device)
    predict = getattr(model, "predict_proba", None)
    was_training = model.training
    model.eval()
    probs: list[Tensor] = []
    targets: list[Tensor] = []
    try:
        for inputs, target in dataloader:
            inputs = to_device(inputs, device, use_cl)
            with autocast(device, use_amp):
                if predict is not None:
                    p = call_model(predict, inputs)
                else:
                    p = torch.softmax(main_logits(call_model(model, inputs)).float(), dim=1)
            probs.append(p.float())
            targets.append(torch.as_tensor(target).reshape(-1))
    finally:
        model.train(was_training)
    if not probs:
        return np.zeros((0, 0), dtype=np.float32), np.zeros(0, dtype=np.int64)
    return torch.cat(probs).cpu().numpy(), torch.cat(targets).to(torch.int64).cpu().numpy()
