"""The ``data`` section of an experiment config: which images, which labels, which folds."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from histobreast.config import Problems
from histobreast.data.records import scale_problem


@dataclass
class DataConfig:
    """Which images and which labels: dataset kind and location, task, fold and split scheme.

    The data module interprets these values (``split`` names one of its split schemes);
    loader mechanics (workers, batch sizes) live in ``train``.
    """

    kind: Literal["auto", "breakhis", "bach", "folder", "synthetic"] = "auto"
    root: str | None = None
    magnification: int | None = None  # BreaKHis: 40, 100, 200 or 400 (x)
    fold: int | None = None  # 1-based fold number
    folds_file: str | None = None  # BreaKHis dsfoldN.txt, or a saved split file
    n_folds: int = 5
    split: str = "official"  # split scheme name, interpreted by histobreast.data.splits
    val_fraction: float = 0.2  # share of the training images held out for validation
    task: str | None = None  # e.g. "binary", "subtype", "multiclass"
    label_map: dict[str, str] = field(default_factory=dict)  # raw label -> task class
    classes: list[str] = field(default_factory=list)  # class order (empty: the reader's order)
    microns_per_pixel: float | None = None  # override the reader's physical scale

    def problems(self) -> Problems:
        if self.magnification is not None and self.magnification not in (40, 100, 200, 400):
            yield "magnification", f"must be 40, 100, 200 or 400, got {self.magnification}"
        if self.n_folds < 2:
            yield "n_folds", f"must be >= 2, got {self.n_folds}"
        if self.fold is not None and not 1 <= self.fold <= self.n_folds:
            yield "fold", f"must be between 1 and n_folds={self.n_folds}, got {self.fold}"
        if not 0.0 <= self.val_fraction < 1.0:
            yield "val_fraction", f"must be in [0, 1), got {self.val_fraction}"
        if self.microns_per_pixel is not None and scale_problem(self.microns_per_pixel):
            yield "microns_per_pixel", scale_problem(self.microns_per_pixel)
        if len(set(self.classes)) != len(self.classes):
            yield "classes", f"has duplicates: {self.classes}"
        unknown = sorted(set(self.label_map.values()) - set(self.classes)) if self.classes else []
        if unknown:
            yield "label_map", f"maps to {unknown}, which are not in data.classes {self.classes}"
