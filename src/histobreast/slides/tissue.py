"""Tissue detection on a thumbnail, and the brightfield H&E check.

The mask is Otsu's threshold on saturation (white glass is unsaturated, stained tissue is not),
floored so an empty slide is not split into halves of noise; green/blue pen ink and near-black
marks are excluded; specks smaller than ``min_area_um2`` are removed and holes smaller than
``max_hole_um2`` filled. The check flags what must not be classified as H&E: fluorescence (dark
background) and IHC (brown DAB dominating the tissue).
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

#: Saturation (0-255) below which nothing is tissue, whatever Otsu says: bare glass and dust.
MIN_SATURATION = 15
#: Otsu's threshold is capped here: on slides mostly covered by tissue it splits pale from dark stain.
MAX_SATURATION_THRESHOLD = 25
#: Hue band (OpenCV degrees / 2) of green-to-blue pen ink; H&E is pink to purple (hue > 120 or < 10).
PEN_HUE = (35, 115)
PEN_MIN_SATURATION = 60
DARK_VALUE = 30  # near-black marker ink, folds and slide edges
#: Hue band of H&E (OpenCV degrees / 2: purple haematoxylin to pink eosin, wrapping through red).
HE_HUE = (125, 5)
MIN_HE_SHARE = 0.5  # measured: 97% on CMU-1 and TCGA H&E, 6% on the IHC kidney TIFF
MIN_AREA_UM2 = 5_000.0  # ~70x70 µm: smaller components are dust
MAX_HOLE_UM2 = 20_000.0  # smaller holes inside tissue (lumina, fat) are tissue


@dataclass(frozen=True)
class TissueMask:
    """A boolean tissue mask on a thumbnail and its downsample from level 0."""

    mask: np.ndarray
    downsample: float

    @property
    def fraction(self) -> float:
        """Share of the slide area that is tissue."""
        return float(self.mask.mean()) if self.mask.size else 0.0

    def image(self) -> np.ndarray:
        """The mask as a uint8 picture (255 = tissue) users can look at."""
        return self.mask.astype(np.uint8) * 255


def detect_tissue(
    thumbnail: np.ndarray,
    downsample: float,
    mpp: float | None,
    *,
    min_area_um2: float = MIN_AREA_UM2,
    max_hole_um2: float = MAX_HOLE_UM2,
) -> TissueMask:
    """Tissue mask of an RGB ``thumbnail`` taken at ``downsample`` from a level 0 of ``mpp`` µm/px
    (without a scale the area limits assume 0.5 µm/px, only for speck and hole sizes)."""
    hsv = cv2.cvtColor(thumbnail, cv2.COLOR_RGB2HSV)
    hue, sat, val = hsv[..., 0], hsv[..., 1], hsv[..., 2]
    otsu, _ = cv2.threshold(sat, 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
    tissue = sat > min(max(otsu, MIN_SATURATION), MAX_SATURATION_THRESHOLD)
    pen = (hue >= PEN_HUE[0]) & (hue <= PEN_HUE[1]) & (sat >= PEN_MIN_SATURATION)
    tissue &= ~pen & (val > DARK_VALUE)
    um_per_px = (mpp or 0.5) * downsample
    area_px = min_area_um2 / um_per_px**2
    tissue = _drop_small(tissue, area_px)
    tissue = ~_drop_small(~tissue, max_hole_um2 / um_per_px**2, keep_border=True)
    return TissueMask(tissue, downsample)


def _drop_small(mask: np.ndarray, min_area: float, keep_border: bool = False) -> np.ndarray:
    """``mask`` without connected components smaller than ``min_area`` px (``keep_border``: components
    touching the image border are kept whatever their size, e.g. the background around tissue)."""
    count, labels, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8)
    keep = stats[:, cv2.CC_STAT_AREA] >= min_area
    if keep_border:
        x, y, w, h = (stats[:, i] for i in range(4))
        keep |= (x == 0) | (y == 0) | (x + w == mask.shape[1]) | (y + h == mask.shape[0])
    keep[0] = False
    return keep[labels] if count > 1 else np.zeros_like(mask, dtype=bool)


def stain_problem(thumbnail: np.ndarray) -> str | None:
    """Why the slide does not look like brightfield H&E (``None`` when it does): a dark background
    (fluorescence), or stained pixels that are mostly not the pink-to-purple of eosin and
    haematoxylin (IHC's brown DAB, or its blue counterstain alone)."""
    gray = cv2.cvtColor(thumbnail, cv2.COLOR_RGB2GRAY)
    if np.median(gray) < 100:
        return "dark background: looks like fluorescence, not brightfield H&E"
    hsv = cv2.cvtColor(thumbnail, cv2.COLOR_RGB2HSV)
    stained = hsv[..., 1] > MIN_SATURATION
    if stained.sum() < 100:
        return None
    hue = hsv[..., 0][stained].astype(int)
    he = ((hue >= HE_HUE[0]) | (hue <= HE_HUE[1])).mean()
    if he < MIN_HE_SHARE:
        brown = ((hue > HE_HUE[1]) & (hue < 30)).mean()
        kind = "brown (DAB)" if brown > 0.5 else "neither pink nor purple"
        return f"only {he:.0%} of the stained pixels are H&E pink/purple, most are {kind}: looks like IHC, not H&E"
    return None
