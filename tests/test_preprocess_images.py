"""Tiny synthetic H&E-like images for the pre-processing tests (and a check that they are what they claim).

Pink tissue with white lumina and purple elliptic nuclei; optionally a planted dense cluster of
nuclei. Sizes are given at 0.84 µm/px (the scale of the real BACH copies): a nucleus is an
ellipse of semi-axes 3-5 px, i.e. 5-8 µm across.
"""

from __future__ import annotations

import cv2
import numpy as np

WHITE = (244, 242, 246)
PINK = (200, 124, 182)  # eosin: optical density >= 0.15 in every channel, as Macenko expects
PURPLE = (72, 38, 118)


def _nucleus(canvas: np.ndarray, centre: tuple[float, float], rng: np.random.Generator) -> None:
    axes = (int(rng.integers(4, 6)), int(rng.integers(3, 4)))
    cv2.ellipse(canvas, (int(centre[0]), int(centre[1])), axes, float(rng.uniform(0, 180)), 0, 360, PURPLE, -1)


def cluster_centres(cluster: tuple[int, int, int]) -> list[tuple[int, int]]:
    """Nucleus centres of a planted cluster ``(cx, cy, radius)``: hexagonal packing, rows 12 px, 14 px apart."""
    cx, cy, radius = cluster
    return [
        (int(x), int(y))
        for row, y in enumerate(range(cy - radius, cy + radius + 1, 12))
        for x in range(cx - radius + (row % 2) * 7, cx + radius + 1, 14)
        if (x - cx) ** 2 + (y - cy) ** 2 <= radius**2
    ]


def he_like_image(
    height: int = 768, width: int = 1024, nuclei: int = 300, seed: int = 0, cluster: tuple[int, int, int] | None = None
) -> np.ndarray:
    """An (H, W, 3) uint8 H&E-like field with ``nuclei`` scattered nuclei plus, if given, a planted cluster."""
    rng = np.random.default_rng(seed)
    canvas = np.empty((height, width, 3), np.uint8)
    canvas[:] = PINK
    for _ in range(nuclei):
        _nucleus(canvas, (rng.uniform(0, width), rng.uniform(0, height)), rng)
    for _ in range(max(1, height * width // 120_000)):  # a few white lumina
        centre = (int(rng.integers(0, width)), int(rng.integers(0, height)))
        cv2.circle(canvas, centre, int(rng.integers(20, 60)), WHITE, -1)
    for centre in cluster_centres(cluster) if cluster is not None else []:
        _nucleus(canvas, centre, rng)
    noise = cv2.GaussianBlur(rng.normal(0, 6, canvas.shape).astype(np.float32), (0, 0), 1.0)
    return np.clip(canvas + noise, 0, 255).astype(np.uint8)


def test_he_like_image_has_dark_nuclei_on_pink_tissue() -> None:
    image = he_like_image(200, 300, nuclei=50, seed=1, cluster=(150, 100, 30))
    nucleus_pixels = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY) < 120  # purple is ~60 grey, pink ~175
    assert image.shape == (200, 300, 3) and image.dtype == np.uint8
    assert nucleus_pixels[80:121, 125:176].mean() > 3 * nucleus_pixels.mean()  # the cluster is crowded
    # Rows y = 70, 82, ..., 130; the row y = 94 is shifted by 7 px: x = 134, 148, 162, 176 fit the disc.
    centres = cluster_centres((150, 100, 30))
    assert [x for x, y in centres if y == 94] == [134, 148, 162, 176]
    assert len(centres) == 15
