"""System A augmentation: exact geometry, no black corners, deterministic under a seed (labels untouched
and copies per image: tests/test_datasets.py)."""

from __future__ import annotations

import numpy as np
import pytest

from histobreast.datasets.augmenter import Augmenter
from histobreast.errors import ConfigError
from histobreast.preprocess.augment import Augmentation, AugmentParams, sample_augmentation
from histobreast.preprocess.config import AugmentConfig
from test_preprocess_images import he_like_image


def _image(height: int = 46, width: int = 70, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(1, 256, size=(height, width, 3), dtype=np.uint8)


def test_identity_flips_and_quarter_turn_are_exact() -> None:
    image = _image()
    assert np.array_equal(Augmentation().apply(image), image)
    assert np.array_equal(Augmentation(flip_horizontal=True).apply(image), image[:, ::-1])
    assert np.array_equal(Augmentation(flip_vertical=True).apply(image), image[::-1])
    square = _image(40, 40)
    assert np.array_equal(Augmentation(angle=90.0).apply(square), np.rot90(square))  # counter-clockwise


def test_shear_moves_rows_sideways() -> None:
    """x-shear of 45 degrees shifts row y by (y - centre) pixels; the centre row stays put."""
    image = _image(41, 81)
    sheared = Augmentation(shear_x=45.0).apply(image)
    assert np.array_equal(sheared[20], image[20])
    assert np.array_equal(sheared[25, 10:70], image[25, 5:65])


@pytest.mark.parametrize("seed", range(5))
def test_no_black_corners_at_any_angle(seed: int) -> None:
    """Reflection padding: a uniform image stays uniform under every rotation and shear."""
    uniform = np.full((60, 90, 3), 180, np.uint8)
    params = AugmentParams(max_shear=20.0)
    out = sample_augmentation(np.random.default_rng(seed), params).apply(uniform)
    assert out.shape == uniform.shape and (out == 180).all()
    tissue = he_like_image(120, 160, nuclei=40, seed=seed)
    rotated = Augmentation(angle=45.0, shear_x=10.0).apply(tissue)
    assert rotated.min(axis=2).max() > 0 and (rotated.sum(axis=2) > 60).all()  # no black pixel anywhere


def test_samples_stay_in_range_and_cover_any_angle() -> None:
    rng = np.random.default_rng(0)
    samples = [sample_augmentation(rng) for _ in range(400)]
    angles = np.array([s.angle for s in samples])
    shears = np.array([[s.shear_x, s.shear_y] for s in samples])
    assert angles.min() < -150 and angles.max() > 150 and np.abs(angles).max() <= 180
    assert np.abs(shears).max() <= 10.0 and (np.sign(shears) < 0).any() and (np.sign(shears) > 0).any()
    flips = np.array([[s.flip_horizontal, s.flip_vertical] for s in samples])
    assert 0.4 < flips.mean() < 0.6
    with pytest.raises(ConfigError, match="max_shear"):
        AugmentParams(max_shear=60.0)


def test_deterministic_under_a_seed_through_the_datasets_augmenter() -> None:
    """The real path: a dataset's Augmenter draws from a generator seeded per (seed, epoch, index)."""
    image = _image(64, 64)
    augmenter = Augmenter(AugmentConfig(rotation=180, hflip=True, vflip=True, shear=10))

    def drawn(seed: int) -> np.ndarray:
        return augmenter.apply(image, augmenter.draw(np.random.default_rng(seed)))

    assert np.array_equal(drawn(3), drawn(3))
    assert len({drawn(s).tobytes() for s in range(8)}) == 8  # eight different images
    assert not np.array_equal(drawn(3), image)
