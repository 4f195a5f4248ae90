"""Test-time augmentation: any prediction function run on every view, its probabilities averaged."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import numpy as np


def average_over_views(
    predict: Callable[[str | None], Mapping[str, np.ndarray]], views: Sequence[str] = ()
) -> dict[str, np.ndarray]:
    """``predict(view)`` for every view (or once, raw), probabilities averaged per key."""
    runs = [predict(view) for view in (list(views) or [None])]
    return {key: np.mean([run[key] for run in runs], axis=0) for key in runs[0]}
