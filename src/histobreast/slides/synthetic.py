"""Synthetic whole slides: a pyramidal tiled TIFF (tifffile) of H&E tissue with planted regions.

The slide is white glass with an oval of normal breast tissue holding three planted regions
(benign, in situ, invasive, drawn by :func:`histobreast.data.synthetic.render_he` at the slide's
µm/px) and a green pen stroke on the glass. Pixels are composed tile by tile from a small pool of
rendered textures and a low-resolution label map, so memory stays small whatever the slide size
(the 40,000 x 30,000 px benchmark slide included). The planted regions come back as
:class:`~histobreast.slides.annotations.Region` and are written beside the slide as ImageScope
XML, ASAP XML and QuPath GeoJSON.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import tifffile
from shapely.geometry import Polygon

from histobreast.atomic import atomic_path
from histobreast.data.synthetic import Style, render_he
from histobreast.slides.annotations import Region, write_asap_xml, write_geojson, write_imagescope_xml

#: Annotation names as BACH's WSI annotations spell them -> the renderer's tissue.
PLANTED = {"Benign": "Benign", "In situ": "InSitu", "Invasive": "Invasive"}
BACKGROUND, NORMAL, PEN = 0, 1, 255
_CLASS_CODES = {"Normal": NORMAL, **{name: i for i, name in enumerate(PLANTED, start=2)}}
GLASS_RGB = (243, 241, 245)
PEN_RGB = (40, 150, 70)
TILE = 256  # TIFF tile edge, px
POOL_TILE = 512  # texture tile edge at level 0, px
LEVEL_FACTOR = 4


@dataclass(frozen=True)
class SyntheticSlide:
    """A written synthetic slide: its file, planted regions (level-0 px), tissue outline and scale."""

    path: Path
    regions: list[Region]
    tissue: Polygon
    dimensions: tuple[int, int]
    microns_per_pixel: float
    annotation_files: dict[str, Path]


def _ellipse(cx: float, cy: float, rx: float, ry: float, n: int = 64) -> Polygon:
    t = np.linspace(0, 2 * math.pi, n, endpoint=False)
    return Polygon(np.c_[cx + rx * np.cos(t), cy + ry * np.sin(t)])


def slide_layout(width: int, height: int) -> tuple[Polygon, list[Region], list[tuple[float, float]]]:
    """Tissue oval, planted regions and the pen stroke's points, as fractions of the slide scaled up."""
    tissue = _ellipse(0.45 * width, 0.5 * height, 0.38 * width, 0.4 * height)
    w, h = width, height
    shapes = {
        "Invasive": _ellipse(0.27 * w, 0.5 * h, 0.12 * w, 0.2 * h, 24),
        "In situ": Polygon([(0.5 * w, 0.18 * h), (0.68 * w, 0.2 * h), (0.7 * w, 0.44 * h), (0.52 * w, 0.42 * h)]),
        "Benign": Polygon([(0.5 * w, 0.56 * h), (0.7 * w, 0.56 * h), (0.68 * w, 0.8 * h), (0.52 * w, 0.8 * h)]),
    }
    regions = [Region(label, shape) for label, shape in shapes.items()]
    pen = [(0.93 * width, 0.15 * height), (0.95 * width, 0.5 * height), (0.92 * width, 0.85 * height)]
    return tissue, regions, pen


def _label_map(width: int, height: int, scale: int, tissue: Polygon, regions: list[Region], pen: list) -> np.ndarray:
    labels = np.zeros((math.ceil(height / scale), math.ceil(width / scale)), np.uint8)

    def fill(poly: Polygon, code: int) -> None:
        cv2.fillPoly(labels, [np.round(np.asarray(poly.exterior.coords) / scale).astype(np.int32)], int(code))

    fill(tissue, NORMAL)
    for region in regions:
        fill(region.geometry, _CLASS_CODES[region.label])
    stroke = max(2, round(0.006 * width / scale))
    cv2.polylines(labels, [np.round(np.asarray(pen) / scale).astype(np.int32)], False, PEN, stroke)
    return labels


