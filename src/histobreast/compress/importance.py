"""Channel importance of the SEP blocks: the mean SE activation of each channel over a dataset.

Paper A, eqs. (5)-(6): for layer L with C channels, ``w_c = (1/N) sum_j s_cj`` where ``s_cj`` is
the SE gate of channel c on training sample j. One no-grad pass in eval mode reads the gates with
forward hooks on every :class:`~histobreast.models.layers.SEBlock`'s ``gate``; training pays
nothing for this. Importances are keyed by the SE block's module name (``"se.3a"`` ... in a
GoogLeNetSEP) and saved with a run as safetensors.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from histobreast.errors import CheckpointError
from histobreast.models.layers import SEBlock
from histobreast.models.weights import read_weights, save_weights


def se_blocks(model: nn.Module) -> dict[str, SEBlock]:
    """Every SE block of ``model`` by module name, in definition order."""
    return {name: module for name, module in model.named_modules() if isinstance(module, SEBlock)}


def _model_inputs(batch: Any) -> Any:
    # DataLoader batches are (inputs, target) pairs, or bare inputs.
    return batch[0] if isinstance(batch, (tuple, list)) else batch


def _to_device(inputs: Any, device: torch.device) -> Any:
    if isinstance(inputs, Mapping):
        return {key: value.to(device) for key, value in inputs.items()}
    return inputs.to(device)


@torch.no_grad()
def compute_channel_importance(
    model: nn.Module,
    batches: Iterable[Any],
    *,
    device: torch.device | str | None = None,
    max_batches: int | None = None,
) -> dict[str, Tensor]:
    """Mean SE gate per channel of every SE block over ``batches`` (e.g. the training DataLoader).

    Returns ``{se_block_name: (C,) float32 tensor on the CPU}``. The model runs in eval mode (its
    mode is restored afterwards); inputs that are mappings (the hybrid model's
    ``{"global", "patches"}``) are passed as one argument. Each block is averaged over the
    samples it saw (the local branch of a hybrid sees every patch).
    """
    blocks = se_blocks(model)
    if not blocks:
        raise ValueError("the model has no SE blocks: channel importance needs SEP blocks (use 'googlenet_sep')")
    device = torch.device(device) if device is not None else next(model.parameters()).device
    sums: dict[str, Tensor] = {}
    counts = dict.fromkeys(blocks, 0)

    def accumulate(name: str):
        def hook(_module: nn.Module, _inputs: Any, gate: Tensor) -> None:
            total = gate.detach().double().sum(dim=0)
            sums[name] = sums[name] + total if name in sums else total
            counts[name] += gate.shape[0]

        return hook

    handles = [block.gate.register_forward_hook(accumulate(name)) for name, block in blocks.items()]
    was_training = model.training
    model.eval()
    try:
        for index, batch in enumerate(batches):
            if max_batches is not None and index >= max_batches:
                break
            model(_to_device(_model_inputs(batch), device))
    finally:
        for handle in handles:
            handle.remove()
        model.train(was_training)
    unseen = [name for name, count in counts.items() if count == 0]
    if unseen:
        raise ValueError(
            f"no samples reached SE blocks {unseen}: the data is empty, or the forward pass skips that part "
            "of the model (e.g. a hybrid branch its mode does not use)"
        )
    return {name: (sums[name] / counts[name]).float().cpu() for name in blocks}


def save_importance(importance: Mapping[str, Tensor], path: str | Path) -> Path:
    """Write importances to a safetensors file (atomically)."""
    return save_weights(dict(importance), path)


def load_importance(path: str | Path) -> dict[str, Tensor]:
    """Read importances written by :func:`save_importance`; a broken file raises CheckpointError."""
    importance = read_weights(path)
    bad = [name for name, values in importance.items() if values.ndim != 1]
    if bad:
        raise CheckpointError(f"{path}: not a channel-importance file (entries {bad[:3]} are not 1-D)")
    return importance
