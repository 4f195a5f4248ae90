"""Patch grids (System A's 5x3 grid) and Spanhol 2016's sliding-window and random patches."""

from __future__ import annotations

import numpy as np
import pytest

from histobreast.errors import ConfigError
from histobreast.preprocess.patches import (
    grid_patches,
    random_patches,
    resize_rgb,
    sliding_window_patches,
    window_starts,
)


def _assemble(patches: np.ndarray, grid: tuple[int, int] = (5, 3)) -> np.ndarray:
    """The inverse of grid_patches: row-major patches back into one image."""
    cols, rows = grid
    size = patches.shape[1]
    return patches.reshape(rows, cols, size, size, 3).swapaxes(1, 2).reshape(rows * size, cols * size, 3)


def _image(height: int, width: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(height, width, 3), dtype=np.uint8)


def test_grid_is_15_non_overlapping_patches_covering_1120x672() -> None:
    image = _image(460, 700)
    patches = grid_patches(image)
    assert patches.shape == (15, 224, 224, 3) and patches.dtype == np.uint8
    resized = resize_rgb(image, (1120, 672))
    assert resized.shape == (672, 1120, 3)
    # Row-major: patch 7 is row 1, column 2; patch 14 the bottom-right corner.
    assert np.array_equal(patches[7], resized[224:448, 448:672])
    assert np.array_equal(patches[14], resized[448:672, 896:1120])
    # Each pixel of the resized image is in exactly one patch: reassembling gives it back.
    assert np.array_equal(_assemble(patches), resized)
    coverage = np.zeros((672, 1120), int)
    for index in range(15):
        row, col = divmod(index, 5)
        coverage[row * 224 : (row + 1) * 224, col * 224 : (col + 1) * 224] += 1
        assert np.array_equal(patches[index], resized[row * 224 : (row + 1) * 224, col * 224 : (col + 1) * 224])
    assert (coverage == 1).all()


def test_grid_from_an_image_already_at_grid_size_is_exact() -> None:
    image = _image(672, 1120)
    assert np.array_equal(_assemble(grid_patches(image)), image)


def test_grid_other_shapes() -> None:
    patches = grid_patches(_image(100, 150), grid=(3, 2), patch_size=32)
    assert patches.shape == (6, 32, 32, 3)
    assert np.array_equal(_assemble(patches, grid=(3, 2)), resize_rgb(_image(100, 150), (96, 64)))


def test_window_starts() -> None:
    assert window_starts(10, 4, 3).tolist() == [0, 3, 6]
    assert window_starts(10, 4, 3, cover_end=True).tolist() == [0, 3, 6]  # 6 + 4 = 10 already reaches the end
    assert window_starts(11, 4, 3, cover_end=True).tolist() == [0, 3, 6, 7]
    assert window_starts(5, 8, 2).tolist() == [0]  # longer than the axis: one clamped window


def test_sliding_windows_half_overlap_cover_the_image() -> None:
    image = _image(460, 700)
    patches = sliding_window_patches(image, 64, overlap=0.5)
    # Stride 32: x starts 0, 32, ..., 608 (20) plus 636 flush right; y 0, ..., 384 (13) plus 396.
    assert patches.shape == (21 * 14, 64, 64, 3)
    assert np.array_equal(patches[1], image[0:64, 32:96])
    assert np.array_equal(patches[20], image[0:64, 636:700])
    assert np.array_equal(patches[-1], image[396:460, 636:700])
    assert np.array_equal(patches[21], image[32:96, 0:64])


def test_random_patches_are_reproducible_crops() -> None:
    image = _image(460, 700)
    a = random_patches(image, 32, 50, np.random.default_rng(7))
    b = random_patches(image, 32, 50, np.random.default_rng(7))
    assert a.shape == (50, 32, 32, 3) and np.array_equal(a, b)
    assert not np.array_equal(a, random_patches(image, 32, 50, np.random.default_rng(8)))
    # Every patch is a real crop of the image.
    windows = np.lib.stride_tricks.sliding_window_view(image, (32, 32, 3))[..., 0, :, :, :]
    for patch in a[:5]:
        assert (windows == patch).all(axis=(2, 3, 4)).any()


def test_patch_errors_name_the_problem() -> None:
    with pytest.raises(ConfigError, match="does not fit in a 40x30 image"):
        sliding_window_patches(_image(30, 40), 32)
    with pytest.raises(ConfigError, match="overlap"):
        sliding_window_patches(_image(64, 64), 32, overlap=1.0)
    with pytest.raises(ConfigError, match="count"):
        random_patches(_image(64, 64), 32, 0, np.random.default_rng(0))
