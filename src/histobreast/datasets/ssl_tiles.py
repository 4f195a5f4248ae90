"""Unlabelled tiles for self-supervised pre-training, each seen as two H&E-augmented views.

:class:`SSLTileDataset` cuts random tiles of a physical size (``tile_microns`` µm on a side, at
``tile_size`` px) out of records, using each record's ``microns_per_pixel``; labels are ignored.
Item ``i`` is ``(views (2, 3, s, s), 0.0)``: the engine's default collate stacks them into the
``(B, 2, 3, s, s)`` batches :class:`histobreast.models.ssl.SSLModel` takes. With ``local_views``
(DINO's multi-crop) item ``i`` is ``({"global": (2, 3, s, s), "local": (L, 3, l, l)}, 0.0)``: ``L``
smaller crops of a smaller part of the tile (``local_crop_scale`` of its area), same augmentation.

:func:`he_view_transform` is one view's torchvision transform, built for H&E rather than natural
images: random resized crop, rotations by 90° (lightly's ``RandomRotate``) and flips (tissue has no
up), :class:`HEDJitter` stain jitter, small brightness/contrast changes, lightly's Gaussian blur;
no hue or saturation jitter, which turns H&E into colours no H&E slide has. Every random draw uses
numpy's and torch's global generators, which the engine's loader seeds per ``(seed, epoch, index)``,
so a run's views, hence its weights after a resume, are reproducible.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from PIL import Image
from skimage.color import hed2rgb, rgb2hed
from torch import Tensor
from torchvision import transforms as T

from histobreast.config import Problems
from histobreast.data.records import ImageRecord
from histobreast.datasets.images import ImageDataset
from histobreast.errors import ConfigError
from histobreast.preprocess.transforms import IMAGENET_MEAN, IMAGENET_STD

try:  # the optional extra histobreast[pretrain]
    from lightly.transforms import GaussianBlur, RandomRotate
    from lightly.transforms.multi_view_transform import MultiViewTransform
except ImportError as err:  # pragma: no cover - lightly is in requirements.lock
    raise ConfigError("histobreast pretrain needs lightly: pip install 'histobreast[pretrain]'") from err

# The dataset's one class: records keep their labels, which pre-training never reads.
_UNLABELLED = ["tissue"]


@dataclass
class HEAugmentConfig:
    """One view's augmentation (``pretrain.augment``).

    ``hed_scale``/``hed_shift``: per-channel factor ``U(1-s, 1+s)`` and offset ``U(-b, b)`` in HED
    space (Tellez et al. 2019's "HED-light" uses 0.05 for both). ``crop_scale``: the area range of
    the random resized crop. ``brightness``/``contrast``: torchvision ColorJitter factors, small.
    """

    crop_scale: tuple[float, float] = (0.5, 1.0)
    rotate90: bool = True
    flips: bool = True
    hed_scale: float = 0.05
    hed_shift: float = 0.05
    brightness: float = 0.1
    contrast: float = 0.1
    blur_probability: float = 0.5
    blur_sigmas: tuple[float, float] = (0.1, 1.0)  # px at the tile's scale: slight focus changes

    def problems(self) -> Problems:
        low, high = self.crop_scale
        if not 0.0 < low <= high <= 1.0:
            yield "crop_scale", f"must be 0 < low <= high <= 1, got {list(self.crop_scale)}"
        for name in ("hed_scale", "hed_shift", "brightness", "contrast"):
            if not 0.0 <= getattr(self, name) < 1.0:
                yield name, f"must be in [0, 1), got {getattr(self, name)}"
        if not 0.0 <= self.blur_probability <= 1.0:
            yield "blur_probability", f"must be in [0, 1], got {self.blur_probability}"
        if not 0.0 < self.blur_sigmas[0] <= self.blur_sigmas[1]:
            yield "blur_sigmas", f"must be 0 < low <= high, got {list(self.blur_sigmas)}"


class HEDJitter:
    """Stain jitter: scale and shift each of the haematoxylin, eosin and DAB channels (PIL in, PIL out)."""

    def __init__(self, scale: float = 0.05, shift: float = 0.05) -> None:
        self.scale = scale
        self.shift = shift

    def __call__(self, image: Image.Image) -> Image.Image:
        if self.scale == 0 and self.shift == 0:
            return image
        alpha = np.random.uniform(1.0 - self.scale, 1.0 + self.scale, size=3)
        beta = np.random.uniform(-self.shift, self.shift, size=3)
        hed = rgb2hed(np.asarray(image)) * alpha + beta
        rgb = np.clip(hed2rgb(hed), 0.0, 1.0)
        return Image.fromarray((rgb * 255.0 + 0.5).astype(np.uint8))


def he_view_transform(size: int, config: HEAugmentConfig | None = None) -> Callable[[Image.Image], Tensor]:
    """One augmented view of a tile: PIL RGB in, ImageNet-normalised ``(3, size, size)`` float32 out."""
    c = config or HEAugmentConfig()
    steps: list[Any] = [T.RandomResizedCrop(size, scale=c.crop_scale, ratio=(3 / 4, 4 / 3), antialias=True)]
    if c.rotate90:  # 0, 90, 180 or 270 degrees, each with probability 1/4
        steps += [RandomRotate(prob=0.5, angle=90), RandomRotate(prob=0.5, angle=180)]
    if c.flips:
        steps.append(T.RandomHorizontalFlip())  # with the rotations: all 8 symmetries of the square
    steps.append(HEDJitter(c.hed_scale, c.hed_shift))
    if c.brightness or c.contrast:
        steps.append(T.ColorJitter(brightness=c.brightness, contrast=c.contrast))  # no hue, no saturation
    if c.blur_probability > 0:
        steps.append(GaussianBlur(prob=c.blur_probability, sigmas=c.blur_sigmas))
    steps += [T.ToTensor(), T.Normalize(IMAGENET_MEAN, IMAGENET_STD)]
    return T.Compose(steps)


class SSLTileDataset(ImageDataset):
    """``tiles_per_image`` random tiles per record and epoch, each as two augmented views ``(2, 3, s, s)``.

    A tile covers ``tile_microns`` µm on a side at ``tile_size`` px, so images of any scale give tiles
    of the same physical field. Options (``stain``, ``seed``, ``cache_bytes``, ``read_image``) are
    :class:`~histobreast.datasets.images.ImageDataset`'s.
    """

    def __init__(
        self,
        records: Sequence[ImageRecord],
        *,
        tile_microns: float,
        tile_size: int,
        tiles_per_image: int = 1,
        augment: HEAugmentConfig | None = None,
        local_views: int = 0,
        local_size: int = 48,
        local_crop_scale: tuple[float, float] = (0.05, 0.4),
        **options: Any,
    ) -> None:
        if tile_microns <= 0:
            raise ConfigError(f"tile_microns must be > 0, got {tile_microns}")
        super().__init__(
            records,
            _UNLABELLED,
            size=tile_size,
            microns_per_pixel=tile_microns / tile_size,
            crop="random",
            copies=tiles_per_image,
            require_labels=False,
            **options,
        )
        augment = augment or HEAugmentConfig()
        view = he_view_transform(tile_size, augment)
        local = he_view_transform(local_size, dataclasses.replace(augment, crop_scale=local_crop_scale))
        self.local_views = local_views
        self.views = MultiViewTransform([view, view, *[local] * local_views])

    def __getitem__(self, index: int) -> tuple[Tensor | dict[str, Tensor], Tensor]:
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} items")
        tile = self._window(self.prepared(index // self.copies), self.rng(index))
        views = self.views(Image.fromarray(np.ascontiguousarray(tile)))
        if not self.local_views:
            return torch.stack(views), torch.zeros(())
        return {"global": torch.stack(views[:2]), "local": torch.stack(views[2:])}, torch.zeros(())
