"""Dynamic Network Surgery (Guo, Yao & Chen 2016): weight masks with pruning and splicing.

Every conv / linear weight W gets a binary mask T; the network computes with ``W * T`` while
the full W keeps receiving the gradient of the masked product (straight-through:
``dL/dW = dL/d(W*T)``), so a pruned weight can grow back. At a mask update, per layer::

    T = 0 where |W| < a,   T = 1 where |W| > b,   T unchanged where a <= |W| <= b   (splicing)

with ``a = 0.9 * max(mu + c * sigma, 0)`` and ``b = 1.1 * max(mu + c * sigma, 0)``, mu and sigma
the mean and standard deviation of the layer's |W| when surgery starts and c the sensitivity
(the 0.9 / 1.1 margins and the statistics are those of the authors' released Caffe layers). Masks
are updated with probability ``(1 + gamma * iteration)^(-power)``, decreasing during training.

The masks live in ``torch.nn.utils.parametrize`` parametrizations, so any training loop works:
call :meth:`DynamicNetworkSurgery.step` after each optimizer step. :meth:`finalize` bakes the
masks in (zeros), and :func:`save_sparse_weights` stores the result compactly: a bit mask of the
non-zero positions plus the non-zero values (1 bit + 4 bytes per surviving float32 weight).
DNS applies alone or after channel pruning (it only sees the layers it is given).
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors import safe_open
from torch import Tensor, nn
from torch.nn.utils import parametrize

from histobreast.errors import CheckpointError
from histobreast.models.weights import read_weights, write_safetensors

SPARSE_FORMAT = "histobreast-sparse-bitmask-v1"
_BITMASK, _VALUES = "::bitmask", "::values"


@dataclass(frozen=True)
class DNSConfig:
    """Thresholds and schedule of Dynamic Network Surgery (defaults: Guo et al.'s released code).

    ``sensitivity`` (c) may be one float or a ``{layer name: c}`` mapping with a ``"default"``.
    ``stop_iteration``: no mask updates from this iteration on (None: never stop).
    """

    sensitivity: float | Mapping[str, float] = 0.0
    low: float = 0.9
    high: float = 1.1
    gamma: float = 1e-4
    power: float = 1.0
    stop_iteration: int | None = None

    def sensitivity_of(self, layer: str) -> float:
        """The sensitivity c of one layer."""
        if isinstance(self.sensitivity, Mapping):
            return float(self.sensitivity.get(layer, self.sensitivity.get("default", 0.0)))
        return float(self.sensitivity)


class _StraightThroughMask(torch.autograd.Function):
    """``weight * mask`` forward; the gradient reaches every weight, masked or not."""

    @staticmethod
    def forward(ctx, weight: Tensor, mask: Tensor) -> Tensor:  # type: ignore[override]
        return weight * mask

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None]:  # type: ignore[override]
        return grad, None


class WeightMask(nn.Module):
    """Parametrization holding one layer's mask and its (a, b) thresholds as buffers (so a
    checkpoint taken during surgery resumes it exactly)."""

    def __init__(self, mask: Tensor, low: float, high: float) -> None:
        super().__init__()
        self.register_buffer("mask", mask)
        self.register_buffer("thresholds", torch.tensor([low, high], dtype=torch.float32))

    def forward(self, weight: Tensor) -> Tensor:
        return _StraightThroughMask.apply(weight, self.mask.to(weight.dtype))


def _threshold_base(weights: Tensor, sensitivity: float) -> float:
    # max(mu + c * sigma, 0) of |W| over the layer's non-zero weights.
    magnitudes = weights.abs().double()
    if magnitudes.numel() < 2:
        return 0.0
    return max(magnitudes.mean().item() + sensitivity * magnitudes.std().item(), 0.0)


class DynamicNetworkSurgery:
    """Attach masks to ``model``'s conv and linear weights (or the named ``layers``) and update them.

    ``seed`` drives the random draws that decide whether masks update at an iteration.
    """

    def __init__(
        self,
        model: nn.Module,
        config: DNSConfig = DNSConfig(),
        *,
        layers: Iterable[str] | None = None,
        seed: int = 0,
    ) -> None:
        self.model = model
        self.config = config
        wanted = None if layers is None else set(layers)
        self.layers: dict[str, nn.Module] = {
            name: module
            for name, module in model.named_modules()
            if isinstance(module, (nn.Conv2d, nn.Linear)) and (wanted is None or name in wanted)
        }
        if wanted is not None and wanted - set(self.layers):
            raise ValueError(f"no conv/linear layers named {sorted(wanted - set(self.layers))} in the model")
        self.iteration = 0
        self._generator = torch.Generator().manual_seed(seed)
        for name, module in self.layers.items():
            weight = module.weight.detach()
            alive = weight != 0  # weights already zero (e.g. a loaded sparse file) start pruned
            base = _threshold_base(weight[alive], config.sensitivity_of(name))
            parametrize.register_parametrization(
                module, "weight", WeightMask(alive.to(weight.dtype), config.low * base, config.high * base)
            )

    @staticmethod
    def _mask_of(module: nn.Module) -> WeightMask:
        return module.parametrizations.weight[0]  # type: ignore[index,union-attr]

    def thresholds(self) -> dict[str, tuple[float, float]]:
        """The pruning and splicing thresholds (a, b) of every masked layer."""
        return {name: tuple(self._mask_of(m).thresholds.tolist()) for name, m in self.layers.items()}  # type: ignore[misc]

    def update_probability(self, iteration: int) -> float:
        """Probability that masks update at ``iteration``: ``(1 + gamma * it)^-power``, 0 after the stop."""
        stop = self.config.stop_iteration
        if stop is not None and iteration >= stop:
            return 0.0
        return (1.0 + self.config.gamma * iteration) ** (-self.config.power)

    @torch.no_grad()
    def update_masks(self) -> None:
        """Prune (|W| < a) and splice (|W| > b) every layer now, leaving the band between as is."""
        for module in self.layers.values():
            holder = self._mask_of(module)
            magnitudes = module.parametrizations.weight.original.abs()  # type: ignore[union-attr]
            low, high = holder.thresholds.tolist()
            holder.mask[magnitudes < low] = 0
            holder.mask[magnitudes > high] = 1

    def step(self) -> bool:
        """Call once per optimizer step: maybe update the masks (returns whether it did)."""
        draw = torch.rand((), generator=self._generator).item()
        updated = draw < self.update_probability(self.iteration)
        if updated:
            self.update_masks()
        self.iteration += 1
        return updated

    def layer_densities(self) -> dict[str, float]:
        """Fraction of weights kept (mask = 1) in each masked layer."""
        return {name: self._mask_of(m).mask.mean().item() for name, m in self.layers.items()}

    def remaining_fraction(self) -> float:
        """Fraction of the masked layers' weights still kept."""
        kept = sum(self._mask_of(m).mask.sum().item() for m in self.layers.values())
        total = sum(self._mask_of(m).mask.numel() for m in self.layers.values())
        return kept / total

    def finalize(self) -> nn.Module:
        """Bake the masks in (pruned weights become 0) and remove the parametrizations."""
        for module in self.layers.values():
            parametrize.remove_parametrizations(module, "weight", leave_parametrized=True)
        return self.model


