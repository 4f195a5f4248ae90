"""Torch datasets over records: whole images, System A's hybrid input, and single grid patches.

torchvision conventions: ``dataset[i] -> (inputs, target)`` with ``inputs`` a float tensor
``(3, H, W)`` normalised by :func:`histobreast.preprocess.transforms.to_model_input`, or, for the
hybrid model, ``{"global": (3, S, S), "patches": (P, 3, s, s)}``; ``target`` is the index of the
record's label in ``classes`` (-1 for unlabelled images when ``require_labels=False``).

- :class:`ImageDataset`: the whole image resized to ``size x size`` (System A's global branch), or
  the image brought to a physical scale (``microns_per_pixel``) and cropped (CNN baselines).
- :class:`HybridDataset`: global image + the 5x3 grid of patches (evaluating System A's hybrid).
- :class:`GridPatchDataset`: every grid patch a sample labelled with its image's label (training
  System A's local branch), optionally only ``patches_per_image`` random patches per image and epoch.

Every random choice (augmentation, colour jitter, random crop, patch subset) comes from a
generator seeded by ``(seed, epoch, index)``: a dataset is deterministic under a seed, and
:meth:`set_epoch` (which the engine's loader calls in every worker) draws new choices per epoch.
Stain normalisation runs on the full-resolution image before any resizing; the prepared (stained,
resized, not yet augmented) arrays of recently used images are kept in an in-memory LRU cache of
``cache_bytes`` (per worker), so the 15 patch samples of an image, and later epochs, decode it once.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import Any, Generic, Literal, TypeVar

import numpy as np
from torch import Tensor
from torch.utils.data import Dataset

from histobreast.data.imageio import read_rgb
from histobreast.data.records import ImageRecord
from histobreast.datasets.augmenter import Augmenter
from histobreast.errors import ConfigError, DatasetError
from histobreast.preprocess.config import AugmentConfig
from histobreast.preprocess.patches import grid_patches, hybrid_inputs, rescale_rgb, resize_rgb
from histobreast.preprocess.stain import StainNormalizer
from histobreast.preprocess.transforms import to_model_input
from histobreast.seeding import derive_seed

Prepared = TypeVar("Prepared")
Crop = Literal["random", "center", "none"]

# Bytes of prepared images kept per dataset instance (per DataLoader worker): every image of a
# CPU-sized run (BACH at 112 px: ~0.6 MB per image with its grid), ~100 paper-sized grids (2.3 MB).
DEFAULT_CACHE_BYTES = 256 * 2**20


def read_record(record: ImageRecord) -> np.ndarray:
    """The default image reader: the record's file as uint8 RGB."""
    return read_rgb(record.path)


class _RecordDataset(Dataset, Generic[Prepared]):
    """Shared machinery: label checks, reading + stain, a small LRU cache, seeded generators."""

    def __init__(
        self,
        records: Sequence[ImageRecord],
        classes: Sequence[str],
        *,
        stain: StainNormalizer | None = None,
        augment: AugmentConfig | None = None,
        seed: int = 0,
        require_labels: bool = True,
        cache_bytes: int = DEFAULT_CACHE_BYTES,
        read_image: Callable[[ImageRecord], np.ndarray] | None = None,
    ) -> None:
        self.records = list(records)
        self.classes = list(classes)
        if not self.records:
            raise DatasetError(f"{type(self).__name__}: no records (is the split or folder empty?)")
        if len(set(self.classes)) != len(self.classes) or not self.classes:
            raise DatasetError(f"{type(self).__name__}: classes must be non-empty and unique, got {self.classes}")
        index = {c: i for i, c in enumerate(self.classes)}
        self.targets: list[int] = []
        for record in self.records:
            if record.label in index:
                self.targets.append(index[record.label])
            elif require_labels:
                raise DatasetError(f"{record.path}: label {record.label!r} is not one of the classes {self.classes}")
            else:
                self.targets.append(-1)
        self.stain = stain
        self.augmenter = Augmenter(augment) if augment is not None else None
        self.seed = seed
        self.epoch = 0
        self.cache_bytes = cache_bytes
        self._cache: OrderedDict[int, Prepared] = OrderedDict()
        self._cached_bytes = 0
        self._read = read_image or read_record

    def set_epoch(self, epoch: int) -> None:
        """Draw later items' random choices for ``epoch`` (the engine's loader calls this per sample)."""
        self.epoch = epoch

    def rng(self, index: int) -> np.random.Generator:
        """The generator of item ``index`` in the current epoch: a pure function of (seed, epoch, index)."""
        return np.random.default_rng(derive_seed(self.seed, self.epoch, index))

    def read(self, record: ImageRecord) -> np.ndarray:
        """The record's uint8 RGB image, stain-normalised at full resolution when a normaliser is set."""
        image = self._read(record)
        return self.stain.normalize(image).image if self.stain is not None else image

    def prepared(self, image_index: int) -> Prepared:
        """The cached pre-augmentation arrays of image ``image_index`` (see ``_prepare``)."""
        if image_index in self._cache:
            self._cache.move_to_end(image_index)
            return self._cache[image_index]
        value = self._prepare(self.records[image_index])
        size = _nbytes(value)
        if size <= self.cache_bytes:
            self._cache[image_index] = value
            self._cached_bytes += size
            while self._cached_bytes > self.cache_bytes:
                self._cached_bytes -= _nbytes(self._cache.popitem(last=False)[1])
        return value

    def _prepare(self, record: ImageRecord) -> Prepared:
        raise NotImplementedError

    def __getstate__(self) -> dict[str, Any]:
        # DataLoader workers get their own, empty cache (not a pickled copy of the parent's).
        return {**self.__dict__, "_cache": OrderedDict(), "_cached_bytes": 0}


