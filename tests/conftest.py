"""Shared test fixtures: real-data locations (skipped with a reason when absent), seeds, threads."""

from __future__ import annotations

import os
import random
import subprocess
from pathlib import Path

import numpy as np
import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("HISTOBREAST_SHARED_DATA", REPO_ROOT.parent / "shared" / "data"))


def _real_data_dir(name: str) -> Path:
    path = SHARED_DATA / name
    if not path.is_dir():
        pytest.skip(f"real data not available: {path} is absent (research-only data is never in the repo)")
    return path


@pytest.fixture
def breakhis_dir() -> Path:
    """../shared/data/breakhis (25 real BreaKHis PNGs + the official fold files)."""
    return _real_data_dir("breakhis")


@pytest.fixture
def bach_dir() -> Path:
    """../shared/data/bach (268 real BACH microscopy JPEGs at 1024x768, ~0.84 µm/px)."""
    return _real_data_dir("bach")


@pytest.fixture
def bracs_dir() -> Path:
    """../shared/data/bracs_samples (6 real BRACS regions of arbitrary size)."""
    return _real_data_dir("bracs_samples")


@pytest.fixture
def wsi_dir() -> Path:
    """../shared/data/wsi (five small real slide files: two SVS, a TIFF, an NDPI, a DICOM; see SOURCE.md)."""
    return _real_data_dir("wsi")


@pytest.fixture
def tiny_disk(tmp_path):
    """A 1 MiB tmpfs (skipped with the reason where it cannot be mounted)."""
    mount = tmp_path / "disk"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here: {done.stderr.decode().strip() or 'mount failed'}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", str(mount)], check=False)


@pytest.fixture(autouse=True)
def _seed_everything() -> None:
    """Every test starts from the same seeds, so results do not depend on test order."""
    random.seed(0)
    np.random.seed(0)
    try:
        import torch
    except ImportError:  # pragma: no cover - torch is a hard dependency
        return
    torch.manual_seed(0)


def pytest_report_header(config: pytest.Config) -> list[str]:
    """Machine facts in the run's header, so a CI log explains itself (a full disk, few cores)."""
    import shutil
    import tempfile

    free = shutil.disk_usage(tempfile.gettempdir()).free / 2**30
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return [
        f"histobreast: {free:.1f} GiB free in {tempfile.gettempdir()}, {cores} usable cores, "
        f"shared data {'found' if SHARED_DATA.is_dir() else 'absent'} at {SHARED_DATA}"
    ]


def pytest_configure(config: pytest.Config) -> None:
    # Under pytest-xdist each worker gets one core; torch would otherwise oversubscribe 2 cores.
    if os.environ.get("PYTEST_XDIST_WORKER"):
        import torch

        torch.set_num_threads(1)
