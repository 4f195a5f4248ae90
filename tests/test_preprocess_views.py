"""The six views of Liu et al. 2022: hand-checked on a 2x3 array, six distinct, independent of each other."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from histobreast.errors import ConfigError
from histobreast.preprocess.views import SIX_VIEWS, apply_view

# 2 rows x 3 columns, no symmetry: every view is distinguishable.
GRID = np.array([[1, 2, 3], [4, 5, 6]])

EXPECTED = {
    "raw": [[1, 2, 3], [4, 5, 6]],
    "rot90": [[3, 6], [2, 5], [1, 4]],  # counter-clockwise: the right column becomes the top row
    "rot180": [[6, 5, 4], [3, 2, 1]],
    "rot270": [[4, 1], [5, 2], [6, 3]],
    "flip_x": [[4, 5, 6], [1, 2, 3]],  # mirrored across the horizontal axis: upside down
    "flip_y": [[3, 2, 1], [6, 5, 4]],  # mirrored across the vertical axis: left-right
}


@pytest.mark.parametrize("view", SIX_VIEWS)
def test_each_view_by_hand(view: str) -> None:
    assert apply_view(GRID, view).tolist() == EXPECTED[view]


def test_six_distinct_transforms_of_an_rgb_image() -> None:
    image = np.random.default_rng(0).integers(0, 256, size=(5, 7, 3), dtype=np.uint8)
    views = {v: apply_view(image, v) for v in SIX_VIEWS}
    for a, b in itertools.combinations(SIX_VIEWS, 2):
        assert views[a].shape != views[b].shape or not np.array_equal(views[a], views[b]), (a, b)
    assert views["rot90"].shape == (7, 5, 3) and views["flip_x"].shape == (5, 7, 3)


def test_views_are_independent_copies_of_the_raw_image() -> None:
    image = np.arange(2 * 3 * 3, dtype=np.uint8).reshape(2, 3, 3)
    expected = {v: apply_view(image, v).copy() for v in SIX_VIEWS}
    for view in SIX_VIEWS:
        out = apply_view(image, view)
        assert out.flags["C_CONTIGUOUS"] and not np.shares_memory(out, image)
        out[...] = 0  # writing into a view reaches neither the raw image nor the next view
    assert np.array_equal(image, np.arange(18, dtype=np.uint8).reshape(2, 3, 3))
    for view in reversed(SIX_VIEWS):  # order of application does not matter
        assert np.array_equal(apply_view(image, view), expected[view])
    # rot180 is one 180-degree turn of the raw image, not rot90 applied to the previous view.
    assert np.array_equal(expected["rot180"], image[::-1, ::-1])


def test_unknown_view_names_the_choices() -> None:
    with pytest.raises(ConfigError, match="rot45.*raw, rot90"):
        apply_view(GRID, "rot45")
