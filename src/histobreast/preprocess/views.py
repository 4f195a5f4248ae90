"""The six views of Liu et al. 2022 (System B): raw, three rotations and two mirror images.

Each view is applied to the raw image on its own (never one after another), and KREM then runs
on each view separately, so test-time voting sees six differently placed sliding-window grids.
"""

from __future__ import annotations

import numpy as np

from histobreast.errors import ConfigError

SIX_VIEWS: tuple[str, ...] = ("raw", "rot90", "rot180", "rot270", "flip_x", "flip_y")


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


def invert_view(viewed: np.ndarray, view: str) -> np.ndarray:
    """The raw array that :func:`apply_view` turns into ``viewed``: ``invert_view(apply_view(a, v), v) == a``.

    Maps computed on a view (or on a window of it) are brought back to the raw image's orientation with it.
    """
    if view in ("rot90", "rot270"):
        return apply_view(viewed, "rot270" if view == "rot90" else "rot90")
    return apply_view(viewed, view)  # raw, rot180 and the two flips are their own inverses
