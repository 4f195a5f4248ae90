"""The six views of Liu et al. 2022 (System B): raw, three rotations and two mirror images.

Each view is applied to the raw image on its own (never one after another), and KREM then runs
on each view separately, so test-time voting sees six differently placed sliding-window grids.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping, Sequence

import numpy as np

from histobreast.data.imageio import read_rgb
from histobreast.data.records import ImageRecord
from histobreast.errors import ConfigError

SIX_VIEWS: tuple[str, ...] = ("raw", "rot90", "rot180", "rot270", "flip_x", "flip_y")
Box = tuple[int, int, int, int]  # x, y, width, height in pixels


def apply_view(image: np.ndarray, view: str) -> np.ndarray:
    """Return ``view`` of the raw ``image`` (H, W, ...) as a new contiguous array.

    ``rotN`` turns the image N degrees counter-clockwise (``numpy.rot90``). ``flip_x`` mirrors it
    across the horizontal (x) axis, i.e. upside down; ``flip_y`` mirrors it across the vertical
    (y) axis, i.e. left to right — the paper's "inverted relative to the x- and y-axes".
    """
    if view == "raw":
        out = image
    elif view in ("rot90", "rot180", "rot270"):
        out = np.rot90(image, k=int(view[3:]) // 90, axes=(0, 1))
    elif view == "flip_x":
        out = image[::-1]
    elif view == "flip_y":
        out = image[:, ::-1]
    else:
        raise ConfigError(f"unknown view {view!r}; expected one of {', '.join(SIX_VIEWS)}")
    return np.array(out, order="C")  # always a fresh, contiguous copy


def view_box_to_raw(box: Box, view: str, raw_size: tuple[int, int]) -> Box:
    """The box of the raw image (``raw_size = (width, height)``) that ``view`` turns into ``box``:
    ``apply_view(raw[raw box], view) == apply_view(raw, view)[box]``."""
    x, y, w, h = box
    width, height = raw_size
    raw_boxes = {
        "raw": (x, y, w, h),
        "rot90": (width - y - h, x, h, w),  # np.rot90: viewed[i, j] = raw[j, W-1-i]
        "rot180": (width - x - w, height - y - h, w, h),
        "rot270": (y, height - x - w, h, w),  # viewed[i, j] = raw[H-1-j, i]
        "flip_x": (x, height - y - h, w, h),
        "flip_y": (width - x - w, y, w, h),
    }
    if view not in raw_boxes:
        raise ConfigError(f"unknown view {view!r}; expected one of {', '.join(SIX_VIEWS)}")
    return raw_boxes[view]


def invert_view(viewed: np.ndarray, view: str) -> np.ndarray:
    """The raw array that :func:`apply_view` turns into ``viewed``: ``invert_view(apply_view(a, v), v) == a``.

    Maps computed on a view (or on a window of it) are brought back to the raw image's orientation with it.
    """
    if view in ("rot90", "rot270"):
        return apply_view(viewed, "rot270" if view == "rot90" else "rot90")
    return apply_view(viewed, view)  # raw, rot180 and the two flips are their own inverses


def read_view(record: ImageRecord, view: str) -> np.ndarray:
    """The record's image seen in one of the six views."""
    return apply_view(read_rgb(record.path), view)


def view_reader(view: str | None) -> Callable[[ImageRecord], np.ndarray] | None:
    """A picklable image reader for datasets that applies one of the six views (None: the raw image)."""
    if view is None or view == "raw":
        return None
    return functools.partial(read_view, view=view)


def average_over_views(
    predict: Callable[[str | None], Mapping[str, np.ndarray]], views: Sequence[str] = ()
) -> dict[str, np.ndarray]:
    """Test-time augmentation: ``predict(view)`` for every view (or once, raw), probabilities averaged per key."""
    runs = [predict(view) for view in (list(views) or [None])]
    return {key: np.mean([run[key] for run in runs], axis=0) for key in runs[0]}
