"""KREM (Liu et al. 2022): nuclei detection, nested densest windows, scaling with µm/px, crops."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from histobreast.errors import ConfigError
from histobreast.preprocess.krem import (
    KeyRegion,
    KremParams,
    crop_key_region,
    detect_nuclei,
    draw_overlay,
    key_regions,
    regions_from_centroids,
)
from test_preprocess_images import cluster_centres, he_like_image

CLUSTER = (760, 250, 48)  # (cx, cy, radius) at 0.84 µm/px, well inside a 1024x768 field


def _inside(box: tuple[int, int, int, int], parent: tuple[int, int, int, int]) -> bool:
    x, y, w, h = box
    px, py, pw, ph = parent
    return px <= x and py <= y and x + w <= px + pw and y + h <= py + ph


def _contains(box: tuple[int, int, int, int], point: tuple[float, float]) -> bool:
    x, y, w, h = box
    return x <= point[0] < x + w and y <= point[1] < y + h


def test_params_scale_with_microns_per_pixel() -> None:
    params = KremParams()
    assert params.scaled_windows(0.42) == ((897, 80), (400, 40), (224, 20))
    # 0.84 µm/px: lengths halve (897 * 0.5 = 448.5 rounds to even 448).
    assert params.scaled_windows(0.84) == ((448, 40), (200, 20), (112, 10))
    assert params.scale(0.21) == pytest.approx(2.0)
    with pytest.raises(ConfigError, match="microns_per_pixel"):
        params.scale(0.0)
    with pytest.raises(ConfigError, match="windows"):
        KremParams(windows=(897, 400), strides=(80, 40, 20))
    with pytest.raises(ConfigError, match="threshold"):
        KremParams(threshold="otsu")


def test_planted_cluster_gets_all_three_levels() -> None:
    image = he_like_image(cluster=CLUSTER, seed=3)
    region = key_regions(image, 0.84)[0]
    assert [b[2:] for b in region.boxes] == [(448, 448), (200, 200), (112, 112)]
    cx, cy, radius = CLUSTER
    for level, box in enumerate(region.boxes):
        assert _contains(box, (cx, cy)), f"level {level + 1} box {box} misses the cluster centre"
    # The 112 px level-3 window holds most of the planted cluster (it is 96 px across).
    planted_inside = sum(_contains(region.boxes[2], c) for c in cluster_centres(CLUSTER))
    assert planted_inside >= 0.7 * len(cluster_centres(CLUSTER))
    assert region.counts[0] >= region.counts[1] >= region.counts[2] >= planted_inside * 0.9


def test_detects_nuclei_of_a_synthetic_field() -> None:
    image = he_like_image(nuclei=300, seed=4, cluster=CLUSTER)
    nuclei = detect_nuclei(image, 0.84)
    planted = 300 + len(cluster_centres(CLUSTER))
    # Some scattered nuclei overlap (merge into one component) or fall into white lumina.
    assert 0.75 * planted <= len(nuclei) <= planted
    assert nuclei.mask.shape == image.shape[:2] and nuclei.mask.dtype == bool
    gray = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
    assert gray[nuclei.mask].mean() < 100 < gray[~nuclei.mask].mean()  # purple nuclei, pink/white rest


def test_area_rule_scales_with_resolution() -> None:
    """The same tissue at twice the resolution gives the same nuclei (areas x4, perimeters ~x2)."""
    image = he_like_image(384, 512, nuclei=120, seed=5)
    upscaled = cv2.resize(image, (1024, 768), interpolation=cv2.INTER_CUBIC)
    low, high = detect_nuclei(image, 0.84), detect_nuclei(upscaled, 0.42)
    assert abs(len(high) - len(low)) <= 0.1 * len(low)
    assert np.median(high.areas) == pytest.approx(4 * np.median(low.areas), rel=0.2)


def test_windows_match_brute_force_counting() -> None:
    """The integral-image search agrees with counting centroids window by window."""
    rng = np.random.default_rng(0)
    centroids = rng.uniform([0, 0], [300, 200], size=(400, 2))
    params = KremParams(windows=(120, 50, 20), strides=(30, 10, 5), reference_mpp=1.0)
    region = regions_from_centroids(centroids, (300, 200), 1.0, params)[0]
    best = 0
    for y in range(0, 200 - 120 + 1, 30):
        for x in range(0, 300 - 120 + 1, 30):
            best = max(best, sum(_contains((x, y, 120, 120), c) for c in centroids))
    assert region.counts[0] == best == sum(_contains(region.boxes[0], c) for c in centroids)
    for level in (1, 2):
        assert region.counts[level] == sum(_contains(region.boxes[level], c) for c in centroids)


def test_ties_go_to_the_centre_and_oversized_windows_clamp() -> None:
    params = KremParams()
    blank = regions_from_centroids(np.zeros((0, 2)), (1024, 768), 0.84, params)[0]
    assert blank.counts == (0, 0, 0)
    x, y, w, h = blank.boxes[0]
    # Candidate starts 0..560 step 40 (x) and 0..320 step 40 (y); the centre-most is (280, 160).
    assert (x, y, w, h) == (280, 160, 448, 448)
    small = regions_from_centroids(np.array([[10.0, 10.0]]), (300, 200), 0.84, params)[0]
    assert small.boxes[0] == (0, 0, 300, 200)  # 448 px window clamped to the 300x200 image
    assert small.boxes[1][2:] == (200, 200) and small.boxes[2][2:] == (112, 112)


def test_top_k_ranking_and_non_maximum_suppression() -> None:
    image = he_like_image(cluster=CLUSTER, seed=6)
    ranked = key_regions(image, 0.84, top_k=12)
    assert len(ranked) == 12 and len({r.boxes[0] for r in ranked}) == 12
    assert [r.counts[0] for r in ranked] == sorted((r.counts[0] for r in ranked), reverse=True)
    for region in ranked:
        assert all(_inside(child, parent) for parent, child in zip(region.boxes, region.boxes[1:]))
    spread = key_regions(image, 0.84, KremParams(top_k_max_iou=0.3), top_k=4)
    boxes = [np.array(r.boxes[0]) for r in spread]
    for i in range(len(boxes)):
        for j in range(i):
            ix = max(0, min(boxes[i][0] + 448, boxes[j][0] + 448) - max(boxes[i][0], boxes[j][0]))
            iy = max(0, min(boxes[i][1] + 448, boxes[j][1] + 448) - max(boxes[i][1], boxes[j][1]))
            assert ix * iy / (2 * 448**2 - ix * iy) <= 0.3
    # Only 15 x 9 = 135 candidate windows exist: asking for more returns them all.
    assert len(regions_from_centroids(np.zeros((0, 2)), (1024, 768), 0.84, top_k=500)) == 135


def test_crop_key_region_shapes_and_content() -> None:
    image = np.zeros((300, 400, 3), np.uint8)
    image[100:200, 100:200] = 200
    region = KeyRegion(boxes=((0, 0, 300, 300), (100, 100, 100, 100), (120, 120, 50, 50)), counts=(3, 2, 1))
    crops = crop_key_region(image, region, output_size=64)
    assert crops.shape == (3, 64, 64, 3) and crops.dtype == np.uint8
    assert (crops[1] == 200).all() and (crops[2] == 200).all()
    assert crops[0][:16].max() == 0 and crops[0][32, 32, 0] == 200


def test_overlay_draws_windows_without_touching_input() -> None:
    image = he_like_image(cluster=CLUSTER, seed=7)
    original = image.copy()
    nuclei = detect_nuclei(image, 0.84)
    regions = regions_from_centroids(nuclei.centroids, (1024, 768), 0.84, top_k=2)
    overlay = draw_overlay(image, nuclei, regions)
    assert np.array_equal(image, original) and overlay.shape == image.shape
    x, y, w, h = regions[0].boxes[2]
    assert tuple(overlay[y + h // 2, x]) == (255, 235, 0)  # level-3 outline, yellow


@pytest.mark.realdata
@pytest.mark.parametrize("name", ["Normal/n010", "Benign/b015", "InSitu/is005", "Invasive/iv020"])
def test_real_bach_images(bach_dir, name) -> None:
    """Nested windows, and nuclei counts plausible for a 860x645 µm field.

    The field is 0.55 mm²; breast tissue holds roughly 1,000-10,000 nuclei per mm² (stroma to
    dense tumour), and KREM's shape rule keeps only compact, isolated components, so we expect 50
    (any tissue field has dozens) to 5,000. Detected nuclei must be stained by haematoxylin, and
    the count must not depend on the resolution the field is given at.
    """
    from skimage.color import rgb2hed

    from histobreast.data.imageio import read_rgb

    image = read_rgb(bach_dir / "ICIAR2018_BACH_Challenge" / "Photos" / f"{name}.jpeg")
    assert image.shape == (768, 1024, 3)
    nuclei = detect_nuclei(image, 0.84)
    assert 50 <= len(nuclei) <= 5000
    haematoxylin = rgb2hed(image)[..., 0]
    tissue = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY) < 204
    assert haematoxylin[nuclei.mask].mean() > haematoxylin[tissue].mean()
    upsampled = detect_nuclei(cv2.resize(image, (2048, 1536), interpolation=cv2.INTER_CUBIC), 0.42)
    assert abs(len(upsampled) - len(nuclei)) <= 0.25 * len(nuclei)
    regions = regions_from_centroids(nuclei.centroids, (1024, 768), 0.84, top_k=3)
    for region in regions:
        assert [b[2:] for b in region.boxes] == [(448, 448), (200, 200), (112, 112)]
        assert _inside(region.boxes[0], (0, 0, 1024, 768))
        assert all(_inside(child, parent) for parent, child in zip(region.boxes, region.boxes[1:]))
        assert region.counts[0] >= region.counts[1] >= region.counts[2] > 0
