"""System B's dataset: images -> six views -> KREM key regions at three scales -> crop stacks.

Liu et al. 2022: every view of an image (raw, rot90/180/270, x-/y-flip) is searched for the
densest-nuclei windows at three nested scales. Training takes the 12 densest level-1 windows per
view (6 x 12 = 72 samples per image); testing takes the densest one (6 samples per image, whose
per-view results are combined by a majority vote). One sample is the stack of its crops,
``(S, 3, 224, 224)``, coarse to fine.

KREM's windows are computed once per (image, view) and kept in an on-disk cache
(:class:`histobreast.preprocess.cache.DiskCache`), so later epochs and runs only crop. The random-
region control of the paper (85.4% vs 93.0%) is the same pipeline with ``selection="random"``:
nested windows drawn at random positions of the same stride grids, seeded per (seed, image content,
view). :func:`histobreast.votes.view_predictions` and :func:`~histobreast.votes.image_predictions`
turn per-sample probabilities into patch-level (per view) and image-level (majority vote) tables.

``augment=`` (an :class:`~histobreast.preprocess.config.AugmentConfig`, e.g. colour jitter) changes each
training sample with one draw applied to all its crops (one tissue location, one colour), seeded by
``(seed, epoch, index)`` like the other datasets; augmented samples cannot feed feature caches.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from histobreast.data.imageio import image_size, read_rgb
from histobreast.data.records import ImageRecord
from histobreast.datasets.augmenter import Augmenter
from histobreast.errors import ConfigError, DatasetError
from histobreast.preprocess.cache import DiskCache, file_fingerprint
from histobreast.preprocess.config import AugmentConfig
from histobreast.preprocess.key_region_samples import (
    SELECTIONS,
    Selection,
    level1_candidates,
    random_key_regions,
    region_crops,
    sample_index,
    view_key_regions,
)
from histobreast.preprocess.krem import KeyRegion, KremParams
from histobreast.preprocess.stain import StainNormalizer
from histobreast.preprocess.transforms import to_model_input
from histobreast.preprocess.views import SIX_VIEWS
from histobreast.seeding import derive_seed

logger = logging.getLogger(__name__)

# Paper B: "we picked out 12 regions with the densest nuclei ... at the first selecting level" for
# training; "only picked the densest region of cell nuclei in each view" for testing.
TRAIN_TOP_K = 12
TEST_TOP_K = 1
ALL_LEVELS = (0, 1, 2)

# the numpy parts live in preprocess.key_region_samples (shared with the torch-free runtime)
__all__ = [
    "ALL_LEVELS",
    "TEST_TOP_K",
    "TRAIN_TOP_K",
    "KeyRegionDataset",
    "Selection",
    "crops_as_uint8",
    "level1_candidates",
    "random_key_regions",
]


def crops_as_uint8(crops: np.ndarray) -> Tensor:
    """``(S, H, W, 3)`` uint8 crops -> ``(S, 3, H, W)`` uint8 tensor, not normalised.

    For fast loaders: a quarter of the bytes of float32 and no float work on the host;
    :class:`~histobreast.models.msmv.MSMVPFENet` normalises uint8 input on its device.
    """
    return torch.from_numpy(np.ascontiguousarray(crops)).permute(0, 3, 1, 2).contiguous()


class KeyRegionDataset(Dataset):
    """``dataset[i] -> (crops (S, 3, H, W) float32, class index)`` over images x views x regions.

    Samples are ordered image-major (then view, then region rank), so ``image_slices[j]`` are the
    samples of ``records[j]``. ``levels`` picks the KREM scales delivered (pass ``model.scales``).
    ``stain`` normalises each whole image before KREM (its target is part of the cache key);
    ``preload`` decodes every image once into memory (needed for fast shuffled training);
    ``transform`` maps ``(S, H, W, 3)`` uint8 crops to the model input (default: ImageNet-normalised
    float32; ``uint8=True``: :func:`crops_as_uint8`, normalised by the model on its device) and,
    when it is neither, needs a ``transform_id`` for feature caches. ``unknown_labels=True`` gives
    labels outside ``classes`` the target -1 (prediction on unlabelled images) instead of an error.
    ``augment`` (an :class:`~histobreast.preprocess.config.AugmentConfig`) changes each sample with one
    draw for all its crops, seeded by ``(seed, epoch, index)`` (see :meth:`set_epoch`).
    """

    def __init__(
        self,
        records: Sequence[ImageRecord],
        classes: Sequence[str],
        *,
        top_k: int = TEST_TOP_K,
        views: Sequence[str] = SIX_VIEWS,
        levels: Sequence[int] = ALL_LEVELS,
        params: KremParams = KremParams(),
        selection: Selection = "density",
        seed: int = 0,
        cache_dir: str | Path | None = None,
        stain: StainNormalizer | None = None,
        preload: bool = False,
        uint8: bool = False,
        transform: Callable[[np.ndarray], Tensor] | None = None,
        transform_id: str | None = None,
        unknown_labels: bool = False,
        augment: AugmentConfig | None = None,
    ) -> None:
        self.records = list(records)
        self.classes = list(classes)
        self.top_k = top_k
        self.views = tuple(views)
        self.levels = tuple(int(level) for level in levels)
        self.params = params
        self.selection = selection
        self.seed = seed
        self.stain = stain
        self.unknown_labels = unknown_labels
        self.augmenter = Augmenter(augment) if augment is not None else None
        self.epoch = 0
        if transform is None:
            transform, transform_id = (crops_as_uint8, "uint8") if uint8 else (to_model_input, "imagenet_normalize")
        self.transform = transform
        self.transform_id = transform_id
        self._check_options()
        self.targets = np.array([self._class_index(r) for r in self.records], dtype=np.int64)
        self._cache = DiskCache(cache_dir) if cache_dir is not None else None
        self._fingerprints: dict[int, str] = {}
        self._regions: dict[tuple[int, int], list[KeyRegion]] = {}
        self._last_image: tuple[int, np.ndarray] | None = None
        self._images = [self._read(j) for j in range(len(self.records))] if preload else None
        self.image_sizes = [image_size(r.path) for r in self.records]  # (width, height), from the headers
        self.regions_per_view = np.array(
            [self._expected_regions(record, size) for record, size in zip(self.records, self.image_sizes)],
            dtype=np.int64,
        )
        self.sample_image, self.sample_view, self.sample_region, self.image_slices = sample_index(
            self.regions_per_view, len(self.views)
        )

    def _check_options(self) -> None:
        problems = []
        if self.top_k < 1:
            problems.append(f"top_k must be >= 1, got {self.top_k}")
        if not self.views or any(v not in SIX_VIEWS for v in self.views):
            problems.append(f"views must be a non-empty subset of {list(SIX_VIEWS)}, got {list(self.views)}")
        n_levels = len(self.params.windows)
        in_range = all(0 <= lv < n_levels for lv in self.levels)
        if not self.levels or list(self.levels) != sorted(set(self.levels)) or not in_range:
            problems.append(
                f"levels must be distinct KREM levels in 0..{n_levels - 1}, coarse first; got {list(self.levels)}"
            )
        if self.selection not in SELECTIONS:
            problems.append(f"selection must be 'density' or 'random', got {self.selection!r}")
        if self.transform_id is None:
            problems.append("a custom transform needs a transform_id (it names the inputs in feature caches)")
        if problems:
            raise ConfigError("KeyRegionDataset: " + "; ".join(problems))

    def _class_index(self, record: ImageRecord) -> int:
        if record.label not in self.classes:
            if self.unknown_labels:
                return -1
            raise DatasetError(f"{record.path}: label {record.label!r} is not one of the classes {self.classes}")
        return self.classes.index(record.label)

    def _expected_regions(self, record: ImageRecord, size: tuple[int, int]) -> int:
        candidates = level1_candidates(size, record.microns_per_pixel, self.params)
        if candidates < self.top_k:
            logger.warning(
                "%s: only %d level-1 windows fit, fewer than top_k=%d; using %d regions per view",
                record.path,
                candidates,
                self.top_k,
                candidates,
            )
        return min(self.top_k, candidates)

    def __len__(self) -> int:
        return len(self.sample_image)

    def set_epoch(self, epoch: int) -> None:
        """Draw later samples' augmentation for ``epoch`` (the engine's loader calls this)."""
        self.epoch = epoch

    def __getitem__(self, index: int) -> tuple[Tensor, int]:
        j, v, r = int(self.sample_image[index]), int(self.sample_view[index]), int(self.sample_region[index])
        crops = self.crops(j, v, self.regions(j, v)[r])
        if self.augmenter is not None:
            rng = np.random.default_rng(derive_seed(self.seed, self.epoch, index))
            crops = self.augmenter.apply(crops, self.augmenter.draw(rng))
        return self.transform(crops), int(self.targets[j])

    def crops(self, j: int, v: int, region: KeyRegion) -> np.ndarray:
        """``(S, size, size, 3)`` uint8 crops of ``region`` (in view ``v``'s coordinates) at ``levels``
        (:func:`~histobreast.preprocess.key_region_samples.region_crops`)."""
        return region_crops(self.image(j), self.views[v], region, self.levels, self.params.output_size)

    # -- images, views and regions -------------------------------------------------------------

    def _read(self, j: int) -> np.ndarray:
        image = read_rgb(self.records[j].path)
        return self.stain(image) if self.stain is not None else image

    def image(self, j: int) -> np.ndarray:
        """The (stain-normalised) RGB image of ``records[j]``; the last one read is kept in memory."""
        if self._images is not None:
            return self._images[j]
        if self._last_image is None or self._last_image[0] != j:
            self._last_image = (j, self._read(j))
        return self._last_image[1]

    def fingerprint(self, j: int) -> str:
        """Content hash of ``records[j]``'s file (cached per dataset)."""
        if j not in self._fingerprints:
            self._fingerprints[j] = file_fingerprint(self.records[j].path)
        return self._fingerprints[j]

    def region_key(self, j: int, v: int) -> dict[str, Any]:
        """What determines the windows of ``records[j]`` under view ``v`` (the KREM cache key)."""
        key: dict[str, Any] = {
            "stage": f"key_regions/{self.selection}",
            "file": self.fingerprint(j),
            "view": self.views[v],
            "microns_per_pixel": self.records[j].microns_per_pixel,
            "params": self.params.to_dict(),
            "top_k": self.top_k,
            "stain": self.stain.to_dict() if self.stain is not None else None,
        }
        if self.selection == "random":
            key["seed"] = self.seed
        return key

    def regions(self, j: int, v: int) -> list[KeyRegion]:
        """The key regions of ``records[j]`` under view ``v``, densest first (computed once, then cached)."""
        if (j, v) not in self._regions:
            key = self.region_key(j, v)
            stored = (
                self._cache.get_or_compute(key, lambda: self._compute_regions(j, v))
                if self._cache
                else self._compute_regions(j, v)
            )
            regions = [
                KeyRegion(
                    boxes=tuple(tuple(int(c) for c in box) for box in boxes), counts=tuple(int(c) for c in counts)
                )
                for boxes, counts in zip(stored["boxes"], stored["counts"])
            ]
            if len(regions) != self.regions_per_view[j]:
                raise DatasetError(
                    f"{self.records[j].path}: view {self.views[v]} gave {len(regions)} key regions, "
                    f"expected {self.regions_per_view[j]} (image size changed since indexing?)"
                )
            self._regions[(j, v)] = regions
        return self._regions[(j, v)]

    def _compute_regions(self, j: int, v: int) -> dict[str, np.ndarray]:
        regions = view_key_regions(
            self.image(j),
            self.views[v],
            self.records[j].microns_per_pixel,
            self.params,
            self.top_k,
            self.selection,
            seed=self.seed,
            fingerprint=self.fingerprint(j) if self.selection == "random" else "",
        )
        return {
            "boxes": np.array([r.boxes for r in regions], dtype=np.int64),
            "counts": np.array([r.counts for r in regions], dtype=np.int64),
        }

    def prepare(self, progress: Callable[[int, int], None] | None = None) -> None:
        """Compute (or load from the cache) every image's regions now, reading each image once;
        ``progress(done, total)`` is called after each image."""
        for j in range(len(self.records)):
            for v in range(len(self.views)):
                self.regions(j, v)
            if progress is not None:
                progress(j + 1, len(self.records))

    def input_key(self, j: int) -> dict[str, Any]:
        """What determines every sample tensor of ``records[j]`` (the key of feature caches)."""
        if self.augmenter is not None:
            raise ConfigError(
                "KeyRegionDataset: augmented samples change every epoch, so their features "
                "cannot be cached; encode a dataset without augment="
            )
        return {
            "regions": [self.region_key(j, v) for v in range(len(self.views))],
            "levels": list(self.levels),
            "transform": self.transform_id,
        }
