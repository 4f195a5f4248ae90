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
- randomness is explicit: :func:`sample_augmentation` takes a ``numpy.random.Generator``, and copy
  ``k`` of an image is a pure function of ``(seed, image key, k, epoch)`` (:func:`copy_rng`), so
  copies written to disk (:func:`materialise_copies`) and copies made on the fly
  (:class:`AugmentedCopies`, any number of DataLoader workers) are the same images. Labels are
  never touched.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from PIL import Image
from torch.utils.data import Dataset

from histobreast.atomic import atomic_path
from histobreast.data.imageio import read_rgb
from histobreast.data.records import ImageRecord
from histobreast.errors import ConfigError, DatasetError
from histobreast.seeding import derive_seed

# Zhu et al. 2019: "For each training sample, eight images are generated".
PAPER_COPIES = 8


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


def augment(image: np.ndarray, rng: np.random.Generator, params: AugmentParams = AugmentParams()) -> np.ndarray:
    """One random augmentation of ``image`` drawn from ``rng``."""
    return sample_augmentation(rng, params).apply(image)


def copy_rng(seed: int, key: str, copy: int, epoch: int = 0) -> np.random.Generator:
    """The generator of augmented copy ``copy`` of the image named ``key`` (order- and process-independent)."""
    key_number = int.from_bytes(hashlib.sha256(key.encode("utf-8")).digest()[:8], "big")
    return np.random.default_rng(derive_seed(seed, key_number, copy, epoch))


def augmented_copy(
    image: np.ndarray, key: str, copy: int, seed: int = 0, params: AugmentParams = AugmentParams(), epoch: int = 0
) -> np.ndarray:
    """Augmented copy ``copy`` of ``image``, a pure function of ``(seed, key, copy, epoch)``."""
    return augment(image, copy_rng(seed, key, copy, epoch), params)


class AugmentedCopies(Dataset):
    """``copies`` augmented versions of every item of ``base``, made on the fly; targets untouched.

    ``base[i]`` must return ``(image, target)`` with ``image`` an ``(H, W, 3)`` uint8 array (e.g.
    an ImageDataset without a transform). Item ``i * copies + k`` is copy ``k`` of ``base[i]``,
    keyed by ``keys[i]`` (default ``str(i)``; pass the records' ``image_id`` to get exactly the
    images :func:`materialise_copies` writes). ``transform`` runs after augmentation (e.g.
    tensor conversion). :meth:`set_epoch` draws fresh copies per epoch; epoch 0 is the paper's.
    """

    def __init__(
        self,
        base: Any,
        copies: int = PAPER_COPIES,
        seed: int = 0,
        params: AugmentParams = AugmentParams(),
        keys: Sequence[str] | None = None,
        transform: Callable[[np.ndarray], Any] | None = None,
    ) -> None:
        if copies < 1:
            raise ConfigError(f"copies must be >= 1, got {copies}")
        if keys is not None and len(keys) != len(base):
            raise ConfigError(f"{len(keys)} keys for a dataset of {len(base)} items")
        self.base, self.copies, self.seed, self.params = base, copies, seed, params
        self.keys = list(keys) if keys is not None else [str(i) for i in range(len(base))]
        self.transform = transform
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Make later items copies of epoch ``epoch`` (0: the fixed copies of the paper)."""
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.base) * self.copies

    def __getitem__(self, index: int) -> tuple[Any, Any]:
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} augmented items")
        item, copy = divmod(index, self.copies)
        image, target = self.base[item]
        out = augmented_copy(image, self.keys[item], copy, self.seed, self.params, self.epoch)
        return (self.transform(out) if self.transform is not None else out), target


def copy_path(out_dir: str | Path, record: ImageRecord, copy: int) -> Path:
    """Where :func:`materialise_copies` writes copy ``copy`` of ``record``: ``<out_dir>/<image_id>_aug<k>.png``."""
    return Path(out_dir) / f"{record.image_id}_aug{copy}.png"


def materialise_copies(
    records: Sequence[ImageRecord],
    out_dir: str | Path,
    copies: int = PAPER_COPIES,
    seed: int = 0,
    params: AugmentParams = AugmentParams(),
    read_image: Callable[[Path], np.ndarray] | None = None,
) -> list[ImageRecord]:
    """Write ``copies`` augmented PNGs per record into ``out_dir`` (atomically) and return their records.

    Each new record keeps the label, patient, magnification and scale of its source, and notes the
    source in ``extra["augmented_from"]`` / ``extra["augment_copy"]``. Run it on the training split
    only (the paper augments "after dataset splitting"). ``read_image`` defaults to
    :func:`histobreast.data.imageio.read_rgb`.
    """
    if copies < 1:
        raise ConfigError(f"copies must be >= 1, got {copies}")
    read_image = read_image or read_rgb
    seen: dict[str, Path] = {}
    for record in records:
        if seen.setdefault(record.image_id, record.path) != record.path:
            raise DatasetError(
                f"{record.path}: image id {record.image_id!r} also names {seen[record.image_id]}; "
                "augmented copies would overwrite each other"
            )
    out: list[ImageRecord] = []
    for record in records:
        image = read_image(record.path)
        for copy in range(copies):
            target = copy_path(out_dir, record, copy)
            with atomic_path(target) as tmp:
                Image.fromarray(augmented_copy(image, record.image_id, copy, seed, params)).save(tmp, format="PNG")
            extra = {**record.extra, "augmented_from": str(record.path), "augment_copy": str(copy)}
            out.append(dataclasses.replace(record, path=target, extra=extra))
    return out
