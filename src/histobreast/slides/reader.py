"""``Slide``: one whole-slide image read through the field's libraries, at a physical scale.

Backends, in order: openslide-python (the openslide-bin wheel ships libopenslide) for every vendor
format it knows, tiffslide for TIFFs openslide refuses; DICOM WSI goes to wsidicom first, then to
openslide (4.0 reads DICOM too, and opens files without a pixel spacing that wsidicom refuses). Coordinates are
always level-0 pixels. The scale (µm/px) comes from the file or from the caller, never from a guess:
:func:`open_slide` refuses a slide without one unless ``mpp`` is given.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import math
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from histobreast.data.records import scale_problem
from histobreast.errors import HistobreastError

log = logging.getLogger(__name__)

DICOM_SUFFIXES = frozenset({".dcm", ".dicom"})
BAND_PIXELS = 4 * 2**20  # reads larger than this (level pixels) are split into horizontal bands


class SlideError(HistobreastError):
    """A slide file that cannot be read, or read as asked (no scale, corrupt tile, unknown format)."""

    def __init__(self, path: str | Path, reason: str) -> None:
        self.path = Path(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")

    def __reduce__(self) -> tuple[type, tuple[Path, str]]:  # raised in tile-reading worker processes
        return (type(self), (self.path, self.reason))


def _is_dicom(path: Path) -> bool:
    if path.suffix.lower() in DICOM_SUFFIXES:
        return True
    with contextlib.suppress(OSError), path.open("rb") as fh:
        return fh.read(132)[128:] == b"DICM"
    return False


def _positive(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) and number > 0 else None


class _OpenSlideBackend:
    name = "openslide"

    def __init__(self, path: Path, module: Any) -> None:
        self._slide = module.OpenSlide(str(path)) if module.__name__ == "openslide" else module.TiffSlide(str(path))
        self.name = module.__name__
        props = self._slide.properties
        self.level_dimensions = [tuple(int(v) for v in d) for d in self._slide.level_dimensions]
        self.level_downsamples = [float(d) for d in self._slide.level_downsamples]
        self.vendor = str(props.get(f"{self.name}.vendor") or "") or None
        self.mpp = _positive(props.get(f"{self.name}.mpp-x"))
        self.objective = _positive(props.get(f"{self.name}.objective-power"))
        self.associated = sorted(self._slide.associated_images)

    def read_region(self, location: tuple[int, int], level: int, size: tuple[int, int]) -> np.ndarray:
        if self.name == "openslide" and size[0] > 0 and size[1] > 0:
            return _openslide_pixels(self._slide, location, level, size)
        return np.asarray(self._slide.read_region(location, level, size))

    def associated_image(self, name: str) -> np.ndarray:
        return np.asarray(self._slide.associated_images[name])

    def close(self) -> None:
        self._slide.close()


def _openslide_pixels(slide: Any, location: tuple[int, int], level: int, size: tuple[int, int]) -> np.ndarray:
    """openslide's ``read_region`` pixels without its PIL image: libopenslide writes premultiplied ARGB
    straight into a numpy buffer. An opaque region (the usual case) becomes RGB in one channel swap;
    otherwise openslide-python's own un-premultiplying gives the RGBA its ``read_region`` returns. The
    same pixels either way (tests/test_slides_synthetic.py compares the two), without the PIL image and
    the copy out of it: a paper-width tile (2744x1803 px at 0.25 µm/px to 700x460) took 0.24 s, now 0.17."""
    from openslide import lowlevel

    w, h = size
    buf = np.empty((h, w), np.uint32)
    lowlevel._read_region(slide._osr, buf.ctypes.data_as(ctypes.POINTER(ctypes.c_uint32)), *location, level, w, h)
    pixels = buf.view(np.uint8).reshape(h, w, 4)  # little-endian ARGB words: B, G, R, A bytes
    if sys.byteorder == "little" and pixels[..., 3].min() == 255:
        return cv2.cvtColor(pixels, cv2.COLOR_BGRA2RGB)
    lowlevel._convert.argb2rgba(buf)
    return pixels


class _DicomBackend:
    name = "wsidicom"

    def __init__(self, path: Path) -> None:
        import wsidicom

        self._slide = wsidicom.WsiDicom.open(str(path))
        levels = list(self._slide.levels)
        self.level_dimensions = [(int(lv.size.width), int(lv.size.height)) for lv in levels]
        self.level_downsamples = [self.level_dimensions[0][0] / d[0] for d in self.level_dimensions]
        self.vendor = "dicom"
        mpp = self._slide.mpp
        self.mpp = _positive(mpp.width) if mpp is not None else None
        self.objective = None
        self.associated = [
            n for n, fn in (("label", self._slide.read_label), ("macro", self._slide.read_overview)) if fn
        ]
        self._levels = levels

    def read_region(self, location: tuple[int, int], level: int, size: tuple[int, int]) -> np.ndarray:
        return np.asarray(self._slide.read_region(location, self._levels[level].level, size))

    def associated_image(self, name: str) -> np.ndarray:
        return np.asarray(self._slide.read_label() if name == "label" else self._slide.read_overview())

    def close(self) -> None:
        self._slide.close()


#: Type 1 attributes of a DICOM VL Whole Slide Microscopy image (PS3.3 C.8.12.4) whose absence both
#: readers stop at: ImageType's third value (VOLUME, LABEL, OVERVIEW) is how they tell the images apart.
DICOM_REQUIRED = ("ImageType", "TotalPixelMatrixColumns", "TotalPixelMatrixRows")


def _dicom_reason(path: Path) -> str | None:
    """Why the readers found no image in a DICOM file: the required attributes it lacks, if any."""
    import pydicom

    try:
        ds = pydicom.dcmread(str(path), stop_before_pixels=True)
    except Exception as err:  # noqa: BLE001 - any pydicom failure is the reason itself
        return f"not a readable DICOM file: {err}"
    missing = [k for k in DICOM_REQUIRED if k not in ds]
    return f"the required DICOM attribute {', '.join(missing)} is missing" if missing else None


def _first_line(err: Exception) -> str:
    return str(err).splitlines()[0] if str(err) else type(err).__name__


def _open_backend(path: Path) -> Any:
    import openslide

    reasons = []
    if _is_dicom(path):
        try:
            return _DicomBackend(path)
        except ImportError:
            reasons.append("wsidicom: not installed")
        except Exception as err:  # noqa: BLE001 - wsidicom's errors differ by defect; the reason is reported
            reasons.append(f"wsidicom: {type(err).__name__}")
        try:
            return _OpenSlideBackend(path, openslide)
        except Exception as err:  # noqa: BLE001
            reasons.append(f"openslide {openslide.__library_version__}: {_first_line(err).split(': ')[-1]}")
        why = _dicom_reason(path)
        raise SlideError(path, f"DICOM WSI not readable ({why + '; ' if why else ''}{'; '.join(reasons)})")
    import tiffslide

    tifffile_log = logging.getLogger("tifffile")
    level = tifffile_log.level
    tifffile_log.setLevel(logging.ERROR)  # its warnings about a broken file repeat what the error says
    try:
        for module in (openslide, tiffslide):
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")  # tiffslide's "metadata parsing only partially implemented"
                    return _OpenSlideBackend(path, module)
            except Exception as err:  # noqa: BLE001 - each library has its own errors; the reasons are reported
                reasons.append(f"{module.__name__}: {_first_line(err)}")
    finally:
        tifffile_log.setLevel(level)
    raise SlideError(path, "not a slide any reader opens (" + "; ".join(reasons) + ")")


class Slide:
    """An open slide: levels, level-0 dimensions, µm/px, objective, vendor, thumbnail, physical reads.

    Use :func:`open_slide`; ``with`` closes it. A given ``mpp`` is used only when the file has no
    scale; ``mpp_source`` says where the scale came from (``"file"``, ``"given"``, or ``None``).
    """

    def __init__(self, path: str | Path, mpp: float | None = None) -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise SlideError(self.path, "slide file not found")
        if self.path.stat().st_size == 0:
            raise SlideError(self.path, "empty file")
        self._backend = _open_backend(self.path)
        self.backend: str = self._backend.name
        self.level_dimensions: list[tuple[int, int]] = self._backend.level_dimensions
        self.level_downsamples: list[float] = self._backend.level_downsamples
        self.vendor: str | None = self._backend.vendor
        self.objective: float | None = self._backend.objective
        self.associated_images: list[str] = self._backend.associated
        problem = None if mpp is None else scale_problem(mpp)
        if problem:
            raise SlideError(self.path, f"--mpp {problem}")
        given = float(mpp) if mpp is not None else None
        self.mpp: float | None = self._backend.mpp or given  # the file's scale wins: --mpp fills a gap
        self.mpp_source: str | None = "file" if self._backend.mpp else ("given" if given else None)

    def __enter__(self) -> Slide:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Release the file."""
        self._backend.close()

    @property
    def dimensions(self) -> tuple[int, int]:
        """Level-0 ``(width, height)`` in pixels."""
        return self.level_dimensions[0]

    @property
    def level_count(self) -> int:
        return len(self.level_dimensions)

    @property
    def format(self) -> str:
        """What the file is, as its reader names it (``aperio``, ``hamamatsu``, ``generic-tiff``, ``dicom``)."""
        return self.vendor or self.path.suffix.lstrip(".").lower() or "unknown"

    def require_scale(self) -> float:
        """The µm/px, or a one-line refusal naming the file when it has none and none was given."""
        if self.mpp is None:
            raise SlideError(self.path, "no µm/px in the file; give the scale with --mpp (it is never guessed)")
        return self.mpp

    def read_region(self, location: tuple[int, int], level: int, size: tuple[int, int]) -> np.ndarray:
        """``(h, w, 3)`` uint8 RGB of ``size`` pixels at ``level`` whose top-left is ``location`` in level-0
        pixels; transparent (no-data) pixels become white background."""
        try:
            pixels = self._backend.read_region((int(location[0]), int(location[1])), level, size)
        except Exception as err:  # noqa: BLE001 - a corrupt tile surfaces as any of the libraries' errors
            raise SlideError(self.path, f"cannot read level {level} at {tuple(location)}: {err}") from None
        return _to_rgb(pixels)

    def best_level(self, downsample: float) -> int:
        """The lowest-resolution level whose downsample is at most ``downsample`` (reads then shrink)."""
        best = 0
        for level, factor in enumerate(self.level_downsamples):
            if factor <= downsample * 1.001:
                best = level
        return best

    def read_box(self, box: tuple[int, int, int, int], out_size: tuple[int, int]) -> np.ndarray:
        """The level-0 box ``(x, y, w, h)`` as ``out_size = (width, height)`` RGB, read from the best level;
        large reads go in horizontal bands, so memory stays near the output's size."""
        x, y, w, h = box
        out_w, out_h = out_size
        level = self.best_level(min(w / out_w, h / out_h))
        factor = self.level_downsamples[level]
        size = (max(1, round(w / factor)), max(1, round(h / factor)))
        if size[0] * size[1] <= BAND_PIXELS:
            pixels = self.read_region((x, y), level, size)
            return (
                pixels if size == (out_w, out_h) else cv2.resize(pixels, (out_w, out_h), interpolation=cv2.INTER_AREA)
            )
        rows = max(1, BAND_PIXELS // size[0] * out_h // size[1])  # output rows per band
        bands = []
        for top in range(0, out_h, rows):
            bottom = min(out_h, top + rows)
            y0, y1 = y + round(top * h / out_h), y + round(bottom * h / out_h)
            band = self.read_region((x, y0), level, (size[0], max(1, round((y1 - y0) / factor))))
            bands.append(cv2.resize(band, (out_w, bottom - top), interpolation=cv2.INTER_AREA))
        return np.concatenate(bands)

    def read_at_scale(self, box: tuple[int, int, int, int], microns_per_pixel: float) -> np.ndarray:
        """The level-0 box resampled to ``microns_per_pixel`` (best level + resize)."""
        factor = self.require_scale() / microns_per_pixel
        return self.read_box(box, (max(1, round(box[2] * factor)), max(1, round(box[3] * factor))))

    def thumbnail(self, max_size: int = 1024) -> tuple[np.ndarray, float]:
        """The whole slide with its longer side at most ``max_size`` px, and its downsample from level 0.

        A pyramid level that fits and is at least a quarter of ``max_size`` is returned as it is (no
        resampling of a large level); otherwise the slide is resampled from the best level.
        """
        width, height = self.dimensions
        for level, (w, h) in enumerate(self.level_dimensions):
            if max_size // 4 <= max(w, h) <= max_size:
                return self.read_region((0, 0), level, (w, h)), width / w
        downsample = max(width, height) / max_size if max(width, height) > max_size else 1.0
        out = (max(1, round(width / downsample)), max(1, round(height / downsample)))
        return self.read_box((0, 0, width, height), out), width / out[0]

    def associated_image(self, name: str) -> np.ndarray:
        """An associated image (``label``, ``macro``, ``thumbnail``) as RGB."""
        if name not in self.associated_images:
            raise SlideError(self.path, f"no associated image {name!r} (it has {', '.join(self.associated_images)})")
        return _to_rgb(self._backend.associated_image(name))


def _to_rgb(pixels: np.ndarray) -> np.ndarray:
    """RGB uint8; RGBA is composited onto white (openslide marks no-data pixels transparent), in
    integers and only where a pixel is not opaque."""
    if pixels.ndim == 2:
        return np.repeat(pixels[..., None], 3, axis=2).astype(np.uint8)
    rgb = np.ascontiguousarray(pixels[..., :3], dtype=np.uint8)
    if pixels.shape[2] == 4:
        see_through = pixels[..., 3] < 255
        if see_through.any():
            alpha = pixels[..., 3][see_through].astype(np.uint16)[:, None]
            rgb[see_through] = ((rgb[see_through] * alpha + 255 * (255 - alpha) + 127) // 255).astype(np.uint8)
    return rgb


def open_slide(path: str | Path, mpp: float | None = None, *, require_scale: bool = True) -> Slide:
    """Open a slide; with ``require_scale`` (the default) a slide without µm/px and no ``mpp`` is refused."""
    slide = Slide(path, mpp)
    if require_scale and slide.mpp is None:
        slide.close()
        slide.require_scale()
    return slide


@contextlib.contextmanager
def opened(path: str | Path, mpp: float | None = None) -> Iterator[Slide]:
    """``with opened(path) as slide``: :func:`open_slide` that always closes."""
    slide = open_slide(path, mpp)
    try:
        yield slide
    finally:
        slide.close()
