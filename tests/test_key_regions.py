"""System B data path: six views x KREM regions x three crops, the region cache, the random control,
and the per-view / six-view majority-vote predictions."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import torch

import histobreast.preprocess.key_region_samples as samples_module
from histobreast.data.bach import BACH_CLASSES
from histobreast.data.imageio import image_size, read_rgb
from histobreast.data.records import ImageRecord
from histobreast.data.synthetic import synth_bach
from histobreast.datasets.key_regions import (
    KeyRegionDataset,
    level1_candidates,
    random_key_regions,
)
from histobreast.errors import ConfigError, DatasetError
from histobreast.preprocess.config import AugmentConfig
from histobreast.preprocess.krem import KremParams, crop_key_region, key_regions
from histobreast.preprocess.transforms import normalize, to_model_input
from histobreast.preprocess.views import SIX_VIEWS, apply_view, view_box_to_raw
from histobreast.votes import image_predictions, view_predictions

CLASSES = list(BACH_CLASSES)
# Synthetic BACH at 512x384 px (BACH's field of view at 1.68 µm/px): KREM's windows scale to
# 224/100/56 px with strides 20/10/5, i.e. 15 x 9 = 135 level-1 windows; crops are resized to 32 px.
PARAMS = KremParams(output_size=32)
SIZE = (512, 384)


@pytest.fixture
def records(tmp_path: Path) -> list[ImageRecord]:
    return synth_bach(tmp_path / "bach", per_class=1, size=SIZE, classes=("Normal", "Invasive"), image_format="png")


def test_each_test_image_yields_six_views_of_three_crops_from_the_densest_region(records) -> None:
    data = KeyRegionDataset(records, CLASSES, params=PARAMS)
    assert len(data) == 2 * 6
    assert data.image_slices == [slice(0, 6), slice(6, 12)]
    mpp = records[1].microns_per_pixel
    image = read_rgb(records[1].path)
    for v, view in enumerate(SIX_VIEWS):
        crops, target = data[6 + v]
        assert crops.shape == (3, 3, 32, 32) and crops.dtype == torch.float32
        assert target == 3
        viewed = apply_view(image, view)
        densest = key_regions(viewed, mpp, PARAMS, top_k=1)[0]
        expected = to_model_input(crop_key_region(viewed, densest, 32))
        torch.testing.assert_close(crops, expected, rtol=0, atol=0)
        assert data.regions(1, v)[0] == densest


def test_view_box_to_raw_finds_the_raw_pixels_of_a_box_in_every_view() -> None:
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (37, 53, 3), dtype=np.uint8)  # not square: rotations swap the axes
    for view in SIX_VIEWS:
        viewed = apply_view(image, view)
        for _ in range(20):
            w, h = rng.integers(1, viewed.shape[1] + 1), rng.integers(1, viewed.shape[0] + 1)
            x, y = rng.integers(0, viewed.shape[1] - w + 1), rng.integers(0, viewed.shape[0] - h + 1)
            rx, ry, rw, rh = view_box_to_raw((x, y, w, h), view, (53, 37))
            np.testing.assert_array_equal(
                apply_view(image[ry : ry + rh, rx : rx + rw], view), viewed[y : y + h, x : x + w]
            )
    with pytest.raises(ConfigError, match="unknown view 'rot45'"):
        view_box_to_raw((0, 0, 1, 1), "rot45", (53, 37))


def test_uint8_samples_are_the_float_samples_before_normalisation(records) -> None:
    floats = KeyRegionDataset(records[:1], CLASSES, params=PARAMS)
    raw = KeyRegionDataset(records[:1], CLASSES, params=PARAMS, uint8=True)
    assert raw.transform_id == "uint8" != floats.transform_id
    crops = raw[3][0]
    assert crops.dtype == torch.uint8 and crops.shape == (3, 3, 32, 32)
    torch.testing.assert_close(normalize(crops.float() / 255), floats[3][0])


def test_training_takes_the_twelve_densest_windows_per_view(records) -> None:
    data = KeyRegionDataset(records[:1], CLASSES, top_k=12, params=PARAMS)
    assert len(data) == 72  # the paper's 6 views x 12 regions
    assert data.sample_view.tolist() == np.repeat(np.arange(6), 12).tolist()
    assert data.sample_region.tolist() == list(range(12)) * 6
    for v in range(6):
        level1_counts = [r.counts[0] for r in data.regions(0, v)]
        assert level1_counts == sorted(level1_counts, reverse=True)
        assert len({r.boxes[0] for r in data.regions(0, v)}) == 12


def test_levels_pick_the_requested_scales_coarse_first(records) -> None:
    full = KeyRegionDataset(records[:1], CLASSES, params=PARAMS)
    double = KeyRegionDataset(records[:1], CLASSES, params=PARAMS, levels=(0, 2))
    torch.testing.assert_close(double[4][0], full[4][0][[0, 2]], rtol=0, atol=0)
    with pytest.raises(ConfigError, match="coarse first"):
        KeyRegionDataset(records, CLASSES, params=PARAMS, levels=(2, 0))


def test_regions_are_computed_once_and_then_read_from_the_cache(records, tmp_path, monkeypatch) -> None:
    cache = tmp_path / "cache"
    first = KeyRegionDataset(records, CLASSES, top_k=3, params=PARAMS, cache_dir=cache)
    first.prepare()
    expected = [first[i][0] for i in range(len(first))]

    def must_not_run(*args, **kwargs):
        raise AssertionError("KREM ran again although its result is cached")

    monkeypatch.setattr(samples_module, "key_regions", must_not_run)
    again = KeyRegionDataset(records, CLASSES, top_k=3, params=PARAMS, cache_dir=cache)
    for i, crops in enumerate(expected):
        torch.testing.assert_close(again[i][0], crops, rtol=0, atol=0)
    # A different setting is a different key: KREM must run (and here, fail loudly).
    changed = KeyRegionDataset(records, CLASSES, top_k=4, params=PARAMS, cache_dir=cache)
    with pytest.raises(AssertionError, match="KREM ran again"):
        changed[0]


def test_random_control_draws_seeded_nested_windows_on_the_krem_grids(records) -> None:
    dens = KeyRegionDataset(records[:1], CLASSES, top_k=12, params=PARAMS)
    rand = KeyRegionDataset(records[:1], CLASSES, top_k=12, params=PARAMS, selection="random", seed=7)
    same = KeyRegionDataset(records[:1], CLASSES, top_k=12, params=PARAMS, selection="random", seed=7)
    other = KeyRegionDataset(records[:1], CLASSES, top_k=12, params=PARAMS, selection="random", seed=8)
    assert rand.regions(0, 0) == same.regions(0, 0)
    assert rand.regions(0, 0) != other.regions(0, 0)
    assert rand.regions(0, 0) != dens.regions(0, 0)
    assert rand.regions(0, 0) != rand.regions(0, 1)  # each view draws its own windows
    levels = PARAMS.scaled_windows(records[0].microns_per_pixel)
    assert levels == ((224, 20), (100, 10), (56, 5))
    for region in rand.regions(0, 2):
        assert region.counts == (-1, -1, -1)
        assert region.boxes[0][2:] == (224, 224)
        for (px, py, pw, ph), (x, y, w, h), (size, stride) in zip(region.boxes, region.boxes[1:], levels[1:]):
            assert (w, h) == (size, size)
            assert px <= x and py <= y and x + w <= px + pw and y + h <= py + ph
            assert (x - px) % stride == 0 and (y - py) % stride == 0
    assert len(rand) == 72 and rand[5][0].shape == (3, 3, 32, 32)


def test_random_key_regions_are_distinct_level1_windows() -> None:
    mpp = 0.42 * 2048 / SIZE[0]
    assert level1_candidates(SIZE, mpp, PARAMS) == 15 * 9
    regions = random_key_regions(SIZE, mpp, PARAMS, 135, np.random.default_rng(0))
    assert len({r.boxes[0] for r in regions}) == 135


def test_majority_vote_over_each_images_views_with_the_summed_probability_tie_rule(records) -> None:
    data = KeyRegionDataset(records, CLASSES, params=PARAMS)
    probs = np.full((12, 4), 0.1)
    # Image 0 (label Normal): four views say Benign, two say InSitu -> Benign.
    for row, winner in zip(range(6), [1, 1, 2, 1, 2, 1]):
        probs[row, winner] = 0.7
    # Image 1 (label Invasive): three views say Normal (0.4 each), three say Invasive (0.7 each):
    # a 3-3 tie, broken by the summed probabilities (Normal 3*0.4 + 3*0.1 = 1.5 < Invasive 2.4).
    for row in range(6, 9):
        probs[row] = [0.4, 0.3, 0.2, 0.1]
    for row in range(9, 12):
        probs[row] = [0.1, 0.1, 0.1, 0.7]
    views = view_predictions(data, probs)
    assert views.image_ids[:2] == ["n001/raw", "n001/rot90"] and views.image_ids[11] == "iv001/flip_y"
    assert views.labels.tolist() == [0] * 6 + [3] * 6
    assert (views.predicted == views.labels).mean() == pytest.approx(3 / 12)  # patch-level accuracy
    # where each voter looked: its level-1 window in the raw image's pixels
    boxes = np.stack([views.extra[f"region_{c}"] for c in "xywh"], axis=1).astype(int)
    width, height = image_size(records[0].path)
    assert tuple(boxes[0]) == data.regions(0, 0)[0].boxes[0]  # the raw view's window as it is
    assert tuple(boxes[2]) == view_box_to_raw(data.regions(0, 2)[0].boxes[0], "rot180", (width, height))
    assert (
        (boxes[:, :2] >= 0).all()
        and (boxes[:, 0] + boxes[:, 2] <= width).all()
        and (boxes[:, 1] + boxes[:, 3] <= height).all()
    )
    images = image_predictions(data, probs)
    assert images.image_ids == ["n001", "iv001"]
    assert images.predicted.tolist() == [1, 3]
    assert images.labels.tolist() == [0, 3]
    np.testing.assert_allclose(images.probs.sum(axis=1), 1.0)
    np.testing.assert_allclose(images.extra["view_disagreement"], [2 / 6, 3 / 6])
    with pytest.raises(ValueError, match=r"\(12, 4\)"):
        image_predictions(data, probs[:6])


def test_max_regions_keeps_each_views_densest_regions_for_the_vote(records) -> None:
    data = KeyRegionDataset(records, CLASSES, params=PARAMS, top_k=2)
    assert data.sample_region.tolist()[:4] == [0, 1, 0, 1]  # image-major, then view, then rank
    probs = np.full((len(data), 4), 0.1)
    probs[data.sample_region == 0, 0] = 0.7  # the densest region of every view says Normal,
    probs[data.sample_region == 1, 3] = 0.9  # the second says Invasive, more confidently
    every = image_predictions(data, probs)
    densest = image_predictions(data, probs, max_regions=1)
    assert every.predicted.tolist() == [3, 3]  # 6-6 tie: the larger summed probability
    assert densest.predicted.tolist() == [0, 0]
    np.testing.assert_allclose(densest.extra["view_disagreement"], [0.0, 0.0])
    views = view_predictions(data, probs, max_regions=1)
    assert views.image_ids[:2] == ["n001/raw", "n001/rot90"] and len(views) == 12  # no rank suffix
    assert views.predicted.tolist() == [0] * 12 and views.labels.tolist() == [0] * 6 + [3] * 6
    assert view_predictions(data, probs).image_ids[:2] == ["n001/raw/0", "n001/raw/1"]
    with pytest.raises(ValueError, match="max_regions"):
        image_predictions(data, probs, max_regions=0)


def test_colour_jitter_draws_once_per_sample_for_all_its_crops_seeded_by_epoch(records) -> None:
    plain = KeyRegionDataset(records, CLASSES, params=PARAMS, uint8=True)
    jitter = KeyRegionDataset(records, CLASSES, params=PARAMS, uint8=True, augment=AugmentConfig(color_jitter=0.3))
    base, first = plain[3][0].double(), jitter[3][0].double()
    assert not torch.equal(first, base)
    brightness = first.mean(dim=(1, 2, 3)) / base.mean(dim=(1, 2, 3))  # one draw: the same change per crop
    assert brightness.max() - brightness.min() < 0.05 * brightness.mean()
    assert torch.equal(jitter[3][0], jitter[3][0])  # deterministic under (seed, epoch, index)
    jitter.set_epoch(1)
    assert not torch.equal(jitter[3][0], first.to(torch.uint8))
    with pytest.raises(ConfigError, match="cannot be cached"):
        jitter.input_key(0)


def test_bad_inputs_name_the_file_or_option(records) -> None:
    with pytest.raises(DatasetError, match="n001.png: label 'Normal' is not one of"):
        KeyRegionDataset(records, ["Benign", "Invasive"], params=PARAMS)
    with pytest.raises(ConfigError, match="transform_id"):
        KeyRegionDataset(records, CLASSES, params=PARAMS, transform=to_model_input)
    with pytest.raises(ConfigError, match="unknown-view|non-empty subset"):
        KeyRegionDataset(records, CLASSES, params=PARAMS, views=["raw", "unknown-view"])


def test_an_image_with_fewer_windows_than_top_k_says_so_and_uses_all_it_has(tmp_path, caplog) -> None:
    small = synth_bach(tmp_path / "small", per_class=1, size=SIZE, classes=("InSitu",), image_format="png")[0]
    # Level-1 windows of 1536/4 = 384 px every 64 px: 3 x 1 of them on 512x384.
    params = KremParams(windows=(1536, 400, 224), strides=(256, 40, 20), output_size=32)
    with caplog.at_level(logging.WARNING, logger="histobreast.datasets.key_regions"):
        data = KeyRegionDataset([small], CLASSES, top_k=12, params=params)
    assert "only 3 level-1 windows fit, fewer than top_k=12" in caplog.text
    assert len(data) == 6 * 3
    assert data[17][0].shape == (3, 3, 32, 32)


@pytest.mark.realdata
def test_a_real_bach_image_at_0_84_um_per_px_gives_448_200_112_px_windows(bach_dir: Path) -> None:
    from histobreast.data.bach import read_bach

    record = next(r for r in read_bach(bach_dir, microns_per_pixel=0.84) if r.label == "Invasive")
    data = KeyRegionDataset([record], CLASSES, params=KremParams())
    assert len(data) == 6
    for v in range(6):
        region = data.regions(0, v)[0]
        assert [box[2:] for box in region.boxes] == [(448, 448), (200, 200), (112, 112)]
        assert region.counts[0] > 0  # KREM finds nuclei in real tissue
    crops, target = data[5]
    assert crops.shape == (3, 3, 224, 224) and target == CLASSES.index("Invasive")
