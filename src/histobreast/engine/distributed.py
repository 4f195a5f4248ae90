"""Processes and the data each one sees: torchrun/DDP set-up, device choice, deterministic sharding.

Multi-GPU and multi-node runs are started by ``torchrun`` (no home-made launcher); this module
reads its environment (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``), joins the process group (NCCL on
CUDA, gloo on CPU) and provides the collectives the trainer needs.

Data order is a pure function of ``(seed, epoch)``: :class:`EpochSampler` draws one permutation
per epoch, truncates it to whole optimizer steps and deals it out rank by rank, so the union of
the ranks' micro-batches at every step is the same slice of the permutation whatever the number
of processes. :class:`SeededSamples` reseeds the generators before every sample, making random
augmentation a pure function of ``(seed, epoch, index)`` too, independent of worker count,
process count and resumption.
"""

from __future__ import annotations

import os
import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, Dataset, Sampler, get_worker_info

from histobreast.errors import ConfigError
from histobreast.seeding import derive_seed, seed_host_generators


@dataclass(frozen=True)
class DistributedContext:
    """This process's place in the job: ``rank`` of ``world_size``, GPU ``local_rank`` on its node."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        """Rank 0 writes checkpoints, logs and progress bars."""
        return self.rank == 0

    @property
    def is_distributed(self) -> bool:
        """More than one process."""
        return self.world_size > 1


def context_from_env() -> DistributedContext:
    """Read torchrun's ``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK`` (a single process when unset)."""
    values = {}
    for name, default in (("RANK", 0), ("WORLD_SIZE", 1), ("LOCAL_RANK", 0)):
        text = os.environ.get(name, str(default))
        try:
            values[name] = int(text)
        except ValueError:
            raise ConfigError(f"environment variable {name}={text!r} is not an integer (set by torchrun)") from None
    ctx = DistributedContext(values["RANK"], values["WORLD_SIZE"], values["LOCAL_RANK"])
    if ctx.world_size < 1 or not 0 <= ctx.rank < ctx.world_size:
        raise ConfigError(f"RANK={ctx.rank} is not within WORLD_SIZE={ctx.world_size}")
    return ctx


def resolve_device(spec: str | torch.device = "auto", local_rank: int = 0) -> torch.device:
    """``auto`` -> the local GPU when CUDA is available, else CPU; ``cuda`` without a GPU is an error."""
    spec = str(spec)
    if spec == "auto":
        return torch.device("cuda", local_rank) if torch.cuda.is_available() else torch.device("cpu")
    if spec == "cpu":
        return torch.device("cpu")
    if spec == "cuda" or spec.startswith("cuda:"):
        if not torch.cuda.is_available():
            raise ConfigError(
                f"train.device: {spec!r} was requested but CUDA is not available on this machine "
                "(use device: auto or cpu)"
            )
        index = local_rank if spec == "cuda" else int(spec.partition(":")[2])
        if index >= torch.cuda.device_count():
            raise ConfigError(f"train.device: {spec!r} but only {torch.cuda.device_count()} GPU(s) are visible")
        return torch.device("cuda", index)
    raise ConfigError(f"train.device: must be auto, cpu, cuda or cuda:N, got {spec!r}")


def init_distributed(device: torch.device) -> DistributedContext:
    """Join torchrun's process group if ``WORLD_SIZE > 1`` (NCCL for CUDA devices, gloo for CPU).

    Idempotent: an already initialised group (e.g. by a test harness) is kept.
    """
    ctx = context_from_env()
    if ctx.is_distributed and not dist.is_initialized():
        if device.type == "cuda":
            torch.cuda.set_device(device)
            dist.init_process_group("nccl", device_id=device)
        else:
            dist.init_process_group("gloo")
    return ctx


def broadcast_object(obj: Any, ctx: DistributedContext) -> Any:
    """Rank 0's ``obj`` on every rank (so that all ranks take the same decisions)."""
    if not ctx.is_distributed:
        return obj
    holder = [obj]
    dist.broadcast_object_list(holder, src=0)
    return holder[0]


def all_gather_objects(obj: Any, ctx: DistributedContext) -> list[Any]:
    """Every rank's ``obj``, in rank order, on every rank."""
    if not ctx.is_distributed:
        return [obj]
    out: list[Any] = [None] * ctx.world_size
    dist.all_gather_object(out, obj)
    return out


def all_reduce_sum(tensor: torch.Tensor, ctx: DistributedContext) -> torch.Tensor:
    """Sum of ``tensor`` over ranks (in place; returned for chaining)."""
    if ctx.is_distributed:
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def gather_sharded(arrays: Sequence[np.ndarray], ctx: DistributedContext) -> list[np.ndarray]:
    """Reassemble arrays computed on an unshuffled :class:`EpochSampler` shard into dataset order.

    Rank ``r`` holds rows ``r, r + W, r + 2W, ...`` of each array; the result is the full array on
    every rank, as if one process had computed it.
    """
    if not ctx.is_distributed:
        return list(arrays)
    shards = all_gather_objects(list(arrays), ctx)
    out = []
    for k in range(len(arrays)):
        parts = [shard[k] for shard in shards]
        total = sum(len(p) for p in parts)
        full = np.empty((total, *parts[0].shape[1:]), dtype=parts[0].dtype)
        for rank, part in enumerate(parts):
            full[rank :: ctx.world_size] = part
        out.append(full)
    return out


