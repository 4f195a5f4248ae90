"""System B's samples in numpy: an image's key regions per view, their crop stacks, and the sample index.

Shared by the torch dataset (:class:`histobreast.datasets.key_regions.KeyRegionDataset`, which adds
caching, preloading, augmentation and tensors) and the torch-free runtime, so both cut the same
crops: KREM's densest windows (or the random-region control's draws) of each of the six views,
cropped at the model's levels and resized to ``output_size``. Samples are ordered image-major,
then view, then region rank.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from histobreast.data.records import ImageRecord
from histobreast.preprocess.krem import KeyRegion, KremParams, crop_key_region, key_regions
from histobreast.preprocess.patches import window_starts
from histobreast.preprocess.views import SIX_VIEWS, apply_view, view_box_to_raw
from histobreast.seeding import derive_seed

Selection = Literal["density", "random"]
SELECTIONS: tuple[str, ...] = ("density", "random")
Box = tuple[int, int, int, int]


def grid_boxes(parent: Box, window: int, stride: int) -> np.ndarray:
    """Every window of KREM's stride grid inside ``parent``: ``(M, 4)`` boxes ``(x, y, w, h)``."""
    px, py, pw, ph = parent
    w, h = min(window, pw), min(window, ph)
    x0, y0 = np.meshgrid(px + window_starts(pw, w, stride), py + window_starts(ph, h, stride))
    return np.stack([x0.ravel(), y0.ravel(), np.full(x0.size, w), np.full(x0.size, h)], axis=1)


def level1_candidates(size: tuple[int, int], microns_per_pixel: float, params: KremParams) -> int:
    """How many level-1 windows KREM slides over an image of ``size = (width, height)``.

    KREM returns ``min(top_k, this)`` regions per view (the count is the same for every view, since
    rotations only swap the axes).
    """
    return len(grid_boxes((0, 0, *size), *params.scaled_windows(microns_per_pixel)[0]))


def random_key_regions(
    size: tuple[int, int], microns_per_pixel: float, params: KremParams, top_k: int, rng: np.random.Generator
) -> list[KeyRegion]:
    """The random-region control: nested windows at random positions of KREM's own stride grids.

    ``min(top_k, candidates)`` distinct level-1 windows, each refined by one random window per finer
    level inside its parent; the nuclei are not counted (``counts`` are -1).
    """
    levels = params.scaled_windows(microns_per_pixel)
    first = grid_boxes((0, 0, *size), *levels[0])
    regions = []
    for i in rng.choice(len(first), size=min(top_k, len(first)), replace=False):
        chain: list[Box] = [tuple(int(v) for v in first[i])]
        for window, stride in levels[1:]:
            inner = grid_boxes(chain[-1], window, stride)
            chain.append(tuple(int(v) for v in inner[rng.integers(len(inner))]))
        regions.append(KeyRegion(boxes=tuple(chain), counts=(-1,) * len(chain)))
    return regions


def view_key_regions(
    image: np.ndarray,
    view: str,
    microns_per_pixel: float,
    params: KremParams,
    top_k: int,
    selection: Selection = "density",
    *,
    seed: int = 0,
    fingerprint: str = "",
) -> list[KeyRegion]:
    """The key regions of raw ``image`` seen in ``view``, in that view's coordinates, densest first.

    ``selection="random"`` draws them from ``(seed, the file's content fingerprint, view)`` instead.
    """
    viewed = apply_view(image, view)
    if selection == "density":
        return key_regions(viewed, microns_per_pixel, params, top_k)
    content = int.from_bytes(hashlib.sha256(fingerprint.encode()).digest()[:7], "big")
    rng = np.random.default_rng(derive_seed(seed, content, SIX_VIEWS.index(view)))
    return random_key_regions((viewed.shape[1], viewed.shape[0]), microns_per_pixel, params, top_k, rng)


def region_crops(
    image: np.ndarray, view: str, region: KeyRegion, levels: Sequence[int], output_size: int
) -> np.ndarray:
    """``(S, output_size, output_size, 3)`` uint8 crops of ``region`` (in ``view``'s coordinates) at ``levels``.

    Equal to ``crop_key_region(apply_view(image, view), region)``, but only the level-1 window is
    cut from the raw image and turned into the view (a full-image rotation costs ~10x more).
    """
    outer = region.boxes[0]
    x, y, w, h = view_box_to_raw(outer, view, (image.shape[1], image.shape[0]))
    window = apply_view(image[y : y + h, x : x + w], view)
    local = KeyRegion(
        boxes=tuple((bx - outer[0], by - outer[1], bw, bh) for bx, by, bw, bh in (region.boxes[lv] for lv in levels)),
        counts=tuple(region.counts[lv] for lv in levels),
    )
    return crop_key_region(window, local, output_size)


def sample_index(regions_per_view: np.ndarray, n_views: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[slice]]:
    """``(sample_image, sample_view, sample_region, image_slices)`` of images x views x regions,
    image-major: ``image_slices[j]`` are the samples of image ``j``."""
    rows = [(j, v, r) for j, k in enumerate(regions_per_view) for v in range(n_views) for r in range(int(k))]
    sample_image, sample_view, sample_region = np.array(rows, dtype=np.int64).reshape(-1, 3).T
    starts = np.concatenate([[0], np.cumsum(np.asarray(regions_per_view, dtype=np.int64) * n_views)])
    return sample_image, sample_view, sample_region, [slice(int(a), int(b)) for a, b in zip(starts[:-1], starts[1:])]


def class_targets(records: Sequence[ImageRecord], classes: Sequence[str]) -> np.ndarray:
    """Each record's class index, -1 where its label is not one of ``classes`` (unlabelled images)."""
    return np.array([list(classes).index(r.label) if r.label in classes else -1 for r in records], dtype=np.int64)


@dataclass
class RegionSamples:
    """Images x views x key regions, with each view's regions held in memory: what the per-view and
    six-view tables (:func:`histobreast.predictions.view_table`, :func:`~histobreast.predictions.vote_table`)
    need. ``regions_of[j][v]`` are image ``j``'s regions in view ``views[v]``; ``image_sizes`` are
    ``(width, height)``."""

    records: list[ImageRecord]
    classes: list[str]
    views: tuple[str, ...]
    image_sizes: list[tuple[int, int]]
    regions_of: list[list[list[KeyRegion]]]
    targets: np.ndarray = field(init=False)
    regions_per_view: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        self.targets = class_targets(self.records, self.classes)
        self.regions_per_view = np.array([len(views[0]) if views else 0 for views in self.regions_of], dtype=np.int64)
        self.sample_image, self.sample_view, self.sample_region, self.image_slices = sample_index(
            self.regions_per_view, len(self.views)
        )

    def __len__(self) -> int:
        return len(self.sample_image)

    def regions(self, j: int, v: int) -> list[KeyRegion]:
        """Image ``j``'s key regions in view ``views[v]``, densest first."""
        return self.regions_of[j][v]