def save_sparse_weights(model_or_state: nn.Module | Mapping[str, Tensor], path: str | Path) -> Path:
    """Save a state dict with zeros stored compactly (bit mask + non-zero values), atomically.

    A floating tensor is stored sparse when that is smaller than dense (below ~97 % density for
    float32); everything else is stored as is. Read back with :func:`load_sparse_weights`.
    """
    state = model_or_state.state_dict() if isinstance(model_or_state, nn.Module) else model_or_state
    if any(".parametrizations." in key for key in state):
        raise ValueError("the model still has DNS parametrizations: call DynamicNetworkSurgery.finalize() first")
    tensors: dict[str, Tensor] = {}
    shapes: dict[str, list[int]] = {}
    for key, value in state.items():
        value = value.detach().cpu().contiguous()
        nonzero = value != 0
        dense_bytes = value.numel() * value.element_size()
        sparse_bytes = math.ceil(value.numel() / 8) + int(nonzero.sum()) * value.element_size()
        if value.is_floating_point() and value.ndim >= 1 and sparse_bytes < dense_bytes:
            tensors[key + _BITMASK] = torch.from_numpy(np.packbits(nonzero.flatten().numpy()))
            tensors[key + _VALUES] = value.flatten()[nonzero.flatten()].clone()
            shapes[key] = list(value.shape)
        else:
            tensors[key] = value.clone()
    return write_safetensors(path, tensors, metadata={"format": SPARSE_FORMAT, "shapes": json.dumps(shapes)})


def load_sparse_weights(path: str | Path) -> dict[str, Tensor]:
    """Dense state dict from a file written by :func:`save_sparse_weights`."""
    tensors = read_weights(path)  # refuses pickles, reports unreadable files
    with safe_open(str(path), framework="pt") as handle:
        metadata = handle.metadata() or {}
    if metadata.get("format") != SPARSE_FORMAT:
        raise CheckpointError(f"{path}: not a sparse weights file (format {metadata.get('format')!r})")
    state = {key: value for key, value in tensors.items() if not key.endswith((_BITMASK, _VALUES))}
    for key, shape in json.loads(metadata["shapes"]).items():
        numel = math.prod(shape)
        bits = np.unpackbits(tensors[key + _BITMASK].numpy(), count=numel).astype(bool)
        values = tensors[key + _VALUES]
        if int(bits.sum()) != values.numel():
            raise CheckpointError(f"{path}: entry {key!r} has {values.numel()} values for {int(bits.sum())} positions")
        dense = torch.zeros(numel, dtype=values.dtype)
        dense[torch.from_numpy(bits)] = values
        state[key] = dense.reshape(shape)
    return state
