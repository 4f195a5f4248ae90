"""Pictures of explanations: maps blended onto the image (the library's ``show_cam_on_image``, jet
colours) in a figure with a colour bar and the class explained, and a plain blended thumbnail for
the case review's cards.

A figure has one panel per map group, the headline first: System A's fused, global and local maps
(the patches the vote dropped hatched grey); System B's image map and one panel per view (its
scales' maps averaged, its crops outlined); an ensemble's vote and each member's map.
"""

from __future__ import annotations

import math
from pathlib import Path

import cv2
import numpy as np
from matplotlib.cm import ScalarMappable
from matplotlib.colors import Normalize
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle
from pytorch_grad_cam.utils.image import show_cam_on_image

from histobreast.atomic import atomic_path
from histobreast.explain.cam import rescale
from histobreast.explain.maps import DROPPED, Box, Explanation, box_on_map, resize_map

DPI = 110
MAX_COLUMNS = 4
DROPPED_GREY = (128, 128, 128)  # RGB of dropped patches on a card


def heat_overlay(image: np.ndarray, values: np.ndarray) -> np.ndarray:
    """``image`` (uint8 RGB) with ``values`` (a [0, 1] map, any size) blended on in jet colours, half and half."""
    height, width = image.shape[:2]
    heat = resize_map(values, (width, height)).clip(0.0, 1.0)
    return show_cam_on_image(image.astype(np.float32) / 255.0, heat, use_rgb=True, image_weight=0.5)


def panels(explanation: Explanation) -> list[tuple[str, np.ndarray, list[tuple[Box, str]]]]:
    """``(title, map, boxes)`` per panel: maps named ``<group>_level<L>`` are averaged into one panel."""
    groups: dict[str, list[str]] = {}
    for name in explanation.maps:
        groups.setdefault(name.split("_level")[0], []).append(name)
    out = []
    for group, names in groups.items():
        values = rescale(np.mean([explanation.maps[n] for n in names], axis=0))
        out.append((group, values, [box for n in names for box in explanation.boxes.get(n, [])]))
    return out


def plot_explanation(explanation: Explanation, image: np.ndarray, path: str | Path) -> Path:
    """Write the figure of ``explanation`` over ``image`` (the raw uint8 RGB image) as a PNG at ``path``."""
    shown = panels(explanation)
    height, width = explanation.maps[explanation.headline].shape
    small = cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA)
    cols = min(MAX_COLUMNS, len(shown))
    rows = math.ceil(len(shown) / cols)
    aspect = height / width
    fig = Figure(figsize=(3.2 * cols + 1.0, 3.2 * aspect * rows + 0.8), layout="constrained")
    axes = np.atleast_1d(fig.subplots(rows, cols)).ravel()
    for ax, (title, values, boxes) in zip(axes, shown):
        ax.imshow(heat_overlay(small, values))
        for box, kind in boxes:
            x, y, w, h = box_on_map(box, explanation.image_size, (width, height))
            dropped = kind == DROPPED
            ax.add_patch(
                Rectangle(
                    (x - 0.5, y - 0.5),
                    w,
                    h,
                    fill=dropped,
                    facecolor=(0.5, 0.5, 0.5, 0.6),
                    edgecolor="0.3" if dropped else "white",
                    hatch="xx" if dropped else None,
                    linewidth=0.8,
                )
            )
        note = " (hatched: dropped by the vote)" if any(kind == DROPPED for _, kind in boxes) else ""
        ax.set_title(title + note, fontsize="small")
        ax.set_axis_off()
    for ax in axes[len(shown) :]:
        ax.set_axis_off()
    bar = fig.colorbar(ScalarMappable(Normalize(0.0, 1.0), cmap="jet"), ax=list(axes[: len(shown)]), shrink=0.8)
    bar.set_label(f"evidence for {explanation.target_class} (1 = strongest)", fontsize="small")
    probability = explanation.probs[explanation.target]
    fig.suptitle(
        f"{explanation.image_id}: {explanation.method} map of class {explanation.target_class} (p = {probability:.2f})",
        fontsize="medium",
    )
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=DPI, bbox_inches="tight")
    return path


def card_overlay(explanation: Explanation, thumbnail: np.ndarray) -> np.ndarray:
    """The headline map blended onto ``thumbnail`` (uint8 RGB, any size), dropped patches greyed."""
    height, width = thumbnail.shape[:2]
    out = heat_overlay(thumbnail, explanation.maps[explanation.headline])
    for box, kind in explanation.boxes.get(explanation.headline, []):
        if kind == DROPPED:
            x, y, w, h = box_on_map(box, explanation.image_size, (width, height))
            out[y : y + h, x : x + w] = (0.4 * out[y : y + h, x : x + w] + 0.6 * np.array(DROPPED_GREY)).astype(
                np.uint8
            )
    return out
