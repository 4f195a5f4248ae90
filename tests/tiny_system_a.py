"""Shared by the compression / ensemble tests: a tiny System A config on a synthetic BACH tree.

Branch networks with 2-8 channels per Inception branch and 32 px inputs train and predict in
well under a second, so whole pipelines (train, prune, retrain, bag, evaluate) run in tests.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

from histobreast.pipelines.config import ExperimentConfig, parse_config

INCEPTION = ("3a", "3b", "4a", "4b", "4c", "4d", "4e")
TINY_BRANCH = {
    "widths": {n: [8, 4, 8, 2, 4, 4] for n in INCEPTION},
    "stem_widths": [8, 8, 8],
    "se_reduction": 4,
    "aux_widths": [4, 8],
}


def tiny_zhu_config(root: str | Path, **sections: Any) -> ExperimentConfig:
    """System A on ``root`` (a synthetic BACH tree, binary task) with tiny branches and schedules;
    each keyword merges into (a mapping) or replaces (a value) that top-level section."""
    raw: dict[str, Any] = {
        "name": "zhu_tiny",
        "pipeline": "zhu2019",
        "seed": 0,
        "data": {"root": str(root), "task": "binary", "n_folds": 2, "val_fraction": 0.0},
        "preprocess": {"input_size": 32, "patches": {"grid": [2, 1], "size": 32}},
        "model": {"name": "googlenet_sep", "kwargs": TINY_BRANCH},
        "train": {
            "iterations": 1,
            "batch_size": 2,
            "lr": 0.01,
            "num_workers": 0,
            "log_every": 1,
            "device": "cpu",
            "tensorboard": False,
            "progress": False,
        },
        "evaluate": {"bootstrap": 10},
    }
    for key, value in sections.items():
        raw[key] = {**raw[key], **value} if isinstance(value, dict) and isinstance(raw.get(key), dict) else value
    return parse_config(raw)


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread() -> Iterator[None]:
    """Tiny convolutions run fastest on one thread; on a busy shared machine extra OpenMP threads
    only wait on each other (100x slower steps were measured)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
