"""System A's training augmentation driven by an ``AugmentConfig``, shared by every torch dataset.

One draw (:meth:`Augmenter.draw`) is an affine warp from
:func:`histobreast.preprocess.augment.sample_augmentation` plus colour-jitter factors; applying the
same draw to several arrays (System B's crops of one sample) keeps one tissue location and one colour.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import numpy as np

from histobreast.preprocess.augment import AugmentParams, sample_augmentation
from histobreast.preprocess.config import AugmentConfig


class Augmenter:
    """System A's training augmentation from an ``AugmentConfig``: one affine warp, then colour jitter.

    Rotation, shear and flips are drawn by :func:`histobreast.preprocess.augment.sample_augmentation`
    (reflected borders, one interpolation); each flip is kept only if the config enables it.
    ``color_jitter = s`` scales brightness, contrast and saturation by factors uniform in
    ``[1 - s, 1 + s]`` (torchvision's ColorJitter convention), applied in that order.
    """

    def __init__(self, config: AugmentConfig) -> None:
        self.config = config
        self.params = AugmentParams(
            max_rotation=min(config.rotation, 180.0),
            max_shear=config.shear,
            flip_probability=0.5 if (config.hflip or config.vflip) else 0.0,
        )

    @property
    def geometric(self) -> bool:
        """Whether any rotation, shear or flip is drawn."""
        c = self.config
        return c.rotation > 0 or c.shear > 0 or c.hflip or c.vflip

    def draw(self, rng: np.random.Generator) -> tuple[Any, np.ndarray | None]:
        """One drawn (warp, jitter factors) pair; apply it to several arrays with :meth:`apply`."""
        warp = None
        if self.geometric:
            warp = sample_augmentation(rng, self.params)
            warp = replace(
                warp,
                flip_horizontal=warp.flip_horizontal and self.config.hflip,
                flip_vertical=warp.flip_vertical and self.config.vflip,
            )
        s = self.config.color_jitter
        jitter = rng.uniform(1.0 - s, 1.0 + s, size=3) if s > 0 else None
        return warp, jitter

    @staticmethod
    def apply(image: np.ndarray, drawn: tuple[Any, np.ndarray | None]) -> np.ndarray:
        """Apply a drawn augmentation to ``(H, W, 3)`` uint8 (or a stack ``(N, H, W, 3)``)."""
        warp, jitter = drawn
        if image.ndim == 4:
            return np.stack([Augmenter.apply(i, drawn) for i in image])
        out = warp.apply(image) if warp is not None else image
        if jitter is not None:
            out = color_jitter(out, *jitter)
        return out


def color_jitter(image: np.ndarray, brightness: float, contrast: float, saturation: float) -> np.ndarray:
    """Scale brightness, contrast (about the mean grey) and saturation (about the pixel's grey) of uint8 RGB."""
    x = image.astype(np.float32) * brightness
    grey = x @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
    x = (x - grey.mean()) * contrast + grey.mean()
    grey = (x @ np.array([0.299, 0.587, 0.114], dtype=np.float32))[..., None]
    x = (x - grey) * saturation + grey
    return np.clip(x + 0.5, 0, 255).astype(np.uint8)