class EpochSampler(Sampler[Any]):
    """Indices of one rank for one epoch, a pure function of ``(seed, epoch)``.

    The global order is ``randperm(length)`` seeded by ``derive_seed(seed, epoch)`` (or
    ``range(length)`` without shuffling), truncated to a multiple of ``multiple_of`` (whole
    optimizer steps; 1 keeps everything) and dealt out as ``order[rank::world_size]``.
    :meth:`set_start` skips the first samples of this rank (mid-epoch resumption). With
    ``with_epoch`` the sampler yields ``(epoch, index)`` pairs for :class:`SeededSamples`.
    """

    def __init__(
        self,
        length: int,
        *,
        seed: int = 0,
        shuffle: bool = True,
        rank: int = 0,
        world_size: int = 1,
        multiple_of: int = 1,
        with_epoch: bool = False,
    ) -> None:
        if multiple_of > 1 and multiple_of % world_size:  # equal shards need whole rounds of processes
            raise ValueError(f"multiple_of={multiple_of} must be a multiple of world_size={world_size}")
        self.length = length
        self.seed = seed
        self.shuffle = shuffle
        self.rank = rank
        self.world_size = world_size
        self.multiple_of = multiple_of
        self.with_epoch = with_epoch
        self.epoch = 0
        self.start = 0

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose order is produced next (also resets the start offset)."""
        self.epoch = epoch
        self.start = 0

    def set_start(self, samples: int) -> None:
        """Skip this rank's first ``samples`` indices of the current epoch."""
        self.start = samples

    def global_order(self) -> list[int]:
        """The whole epoch's order over all ranks, after truncation."""
        if self.shuffle:
            generator = torch.Generator().manual_seed(derive_seed(self.seed, self.epoch))
            order = torch.randperm(self.length, generator=generator).tolist()
        else:
            order = list(range(self.length))
        return order[: len(order) - len(order) % self.multiple_of]

    def __iter__(self) -> Iterator[Any]:
        mine = self.global_order()[self.rank :: self.world_size][self.start :]
        return iter([(self.epoch, i) for i in mine] if self.with_epoch else mine)

    def __len__(self) -> int:
        usable = self.length - self.length % self.multiple_of
        mine = len(range(self.rank, usable, self.world_size))
        return max(0, mine - self.start)


class SeededSamples(Dataset):
    """Wraps a dataset so that item ``(epoch, index)`` is produced under seed ``(seed, epoch, index)``.

    Random transforms that use python's, numpy's or torch's global generators then give the same
    result for a sample whichever worker, process or resumed run loads it. In the main process
    (``num_workers=0``) the previous generator states are put back afterwards, so the model's own
    randomness (dropout) does not depend on the data pipeline. A dataset with ``set_epoch(epoch)``
    (e.g. ``histobreast.datasets.images``) is told the item's epoch first, in whichever process loads it.
    """

    def __init__(self, dataset: Dataset, seed: int) -> None:
        self.dataset = dataset
        self.seed = seed

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, key: tuple[int, int]) -> Any:
        return self.__getitems__([key])[0]

    def __getitems__(self, keys: Sequence[tuple[int, int]]) -> list[Any]:
        """A batch of items (DataLoader calls this): generator states are saved once per batch."""
        in_worker = get_worker_info() is not None
        if not in_worker:
            saved = (random.getstate(), np.random.get_state(), torch.random.default_generator.get_state())
        try:
            items = []
            set_epoch = getattr(self.dataset, "set_epoch", None)  # datasets with their own seeded choices
            for epoch, index in keys:
                seed_host_generators(derive_seed(self.seed, epoch, index))
                if set_epoch is not None:
                    set_epoch(epoch)
                items.append(self.dataset[index])
            return items
        finally:
            if not in_worker:
                random.setstate(saved[0])
                np.random.set_state(saved[1])
                torch.random.default_generator.set_state(saved[2])


def build_loader(
    dataset: Dataset,
    *,
    batch_size: int,
    device: torch.device,
    ctx: DistributedContext,
    seed: int = 0,
    train: bool = True,
    multiple_of: int | None = None,
    num_workers: int = 0,
    prefetch_factor: int = 2,
) -> DataLoader:
    """A DataLoader over this rank's share of ``dataset`` with an :class:`EpochSampler`.

    ``train``: shuffled by ``(seed, epoch)``, truncated to a multiple of ``multiple_of`` samples
    (default ``batch_size * world_size``). Evaluation: dataset order, no truncation, rank ``r``
    gets items ``r, r + W, ...`` (reassemble with :func:`gather_sharded`). Both seed every sample
    (:class:`SeededSamples`). Workers persist across epochs; memory is pinned for CUDA devices.
    """
    sampler = EpochSampler(
        len(dataset),
        seed=seed,
        shuffle=train,
        rank=ctx.rank,
        world_size=ctx.world_size,  # type: ignore[arg-type]
        multiple_of=(multiple_of or batch_size * ctx.world_size) if train else 1,
        with_epoch=True,
    )
    return DataLoader(
        SeededSamples(dataset, seed),
        batch_size=batch_size,
        sampler=sampler,
        drop_last=train,
        num_workers=num_workers,
        pin_memory=device.type == "cuda",
        persistent_workers=num_workers > 0,
        prefetch_factor=prefetch_factor if num_workers > 0 else None,
        # A private generator: creating an iterator must not consume the global torch RNG.
        generator=torch.Generator().manual_seed(seed),
    )