class _Composer:
    """Pixels of any level-0 box at any level downsample, from the label map and texture pools."""

    def __init__(self, labels: np.ndarray, scale: int, mpp: float, seed: int, variants: int) -> None:
        self.labels, self.scale, self.seed = labels, scale, seed
        style = Style.random(np.random.default_rng([seed]))  # one stain style per slide, as on a real one
        self.pool = {
            code: [
                render_he(tissue, (POOL_TILE, POOL_TILE), mpp, np.random.default_rng([seed, code, k]), style)
                for k in range(variants)
            ]
            for tissue, code in (("Normal", NORMAL), *((PLANTED[n], _CLASS_CODES[n]) for n in PLANTED))
        }
        self._resized: dict[tuple[int, int, int], np.ndarray] = {}
        self._blank: dict[int, np.ndarray] = {}

    def _glass(self, size: int) -> np.ndarray:
        """A bare-glass tile, made once (the TIFF writer only reads the tiles it is given)."""
        if size not in self._blank:
            self._blank[size] = np.full((size, size, 3), GLASS_RGB, np.uint8)
        return self._blank[size]

    def _texture(self, code: int, variant: int, downsample: int) -> np.ndarray:
        key = (code, variant, downsample)
        if key not in self._resized:
            size = POOL_TILE // downsample
            self._resized[key] = cv2.resize(self.pool[code][variant], (size, size), interpolation=cv2.INTER_AREA)
        return self._resized[key]

    def _mosaic(self, code: int, x0: int, y0: int, size: int, downsample: int) -> np.ndarray:
        out = np.empty((size, size, 3), np.uint8)
        cell = POOL_TILE // downsample
        span = size * downsample
        for j in range(y0 // POOL_TILE, (y0 + span - 1) // POOL_TILE + 1):
            for i in range(x0 // POOL_TILE, (x0 + span - 1) // POOL_TILE + 1):
                variant = zlib.crc32(f"{self.seed},{code},{i},{j}".encode()) % len(self.pool[code])
                tex = self._texture(code, variant, downsample)
                ox, oy = (i * POOL_TILE - x0) // downsample, (j * POOL_TILE - y0) // downsample
                sx, sy = max(0, -ox), max(0, -oy)
                dx, dy = max(0, ox), max(0, oy)
                w, h = min(cell - sx, size - dx), min(cell - sy, size - dy)
                if w > 0 and h > 0:
                    out[dy : dy + h, dx : dx + w] = tex[sy : sy + h, sx : sx + w]
        return out

    def tile(self, x0: int, y0: int, size: int, downsample: int) -> np.ndarray:
        centres = (np.arange(size) + 0.5) * downsample
        iy = np.clip(((y0 + centres) // self.scale).astype(int), 0, self.labels.shape[0] - 1)
        ix = np.clip(((x0 + centres) // self.scale).astype(int), 0, self.labels.shape[1] - 1)
        block = self.labels[iy[0] : iy[-1] + 1, ix[0] : ix[-1] + 1]  # the label cells the tile samples
        low, high = int(block.min()), int(block.max())
        if low == high and low != PEN:  # most tiles: all glass or one tissue, no masking
            return self._glass(size) if low == BACKGROUND else self._mosaic(low, x0, y0, size, downsample)
        lab = self.labels[iy][:, ix]
        out = self._glass(size).copy()
        for code in np.unique(lab):
            where = (lab == code)[..., None]
            if code == PEN:
                np.copyto(out, np.array(PEN_RGB, np.uint8), where=where)
            elif code != BACKGROUND:
                np.copyto(out, self._mosaic(int(code), x0, y0, size, downsample), where=where)
        return out


def _level_tiles(composer: _Composer, width: int, height: int, downsample: int) -> Iterator[np.ndarray]:
    lw, lh = math.ceil(width / downsample), math.ceil(height / downsample)
    for ty in range(0, lh, TILE):
        for tx in range(0, lw, TILE):
            yield composer.tile(tx * downsample, ty * downsample, TILE, downsample)


def synth_slide(
    path: str | Path,
    size: tuple[int, int] = (4096, 3072),
    microns_per_pixel: float = 1.0,
    *,
    seed: int = 0,
    variants: int = 3,
    annotations: bool = True,
) -> SyntheticSlide:
    """Write a pyramidal tiled JPEG TIFF of ``size = (width, height)`` px at ``microns_per_pixel``
    (levels every 4x down to at most 1024 px, scale in the TIFF resolution tags) and, with ``annotations``,
    ``<stem>.xml`` (ImageScope), ``<stem>.asap.xml`` and ``<stem>.geojson`` beside it."""
    path = Path(path)
    width, height = size
    tissue, regions, pen = slide_layout(width, height)
    scale = max(4, math.ceil(math.sqrt(width * height / 4e6)))
    composer = _Composer(
        _label_map(width, height, scale, tissue, regions, pen), scale, microns_per_pixel, seed, variants
    )
    downsamples = [1]
    while max(width, height) / downsamples[-1] > 1024 and POOL_TILE // (downsamples[-1] * LEVEL_FACTOR) >= 8:
        downsamples.append(downsamples[-1] * LEVEL_FACTOR)
    with atomic_path(path) as tmp, tifffile.TiffWriter(tmp, bigtiff=width * height > 2**31 // 3) as tif:
        for downsample in downsamples:
            shape = (math.ceil(height / downsample), math.ceil(width / downsample), 3)
            per_cm = 1e4 / (microns_per_pixel * downsample)
            tif.write(
                _level_tiles(composer, width, height, downsample),
                shape=shape,
                dtype=np.uint8,
                tile=(TILE, TILE),
                photometric="rgb",
                compression="jpeg",
                compressionargs={"level": 90},
                resolution=(per_cm, per_cm),
                resolutionunit="CENTIMETER",
                subfiletype=1 if downsample > 1 else 0,
                metadata=None,
            )
    files: dict[str, Path] = {}
    if annotations:
        stem = path.with_suffix("")
        files = {
            "imagescope": write_imagescope_xml(stem.with_suffix(".xml"), regions),
            "asap": write_asap_xml(Path(f"{stem}.asap.xml"), regions),
            "geojson": write_geojson(stem.with_suffix(".geojson"), regions),
        }
    return SyntheticSlide(path, regions, tissue, (width, height), microns_per_pixel, files)
