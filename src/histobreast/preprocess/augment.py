"""System A's training augmentation (Zhu et al. 2019): random rotation, flips and shear.

The paper rotates by random angles (not multiples of 90°), flips, and shears "in different
directions", making 8 augmented images per training image. Here:

- one affine warp does rotation (uniform in ±``max_rotation``, i.e. any angle by default), shear
  (uniform in ±``max_shear`` degrees along x and along y, independently) and the flips, so pixels
  are interpolated once;
- corners are never black: pixels mapped from outside the image are filled by reflecting the image
  at its border (OpenCV ``BORDER_REFLECT_101``). We reflect rather than crop the largest inscribed
  rectangle and resize back, because cropping zooms in by up to 1.4x-2x (at 45°, more for
  non-square images), which changes the image's µm/px — the scale every model here relies on —
  while reflection keeps scale and fills the corners with mirrored tissue, which has no
  orientation in histology. (torchvision.transforms.v2's RandomRotation/RandomAffine only fill with
  a constant, the black corners we must avoid, hence OpenCV for the warp.)
- randomness is explicit: :func:`sample_augmentation` takes a ``numpy.random.Generator``. The
  torch datasets draw one per item from ``(seed, epoch, index)``
  (:class:`histobreast.datasets.augmenter.Augmenter`); their ``copies`` option
  (``preprocess.augment.copies``, 8 in the paper) repeats each training image with fresh draws, made
  on the fly. Labels are never touched.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

from histobreast.errors import ConfigError


@dataclass(frozen=True)
class AugmentParams:
    """Ranges of System A's augmentation (the paper gives none; these are documented defaults).

    ``max_rotation`` (degrees): the angle is uniform in ``[-max_rotation, max_rotation]`` (180 =
    any angle). ``max_shear`` (degrees): x- and y-shear angles are each uniform in ``±max_shear``
    (10° changes a 224 px side by at most ~40 px). ``flip_probability``: chance of each of the
    horizontal and the vertical flip.
    """

    max_rotation: float = 180.0
    max_shear: float = 10.0
    flip_probability: float = 0.5

    def __post_init__(self) -> None:
        if not 0.0 <= self.max_rotation <= 180.0:
            raise ConfigError(f"AugmentParams.max_rotation must be in [0, 180] degrees, got {self.max_rotation}")
        if not 0.0 <= self.max_shear < 45.0:
            raise ConfigError(f"AugmentParams.max_shear must be in [0, 45) degrees, got {self.max_shear}")
        if not 0.0 <= self.flip_probability <= 1.0:
            raise ConfigError(f"AugmentParams.flip_probability must be in [0, 1], got {self.flip_probability}")


@dataclass(frozen=True)
class Augmentation:
    """One drawn augmentation: rotation and shear angles in degrees (counter-clockwise), and flips."""

    angle: float = 0.0
    shear_x: float = 0.0
    shear_y: float = 0.0
    flip_horizontal: bool = False
    flip_vertical: bool = False

    def matrix(self, width: int, height: int) -> np.ndarray:
        """The 2x3 forward affine map (input -> output pixel coordinates) about the image centre."""
        cx, cy = (width - 1) / 2.0, (height - 1) / 2.0
        flip = np.diag([-1.0 if self.flip_horizontal else 1.0, -1.0 if self.flip_vertical else 1.0])
        shear = np.array([[1.0, math.tan(math.radians(self.shear_x))], [math.tan(math.radians(self.shear_y)), 1.0]])
        a = math.radians(self.angle)  # counter-clockwise on screen, where y points down
        rotation = np.array([[math.cos(a), math.sin(a)], [-math.sin(a), math.cos(a)]])
        linear = rotation @ shear @ flip
        centre = np.array([cx, cy])
        return np.hstack([linear, (centre - linear @ centre)[:, None]])

    def apply(self, image: np.ndarray) -> np.ndarray:
        """Warp ``image`` (H, W, C) uint8, filling uncovered pixels by reflection; same shape out."""
        height, width = image.shape[:2]
        return cv2.warpAffine(
            np.ascontiguousarray(image),
            self.matrix(width, height),
            (width, height),
            flags=cv2.INTER_LINEAR,
            borderMode=cv2.BORDER_REFLECT_101,
        )


def sample_augmentation(rng: np.random.Generator, params: AugmentParams = AugmentParams()) -> Augmentation:
    """Draw one :class:`Augmentation` from ``rng`` within ``params``' ranges."""
    angle, shear_x, shear_y = rng.uniform(-1.0, 1.0, size=3) * [params.max_rotation, params.max_shear, params.max_shear]
    flip_h, flip_v = rng.random(2) < params.flip_probability
    return Augmentation(float(angle), float(shear_x), float(shear_y), bool(flip_h), bool(flip_v))
