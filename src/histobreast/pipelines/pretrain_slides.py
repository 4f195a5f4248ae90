"""Whole slides as ``histobreast pretrain``'s images: every tissue tile, cut at the pre-training scale.

``data.root`` names the slides: one slide file, a folder of slides (by suffix: ``.svs``, ``.ndpi``,
``.mrxs``...; a folder of ``.tif`` slides needs ``pretrain.source: slides``, since ``.tif`` is also
an image format), or a ``.txt`` list with one slide path a line (relative to the list; ``#``
comments). Each slide's tissue mask (:func:`histobreast.slides.tissue.detect_tissue`) and its grid
of ``tile_microns`` µm tiles (:func:`histobreast.slides.tiling.tile_grid`, kept at
``pretrain.min_tissue``) give one record per tile: the slide's path, the slide's stem as patient,
the tile's level-0 box in ``extra["box"]``. :func:`read_slide_tile` reads a tile for the dataset,
one open slide per process. Slides have no labels and no folds: they are a pool.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from histobreast.data.records import ImageRecord
from histobreast.errors import ConfigError, DatasetError
from histobreast.slides.reader import Slide, open_slide
from histobreast.slides.tiling import tile_grid
from histobreast.slides.tissue import detect_tissue, stain_problem

log = logging.getLogger(__name__)

#: Suffixes only whole-slide formats use (a ``.tif`` may be a slide or an image: ``pretrain.source: slides``).
SLIDE_ONLY_SUFFIXES = frozenset({".svs", ".ndpi", ".mrxs", ".scn", ".vms", ".vmu", ".bif", ".svslide", ".qptiff"})
TIFF_SUFFIXES = frozenset({".tif", ".tiff"})
LIST_SUFFIX = ".txt"
SLIDE_SOURCE = "slide"  # the ``source`` of a slide tile's record
THUMBNAIL_SIZE = 2048  # longer side of the thumbnail the tissue mask is found on

_OPEN: dict[tuple[Path, float | None], Slide] = {}  # this process's open slides (DataLoader workers: their own)


def slide_paths(root: str | Path, source: str = "auto") -> list[Path] | None:
    """The slides ``root`` names, or None when it is an image folder or dataset (``source``: auto, images, slides)."""
    root = Path(root)
    if source == "images":
        return None
    if root.is_file() and root.suffix.lower() == LIST_SUFFIX:
        return _listed(root)
    if root.is_file():
        return [root]  # a single image is no dataset: a single file is a slide
    if not root.is_dir():
        raise DatasetError(f"{root}: no such file or folder")
    suffixes = SLIDE_ONLY_SUFFIXES | (TIFF_SUFFIXES if source == "slides" else frozenset())
    found = sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in suffixes)
    if source == "slides" and not found:
        raise DatasetError(f"{root}: pretrain.source is slides, but no slide files were found")
    return found or None


def _listed(path: Path) -> list[Path]:
    slides = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        entry = line.split("#", 1)[0].strip()
        if not entry:
            continue
        slide = (path.parent / entry).resolve()
        if not slide.is_file():
            raise DatasetError(f"{path}, line {number}: slide {entry} not found")
        slides.append(slide)
    if not slides:
        raise DatasetError(f"{path}: the list names no slides")
    return slides


def slide_tile_records(
    slides: list[Path], tile_microns: float, tile_size: int, *, min_tissue: float, mpp: float | None = None
) -> list[ImageRecord]:
    """One record per tissue tile of every slide (read at ``tile_microns / tile_size`` µm/px).

    ``mpp``: the µm/px of slides whose file has no scale (``data.microns_per_pixel``).
    """
    records = []
    for path in slides:
        with open_slide(path, mpp) as slide:
            scale = slide.require_scale()
            thumbnail, downsample = slide.thumbnail(THUMBNAIL_SIZE)
            problem = stain_problem(thumbnail)
            if problem:
                log.warning("%s: %s", path, problem)
            mask = detect_tissue(thumbnail, downsample, scale)
            tiles = tile_grid(slide.dimensions, scale, (tile_microns, tile_microns), mask, min_tissue=min_tissue)
        if not tiles:
            raise DatasetError(
                f"{path}: no tile of {tile_microns:g} µm is {min_tissue:.0%} tissue (pretrain.min_tissue)"
            )
        log.info("%s: %d tissue tiles of %g µm", path.name, len(tiles), tile_microns)
        given = {"slide_mpp": repr(mpp)} if mpp is not None and slide.mpp_source == "given" else {}
        records += [
            ImageRecord(
                path,
                "tissue",
                path.stem,
                tile_microns / tile_size,
                SLIDE_SOURCE,
                extra={"box": _box_text(t.box), **given},
            )
            for t in tiles
        ]
    return records


def _box_text(box: tuple[int, int, int, int]) -> str:
    return ",".join(map(str, box))


def tile_box(record: ImageRecord) -> tuple[int, int, int, int] | None:
    """A slide tile's level-0 box ``(x, y, w, h)``; None for a record of a whole image."""
    text = record.extra.get("box")
    if text is None:
        return None
    x, y, w, h = (int(v) for v in text.split(","))
    return x, y, w, h


def read_slide_tile(record: ImageRecord) -> np.ndarray:
    """The tile of a :func:`slide_tile_records` record as RGB at the record's µm/px (the dataset's ``read_image``)."""
    box = tile_box(record)
    if box is None:
        raise ConfigError(f"{record.path}: not a slide tile record (no box)")
    given = float(record.extra["slide_mpp"]) if "slide_mpp" in record.extra else None
    key = (record.path, given)
    if key not in _OPEN:
        _OPEN[key] = open_slide(record.path, given)
    return _OPEN[key].read_at_scale(box, record.microns_per_pixel)
