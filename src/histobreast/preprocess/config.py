"""The ``preprocess`` section of an experiment config: stain, augmentation, patch grid, key regions."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from histobreast.config import Problems
from histobreast.data.records import scale_problem
from histobreast.preprocess.krem import KremParams


@dataclass
class StainConfig:
    """Colour normalisation: Reinhard (paper A) or Macenko to one reference image."""

    method: Literal["none", "reinhard", "macenko"] = "none"
    target: str | None = None  # reference image, a saved normaliser (.json), or "train": fitted on a training image
    # Reinhard's LAB statistics over tissue pixels (ours) or every pixel (torchstain's and TIAToolbox's).
    pixels: Literal["tissue", "all"] = "tissue"

    def problems(self) -> Problems:
        if self.method != "none" and self.target is None:
            yield "target", f"stain method {self.method!r} needs a reference image or fitted normaliser file"
        if self.pixels != "tissue" and self.method != "reinhard":
            yield "pixels", f"{self.pixels!r} applies to method reinhard only, not {self.method!r}"


@dataclass
class AugmentConfig:
    """Training augmentation; paper A uses random rotation, flips and shear, 8 copies per image."""

    rotation: float = 0.0  # maximum absolute angle, degrees
    hflip: bool = False
    vflip: bool = False
    shear: float = 0.0  # maximum absolute shear, degrees
    color_jitter: float = 0.0  # brightness/contrast/saturation strength, 0 = off
    copies: int = 1  # augmented copies per training image and epoch (paper A: 8)

    @property
    def active(self) -> bool:
        """Whether any augmentation is drawn (False: the samples are the images as they are)."""
        return self.rotation > 0 or self.shear > 0 or self.hflip or self.vflip or self.color_jitter > 0

    def if_active(self) -> AugmentConfig | None:
        """This section when it changes anything, else None (datasets then do no augmentation work per item)."""
        return self if self.active else None

    def problems(self) -> Problems:
        for name in ("rotation", "shear", "color_jitter"):
            if getattr(self, name) < 0:
                yield name, f"must be >= 0, got {getattr(self, name)}"
        if self.copies < 1:
            yield "copies", f"must be >= 1, got {self.copies}"


@dataclass
class PatchConfig:
    """System A local branch: the image resized to ``grid * size`` and cut into a grid of patches."""

    grid: tuple[int, int] = (5, 3)  # columns x rows: 1120x672 -> 15 patches of 224 (paper A)
    size: int = 224
    per_image: int | None = None  # local-branch training: random patches per image and epoch (None: all)

    def problems(self) -> Problems:
        if min(self.grid) < 1 or self.size < 1:
            yield "grid", f"grid and size must be positive, got grid={self.grid}, size={self.size}"
        if self.per_image is not None and not 1 <= self.per_image <= self.grid[0] * self.grid[1]:
            yield (
                "per_image",
                f"must be between 1 and the grid's {self.grid[0] * self.grid[1]} patches, got {self.per_image}",
            )


@dataclass
class RegionConfig:
    """System B key regions (KREM) and views; ``krem`` sets fields of ``KremParams``."""

    views: list[str] = field(default_factory=lambda: ["raw", "rot90", "rot180", "rot270", "flip_x", "flip_y"])
    top_k_train: int = 12  # densest level-1 windows per view for training (paper B)
    top_k_test: int = 1  # the densest window at test time (paper B)
    krem: KremParams = field(default_factory=KremParams)  # crops resized to preprocess.input_size
    selection: Literal["density", "random"] = "density"  # random: paper B's random-region control

    def problems(self) -> Problems:
        if self.top_k_train < 1 or self.top_k_test < 1:
            yield "top_k_train", "top_k_train and top_k_test must be >= 1"
        if not self.views:
            yield "views", "needs at least one view"


@dataclass
class PreprocessConfig:
    """Pre-processing: typed sub-sections; each system reads the ones it uses (A: patches, B: regions)."""

    input_size: int = 224
    # Resample images to this physical scale and crop input_size px (None: resize the whole image
    # to input_size x input_size). Used by the image pipeline, e.g. 112 px crops at ~3.4 µm/px.
    microns_per_pixel: float | None = None
    stain: StainConfig = field(default_factory=StainConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    patches: PatchConfig = field(default_factory=PatchConfig)
    regions: RegionConfig = field(default_factory=RegionConfig)
    cache_dir: str | None = None  # on-disk cache of pre-processed crops

    @classmethod
    def derived_defaults(cls, mapping: Mapping[str, Any]) -> dict[str, Any]:
        """KREM crops are resized to ``input_size`` unless ``regions.krem.output_size`` says otherwise."""
        regions = mapping.get("regions", {})
        krem = regions.get("krem", {}) if isinstance(regions, Mapping) else None
        if not isinstance(krem, Mapping):
            return dict(mapping)  # not a mapping: the type check names it
        size = mapping.get("input_size", cls.input_size)
        return {**mapping, "regions": {**regions, "krem": {"output_size": size, **krem}}}

    def problems(self) -> Problems:
        if self.input_size < 1:
            yield "input_size", f"must be >= 1, got {self.input_size}"
        if self.regions.krem.output_size != self.input_size:
            yield (
                "regions.krem.output_size",
                f"output_size={self.regions.krem.output_size} differs from preprocess.input_size={self.input_size}; "
                "set only input_size",
            )
        if self.microns_per_pixel is not None and scale_problem(self.microns_per_pixel):
            yield "microns_per_pixel", scale_problem(self.microns_per_pixel)
