"""Model cost: parameters, multiply-accumulates, checkpoint size, latency and throughput.

MACs are counted with PyTorch's own ``torch.utils.flop_counter.FlopCounterMode``, which counts
convolutions and matrix products (2 FLOPs per multiply-accumulate) and nothing else: pooling,
BatchNorm, activations and element-wise ops are left out, as in the MAC figures papers quote
(GoogLeNet's "1.5 billion multiply-adds", paper A's Table 7). Timing helpers are for benchmarks;
tests never time anything.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Iterable, Sequence
from pathlib import Path

import torch
from torch import Tensor, nn
from torch.utils.flop_counter import FlopCounterMode

Inputs = Tensor | Sequence[Tensor]


def _as_args(example_inputs: Inputs) -> tuple[Tensor, ...]:
    return (example_inputs,) if isinstance(example_inputs, Tensor) else tuple(example_inputs)


def count_parameters(model: nn.Module, exclude: Iterable[str] = (), trainable_only: bool = False) -> int:
    """Number of parameters, leaving out those under the module prefixes in ``exclude``
    (e.g. ``("aux1", "aux2")`` for a GoogLeNet without its training-only heads)."""
    prefixes = tuple(f"{prefix}." for prefix in exclude)
    return sum(
        p.numel()
        for name, p in model.named_parameters()
        if not name.startswith(prefixes) and (p.requires_grad or not trainable_only)
    )


def count_nonzero_parameters(model: nn.Module, exclude: Iterable[str] = ()) -> int:
    """Number of non-zero parameter entries (the weights a sparse model really stores)."""
    prefixes = tuple(f"{prefix}." for prefix in exclude)
    return sum(int(torch.count_nonzero(p)) for name, p in model.named_parameters() if not name.startswith(prefixes))


def count_macs(model: nn.Module, example_inputs: Inputs) -> int:
    """Multiply-accumulates of one forward pass on ``example_inputs`` (conv + matmul FLOPs / 2).

    The model runs in eval mode (auxiliary heads off) under ``torch.no_grad``; its mode is
    restored afterwards. The count is for the whole batch: divide by the batch size per image.
    """
    was_training = model.training
    model.eval()
    try:
        with FlopCounterMode(display=False) as counter, torch.no_grad():
            model(*_as_args(example_inputs))
    finally:
        model.train(was_training)
    return counter.get_total_flops() // 2


def checkpoint_size_bytes(path: str | Path) -> int:
    """Size on disk of a weights file, or of every file under a checkpoint folder."""
    path = Path(path)
    if path.is_dir():
        return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    return path.stat().st_size


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure_latency(model: nn.Module, example_inputs: Inputs, repeats: int = 20, warmup: int = 3) -> float:
    """Median wall time of one forward pass in milliseconds (eval mode, inference mode).

    ``warmup`` untimed passes come first (allocator, cuDNN autotuning); the device is
    synchronised around every timed pass, so GPU numbers are real execution times.
    """
    if repeats < 1 or warmup < 0:
        raise ValueError(f"need repeats >= 1 and warmup >= 0, got repeats={repeats}, warmup={warmup}")
    args = _as_args(example_inputs)
    device = args[0].device
    was_training = model.training
    model.eval()
    times = []
    try:
        with torch.inference_mode():
            for _ in range(warmup):
                model(*args)
            for _ in range(repeats):
                _synchronize(device)
                start = time.perf_counter()
                model(*args)
                _synchronize(device)
                times.append((time.perf_counter() - start) * 1e3)
    finally:
        model.train(was_training)
    return statistics.median(times)


def measure_throughput(model: nn.Module, example_inputs: Inputs, repeats: int = 20, warmup: int = 3) -> float:
    """Inference images per second: batch size / median latency (batch = first input's dim 0)."""
    batch = _as_args(example_inputs)[0].shape[0]
    return batch / (measure_latency(model, example_inputs, repeats, warmup) / 1e3)