def _nbytes(value: np.ndarray | tuple[np.ndarray, ...]) -> int:
    return sum(a.nbytes for a in value) if isinstance(value, tuple) else value.nbytes


def _positive_size(name: str, value: int) -> int:
    if value < 1:
        raise ConfigError(f"{name} must be >= 1, got {value}")
    return int(value)


class ImageDataset(_RecordDataset[np.ndarray]):
    """Whole images: ``(3, size, size)`` tensors, or crops at a physical scale.

    With ``microns_per_pixel=None`` the image is resized to ``size x size`` whatever its shape
    (Zhu et al.'s global branch: "the whole image resized to 224"). With a target scale the image
    is first resized to that many µm per pixel (``record.microns_per_pixel / microns_per_pixel``),
    then ``crop`` takes a random (training) or centred ``size x size`` window, or ``"none"`` keeps
    the whole rescaled image (for fully convolutional models; sizes then follow the images). An
    image smaller than ``size`` is padded by reflection. ``copies`` repeats every record that many
    times per epoch, each copy augmented independently (paper A: 8 augmented images per image).
    """

    def __init__(
        self,
        records: Sequence[ImageRecord],
        classes: Sequence[str],
        *,
        size: int = 224,
        microns_per_pixel: float | None = None,
        crop: Crop = "center",
        copies: int = 1,
        **options: Any,
    ) -> None:
        super().__init__(records, classes, **options)
        self.size = _positive_size("size", size)
        if microns_per_pixel is not None and microns_per_pixel <= 0:
            raise ConfigError(f"microns_per_pixel must be > 0, got {microns_per_pixel}")
        if crop not in ("random", "center", "none"):
            raise ConfigError(f"crop must be random, center or none, got {crop!r}")
        self.microns_per_pixel = microns_per_pixel
        self.crop = crop
        self.copies = _positive_size("copies", copies)

    def __len__(self) -> int:
        return len(self.records) * self.copies

    def _prepare(self, record: ImageRecord) -> np.ndarray:
        image = self.read(record)
        if self.microns_per_pixel is None:
            return resize_rgb(image, (self.size, self.size))
        return rescale_rgb(image, record.microns_per_pixel / self.microns_per_pixel)

    def _window(self, image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        if self.microns_per_pixel is None or self.crop == "none":
            return image
        image = _pad_to(image, self.size)
        height, width = image.shape[:2]
        if self.crop == "random":
            y, x = int(rng.integers(0, height - self.size + 1)), int(rng.integers(0, width - self.size + 1))
        else:
            y, x = (height - self.size) // 2, (width - self.size) // 2
        return image[y : y + self.size, x : x + self.size]

    def __getitem__(self, index: int) -> tuple[Tensor, int]:
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} items")
        image_index = index // self.copies
        rng = self.rng(index)
        image = self._window(self.prepared(image_index), rng)
        if self.augmenter is not None:
            image = self.augmenter.apply(image, self.augmenter.draw(rng))
        return to_model_input(image), self.targets[image_index]


