"""Patch datasets of the Spanhol et al. 2016 baseline: small square patches cut from whole images.

Spanhol et al. (IJCNN 2016) trained their patch CNN on 32x32 or 64x64 patches of down-scaled
BreaKHis images, extracted either by a sliding window with 50 % overlap or at random positions, and
classified an image by combining the probabilities of its patches. :class:`SpanholPatchDataset`
is the training set (every patch is a sample labelled with its image's label);
:func:`image_patch_batches` cuts the evaluation patches of one image.

Images are small after down-scaling (a 1024x768 BACH copy at scale 0.5 is 512x384, 0.6 MB), so the
training set keeps its images in memory once read and cuts patches on demand: reading a JPEG per
patch would cost a thousand times more than the patch itself. Random positions are drawn once per
image from ``derive_seed(seed, image index)``, so the patch set is a fixed, reproducible sample,
as Spanhol et al.'s pre-extracted patch sets were.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np
import torch
from torch.utils.data import Dataset

from histobreast.data.records import ImageRecord
from histobreast.errors import ConfigError, DatasetError
from histobreast.preprocess.patches import crop_patches, load_scaled, sliding_positions
from histobreast.preprocess.stain import StainNormalizer
from histobreast.preprocess.transforms import to_model_input
from histobreast.seeding import derive_seed

Extraction = Literal["sliding", "random"]
EXTRACTIONS: tuple[str, ...] = ("sliding", "random")
# the numpy parts (scaled images, sliding windows) live in preprocess.patches, shared with the runtime
__all__ = ["SpanholPatchDataset", "image_patch_batches", "load_scaled", "random_positions", "sliding_positions"]


def random_positions(height: int, width: int, patch_size: int, count: int, rng: np.random.Generator) -> np.ndarray:
    """``(count, 2)`` uniformly random top-left ``(y, x)`` of ``patch_size`` squares inside an image."""
    if patch_size > min(height, width):
        raise DatasetError(f"patch size {patch_size} does not fit in a {width}x{height} image (after scaling)")
    if count < 1:
        raise ConfigError(f"spanhol.random_patches must be >= 1, got {count}")
    ys = rng.integers(0, height - patch_size + 1, size=count)
    xs = rng.integers(0, width - patch_size + 1, size=count)
    return np.stack([ys, xs], axis=1)


def _crop(image: np.ndarray, position: np.ndarray, patch_size: int) -> np.ndarray:
    y, x = int(position[0]), int(position[1])
    return image[y : y + patch_size, x : x + patch_size]


class SpanholPatchDataset(Dataset):
    """Every training patch of ``records`` as one sample: ``dataset[i] -> ((3, s, s) tensor, label)``.

    ``extraction="sliding"`` takes all windows with fractional ``overlap`` (Spanhol: 50 %);
    ``"random"`` takes ``random_patches`` seeded random windows per image. Images are read (and
    stain-normalised by ``stain``) once, scaled by ``scale``, and kept in memory.
    """

    def __init__(
        self,
        records: Sequence[ImageRecord],
        classes: Sequence[str],
        *,
        patch_size: int,
        extraction: Extraction = "sliding",
        overlap: float = 0.5,
        random_patches: int = 100,
        scale: float = 1.0,
        stain: StainNormalizer | None = None,
        seed: int = 0,
    ) -> None:
        if extraction not in EXTRACTIONS:
            raise ConfigError(f"spanhol extraction must be one of {EXTRACTIONS}, got {extraction!r}")
        index = {name: i for i, name in enumerate(classes)}
        self.records = list(records)
        for record in self.records:
            if record.label not in index:
                raise DatasetError(f"{record.path}: label {record.label!r} is not one of the classes {list(classes)}")
        self.patch_size = patch_size
        self.targets = [index[r.label] for r in self.records]
        self.images = [load_scaled(r, scale, stain) for r in self.records]
        positions = []
        for number, image in enumerate(self.images):
            height, width = image.shape[:2]
            if extraction == "sliding":
                positions.append(sliding_positions(height, width, patch_size, overlap))
            else:
                rng = np.random.default_rng(derive_seed(seed, number))
                positions.append(random_positions(height, width, patch_size, random_patches, rng))
        self.image_of = np.concatenate([np.full(len(p), n) for n, p in enumerate(positions)])
        self.positions = np.concatenate(positions)

    def __len__(self) -> int:
        return len(self.positions)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        number = int(self.image_of[index])
        patch = _crop(self.images[number], self.positions[index], self.patch_size)
        return to_model_input(patch), self.targets[number]


def image_patch_batches(
    image: np.ndarray, patch_size: int, overlap: float = 0.5, batch_size: int = 512
) -> list[torch.Tensor]:
    """The sliding-window evaluation patches of one (already scaled) image as model-input batches
    ``(n, 3, s, s)``, at most ``batch_size`` patches each."""
    positions = sliding_positions(image.shape[0], image.shape[1], patch_size, overlap)
    return [
        to_model_input(crop_patches(image, positions[start : start + batch_size], patch_size))
        for start in range(0, len(positions), batch_size)
    ]
