"""Probability heatmaps over a slide's thumbnail: overlapping tiles averaged, not overwritten.

Each tile adds its probability to every thumbnail pixel it covers and one to a count; the heatmap
is the sum over the count where the count is positive (elsewhere: no tile, shown transparent).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from histobreast.atomic import atomic_path


def average_heatmaps(
    boxes: Sequence[tuple[int, int, int, int]], probs: np.ndarray, shape: tuple[int, int], downsample: float
) -> tuple[np.ndarray, np.ndarray]:
    """``(heatmaps (C, H, W) with NaN where no tile lies, coverage count (H, W))`` on a thumbnail of
    ``shape = (H, W)`` at ``downsample`` from level 0, for level-0 ``boxes`` with ``probs (N, C)``."""
    height, width = shape
    sums = np.zeros((probs.shape[1] if probs.ndim == 2 else 0, height, width), np.float64)
    count = np.zeros((height, width), np.int32)
    for (x, y, w, h), p in zip(boxes, probs):
        x0, y0 = int(round(x / downsample)), int(round(y / downsample))
        x1, y1 = max(x0 + 1, int(round((x + w) / downsample))), max(y0 + 1, int(round((y + h) / downsample)))
        sums[:, y0:y1, x0:x1] += np.asarray(p, np.float64)[:, None, None]
        count[y0:y1, x0:x1] += 1
    with np.errstate(invalid="ignore", divide="ignore"):
        heat = np.where(count > 0, sums / np.maximum(count, 1), np.nan)
    return heat, count


def write_heatmap_png(path: str | Path, thumbnail: np.ndarray, heat: np.ndarray, title: str) -> Path:
    """The thumbnail in gray with ``heat`` (values in [0, 1], NaN = no tile) over it and a colour bar."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    gray = thumbnail.mean(axis=2) / 255
    height, width = gray.shape
    fig, ax = plt.subplots(figsize=(6.4, 6.4 * height / width + 0.6), dpi=100)
    ax.imshow(gray, cmap="gray", vmin=0, vmax=1)
    image = ax.imshow(np.ma.masked_invalid(heat), cmap="inferno", vmin=0, vmax=1, alpha=0.6)
    ax.set_axis_off()
    ax.set_title(title, fontsize=9)
    fig.colorbar(image, ax=ax, fraction=0.04, pad=0.02, label="probability")
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", bbox_inches="tight", metadata={"Software": None})
    plt.close(fig)
    return path