def _pad_to(image: np.ndarray, size: int) -> np.ndarray:
    """Reflect-pad an image so both sides are at least ``size``."""
    pad_y, pad_x = max(0, size - image.shape[0]), max(0, size - image.shape[1])
    if not pad_y and not pad_x:
        return image
    mode = "reflect" if min(image.shape[:2]) > 1 else "edge"
    return np.pad(image, ((pad_y // 2, pad_y - pad_y // 2), (pad_x // 2, pad_x - pad_x // 2), (0, 0)), mode=mode)


class HybridDataset(_RecordDataset[tuple[np.ndarray, np.ndarray]]):
    """System A's hybrid input: ``{"global": (3, S, S), "patches": (P, 3, s, s)}``.

    ``global`` is the whole image resized to ``size`` (global branch); ``patches`` are the
    ``grid = (columns, rows)`` patches of ``patch_size`` cut from the image resized to
    ``(columns * patch_size, rows * patch_size)`` (paper A: 5x3 of 224 from 1120x672), row-major.
    With ``augment`` one drawn augmentation is applied to the global image and to every patch.
    """

    def __init__(
        self,
        records: Sequence[ImageRecord],
        classes: Sequence[str],
        *,
        size: int = 224,
        grid: tuple[int, int] = (5, 3),
        patch_size: int = 224,
        **options: Any,
    ) -> None:
        super().__init__(records, classes, **options)
        self.size = _positive_size("size", size)
        self.grid = (_positive_size("grid columns", grid[0]), _positive_size("grid rows", grid[1]))
        self.patch_size = _positive_size("patch_size", patch_size)

    def __len__(self) -> int:
        return len(self.records)

    def _prepare(self, record: ImageRecord) -> tuple[np.ndarray, np.ndarray]:
        return hybrid_inputs(self.read(record), self.size, self.grid, self.patch_size)

    def __getitem__(self, index: int) -> tuple[dict[str, Tensor], int]:
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} items")
        global_image, patches = self.prepared(index)
        if self.augmenter is not None:
            drawn = self.augmenter.draw(self.rng(index))
            global_image, patches = self.augmenter.apply(global_image, drawn), self.augmenter.apply(patches, drawn)
        return {"global": to_model_input(global_image), "patches": to_model_input(patches)}, self.targets[index]


class GridPatchDataset(_RecordDataset[np.ndarray]):
    """Each grid patch of each image is one sample, labelled with its image's label (local branch).

    Item ``i`` is patch ``i % k`` of image ``i // k`` with ``k = patches_per_image``. With
    ``patches_per_image=None`` every one of the ``P = columns x rows`` patches is used in order;
    with ``k < P``, slot ``j`` of an image takes the ``j``-th patch of a random permutation of its
    ``P`` patches seeded by ``(seed, epoch, image)``: a different random subset of ``k`` distinct
    patches per image and epoch (a per-epoch cap that keeps CPU schedules short). ``copies``
    repeats the whole set, each copy augmented independently.
    """

    def __init__(
        self,
        records: Sequence[ImageRecord],
        classes: Sequence[str],
        *,
        grid: tuple[int, int] = (5, 3),
        patch_size: int = 224,
        patches_per_image: int | None = None,
        copies: int = 1,
        **options: Any,
    ) -> None:
        super().__init__(records, classes, **options)
        self.grid = (_positive_size("grid columns", grid[0]), _positive_size("grid rows", grid[1]))
        self.patch_size = _positive_size("patch_size", patch_size)
        total = self.grid[0] * self.grid[1]
        if patches_per_image is not None and not 1 <= patches_per_image <= total:
            raise ConfigError(
                f"patches_per_image must be between 1 and the grid's {total} patches, got {patches_per_image}"
            )
        self.patches_total = total
        self.patches_per_image = patches_per_image or total
        self.copies = _positive_size("copies", copies)

    def __len__(self) -> int:
        return len(self.records) * self.patches_per_image * self.copies

    def _prepare(self, record: ImageRecord) -> np.ndarray:
        return grid_patches(self.read(record), self.grid, self.patch_size)

    def patch_index(self, index: int) -> tuple[int, int]:
        """``(image index, patch index in the grid)`` of item ``index`` in the current epoch."""
        per_copy = len(self.records) * self.patches_per_image
        copy, within = divmod(index, per_copy)
        image_index, slot = divmod(within, self.patches_per_image)
        if self.patches_per_image == self.patches_total:
            return image_index, slot
        order = np.random.default_rng(derive_seed(self.seed, self.epoch, copy, image_index, 1)).permutation(
            self.patches_total
        )
        return image_index, int(order[slot])

    def __getitem__(self, index: int) -> tuple[Tensor, int]:
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} items")
        image_index, patch = self.patch_index(index)
        image = self.prepared(image_index)[patch]
        if self.augmenter is not None:
            image = self.augmenter.apply(image, self.augmenter.draw(self.rng(index)))
        return to_model_input(image), self.targets[image_index]
