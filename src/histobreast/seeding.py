"""Seeds and random-number-generator states: one seed makes a run repeatable, a saved state resumes it.

``derive_seed(seed, epoch, index)`` hashes a tuple of integers into an independent 63-bit seed, so
that data order and per-sample augmentation are pure functions of ``(seed, epoch, index)``; the
capture/restore pair moves the python, numpy and torch generators in and out of checkpoints.

It is the one derivation: every random stream of a run is the config's ``seed`` itself (a training
run's data order) or ``derive_seed(seed, *keys)`` -- a network's initial weights (``network_seed``:
its index, or no key for System B's shared encoders), a fold's validation hold-out (the fold number),
System B's per-scale encoder pre-training (the scale's index), DNS and the pruning retrain loops,
per-sample augmentation and crops. No seed is made by arithmetic on another (``tests/test_seeding.py``).
torch is imported where it is used: the CLI checks ``--seed`` with :func:`seed_problem` before any
command imports torch.
"""

from __future__ import annotations

import hashlib
import random
from typing import Any

import numpy as np

from histobreast.config import to_jsonable

#: The largest seed a user may give: numpy's legacy global generator takes 32-bit seeds.
MAX_SEED = 2**32 - 1


def seed_problem(seed: object) -> str | None:
    """What is wrong with a user's seed (a config's ``seed``, ``--seed``), or None: a whole number
    in [0, :data:`MAX_SEED`]."""
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= MAX_SEED:
        return f"must be a whole number from 0 to {MAX_SEED}, got {seed!r}"
    return None


def derive_seed(*parts: int) -> int:
    """A well-mixed 63-bit seed from integers in [0, 2**64), e.g. ``derive_seed(seed, epoch, index)``.

    A BLAKE2b hash of the parts: stable across platforms and versions, and cheap enough
    (about a microsecond) to call once per sample.
    """
    if any(not 0 <= p < 2**64 for p in parts):
        raise ValueError(f"seed parts must be integers in [0, 2**64), got {parts}")
    digest = hashlib.blake2b(b"".join(p.to_bytes(8, "little") for p in parts), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1  # 63 bits: fits torch.manual_seed and numpy alike


def seed_everything(seed: int) -> None:
    """Seed python's ``random``, numpy's global generator and torch (CPU and every GPU)."""
    import torch

    random.seed(seed)
    np.random.seed(seed % 2**32)  # the legacy global generator takes 32-bit seeds
    torch.manual_seed(seed)


def seed_host_generators(seed: int) -> None:
    """Seed python, numpy and torch's CPU generator only (cheap enough to call once per sample)."""
    import torch

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.random.default_generator.manual_seed(seed)


def capture_rng_state() -> dict[str, Any]:
    """The state of every global generator: python, numpy, torch CPU and (if initialised) CUDA.

    Values are JSON-able lists/ints/strings except the torch states, which are uint8 tensors
    (checkpoints store those in safetensors).
    """
    import torch

    np_state = np.random.get_state(legacy=True)
    state: dict[str, Any] = {
        "python": to_jsonable(random.getstate()),
        "numpy": [np_state[0], np_state[1].tolist(), int(np_state[2]), int(np_state[3]), float(np_state[4])],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict[str, Any]) -> None:
    """Put back generator states captured by :func:`capture_rng_state` (CUDA only if present in both)."""
    import torch

    random.setstate(_from_json(state["python"]))
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _from_json(obj: Any) -> Any:
    # random.setstate needs tuples all the way down; JSON gave us lists.
    return tuple(_from_json(x) for x in obj) if isinstance(obj, list) else obj
