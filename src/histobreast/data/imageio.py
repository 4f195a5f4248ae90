"""Robust image reading: every supported file becomes an ``(H, W, 3)`` ``uint8`` RGB array.

Rules (documented in docs/data.md):

- Decoding uses Pillow; TIFFs Pillow cannot open (floating-point, exotic layouts) fall back to
  ``tifffile``. Multi-page TIFFs are read from their first page. EXIF orientation is not applied:
  pixels come back as stored, so :func:`image_size` and :func:`read_rgb` always agree.
- 16-bit data keeps its high byte (``v >> 8``): the full 0..65535 range maps onto 0..255, the rule
  Pillow itself applies to 16-bit RGB files, so every 16-bit path gives the same answer.
  Floating-point data must lie in [0, 1] and is scaled by 255.
- Transparency (RGBA, LA, palette with transparency) is composited onto white: a transparent pixel
  shows no tissue, which on a slide is the bright empty background.
- Grayscale, palette, CMYK and other modes are converted to RGB.
- A missing, zero-byte, truncated, corrupt or non-image file raises :class:`ImageReadError` naming
  the file. Callers that prefer to go on collect such files in a :class:`SkipReport` (opt-in), which
  run summaries print: nothing is skipped silently.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from histobreast.errors import ConfigError, DatasetError, ImageReadError

#: File suffixes the readers treat as images (lower case).
IMAGE_SUFFIXES: frozenset[str] = frozenset({".png", ".tif", ".tiff", ".jpg", ".jpeg", ".bmp"})
#: Files that mark a folder as one of histobreast's own reports (its figures are not input images).
REPORT_MARKERS = frozenset({"report.md", "metrics.json"})
_TIFF_SUFFIXES = frozenset({".tif", ".tiff"})
_ALPHA_MODES = frozenset({"RGBA", "LA", "PA", "RGBa", "La"})
# Pillow modes whose samples are wider than 8 bits; converted by ``to_rgb_uint8``.
_WIDE_MODES = frozenset({"I;16", "I;16L", "I;16B", "I;16N", "F"})


def is_image_file(path: str | Path) -> bool:
    """True when ``path`` has an image suffix and is not a hidden file (``.DS_Store``, ``._x.png``)."""
    path = Path(path)
    return path.suffix.lower() in IMAGE_SUFFIXES and not path.name.startswith(".")


def list_images(folder: str | Path) -> list[Path]:
    """Image files below ``folder`` at any depth, sorted; hidden files and folders are not images.

    Symbolic links are followed, to files and to folders alike (a linked folder is read once, and
    a link back up the tree is not followed round again); a file reached twice is listed once.
    """
    folder = Path(folder)
    found: dict[Path, Path] = {}  # real path -> the first path it was reached by
    seen_dirs: set[Path] = set()
    for top, dirs, files in os.walk(folder, followlinks=True):
        real = Path(top).resolve()
        if real in seen_dirs:
            dirs[:] = []
            continue
        seen_dirs.add(real)
        if REPORT_MARKERS <= set(files):
            raise DatasetError(
                f"{top}: is a histobreast report folder ({', '.join(sorted(REPORT_MARKERS))}), not images; "
                f"move it out of {folder}"
            )
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(files):
            path = Path(top) / name
            if is_image_file(path) and path.is_file():
                found.setdefault(path.resolve(), path)
    return sorted(found.values())


def to_rgb_uint8(array: np.ndarray, path: str | Path = "<array>") -> np.ndarray:
    """Convert a gray/RGB/RGBA array of any supported dtype to ``(H, W, 3)`` uint8 RGB.

    uint16 keeps the high byte, floats in [0, 1] are scaled by 255, alpha is composited onto white.
    ``path`` only names the source in error messages.
    """
    arr = np.asarray(array)
    if arr.ndim == 3 and arr.shape[0] in (3, 4) and arr.shape[-1] not in (3, 4):
        arr = np.moveaxis(arr, 0, -1)  # planar (C, H, W) TIFF layout
    if arr.ndim == 3 and arr.shape[-1] == 1:
        arr = arr[..., 0]
    if arr.ndim not in (2, 3) or (arr.ndim == 3 and arr.shape[-1] not in (2, 3, 4)):
        raise ImageReadError(path, f"unsupported image shape {arr.shape}")
    if arr.dtype == np.uint8:
        scaled = arr.astype(np.float32) / 255.0 if _has_alpha(arr) else arr
    elif arr.dtype == np.uint16:
        scaled = (arr >> 8).astype(np.uint8)
        scaled = scaled.astype(np.float32) / 255.0 if _has_alpha(arr) else scaled
    elif np.issubdtype(arr.dtype, np.floating):
        finite = arr[np.isfinite(arr)]
        if finite.size != arr.size or finite.min() < 0.0 or finite.max() > 1.0:
            raise ImageReadError(path, "floating-point pixels must be finite and lie in [0, 1]")
        scaled = arr.astype(np.float32)
    else:
        raise ImageReadError(path, f"unsupported pixel type {arr.dtype} (expected 8/16-bit or float)")
    if scaled.dtype == np.float32:
        if _has_alpha(scaled):
            colour, alpha = scaled[..., :-1], scaled[..., -1:]
            scaled = colour * alpha + (1.0 - alpha)  # composite onto white
        scaled = np.clip(np.rint(scaled * 255.0), 0, 255).astype(np.uint8)
    if scaled.ndim == 2:
        scaled = scaled[..., None]
    if scaled.shape[-1] == 1:
        scaled = np.repeat(scaled, 3, axis=-1)
    return np.ascontiguousarray(scaled)


def _has_alpha(arr: np.ndarray) -> bool:
    return arr.ndim == 3 and arr.shape[-1] in (2, 4)


def _check_file(path: Path) -> None:
    if not path.exists():
        raise ImageReadError(path, "file not found")
    if not path.is_file():
        raise ImageReadError(path, "not a file")
    if os.path.getsize(path) == 0:
        raise ImageReadError(path, "empty file (0 bytes)")


def _read_tiff(path: Path) -> np.ndarray:
    import tifffile

    try:
        return tifffile.imread(path, key=0)
    except Exception as err:  # tifffile raises many exception types for bad files
        raise ImageReadError(path, f"corrupt or unsupported TIFF ({err})") from err


def read_rgb(path: str | Path) -> np.ndarray:
    """Read an image file as ``(H, W, 3)`` uint8 RGB, whatever its mode or bit depth.

    Raises :class:`ImageReadError` naming the file when it is missing, empty, truncated, corrupt or
    not an image.
    """
    path = Path(path)
    _check_file(path)
    try:
        with Image.open(path) as image:
            image.load()
            if image.mode == "RGB":
                return np.array(image)
            if image.mode == "P" and "transparency" in image.info:
                image = image.convert("RGBA")
            if image.mode in _ALPHA_MODES:
                return to_rgb_uint8(np.asarray(image.convert("RGBA")), path)
            if image.mode in _WIDE_MODES:
                return to_rgb_uint8(np.asarray(image), path)
            return np.array(image.convert("RGB"))
    except UnidentifiedImageError as err:
        if path.suffix.lower() in _TIFF_SUFFIXES:
            return to_rgb_uint8(_read_tiff(path), path)
        raise ImageReadError(path, "not an image, or a format Pillow cannot read") from err
    except Image.DecompressionBombError as err:
        raise ImageReadError(path, _too_large(err)) from err
    except (OSError, SyntaxError, ValueError) as err:
        raise ImageReadError(path, f"truncated or corrupt image ({err})") from err


def _too_large(err: Exception) -> str:
    return (
        f"image too large to decode safely ({err}); histobreast reads microscopy fields of view, "
        "not whole slides: tile the slide first"
    )


def image_size(path: str | Path) -> tuple[int, int]:
    """``(width, height)`` read from the file header only (cheap: no pixel decoding).

    A header check catches missing, empty and non-image files; a truncated pixel stream is only
    found by :func:`read_rgb`.
    """
    path = Path(path)
    _check_file(path)
    try:
        with Image.open(path) as image:
            return image.size
    except UnidentifiedImageError as err:
        if path.suffix.lower() in _TIFF_SUFFIXES:
            import tifffile

            try:
                with tifffile.TiffFile(path) as tif:
                    page = tif.pages[0]
                    return int(page.imagewidth), int(page.imagelength)
            except Exception as tiff_err:  # tifffile raises many exception types for bad files
                raise ImageReadError(path, f"corrupt or unsupported TIFF ({tiff_err})") from tiff_err
        raise ImageReadError(path, "not an image, or a format Pillow cannot read") from err
    except Image.DecompressionBombError as err:
        raise ImageReadError(path, _too_large(err)) from err
    except (OSError, SyntaxError, ValueError) as err:
        raise ImageReadError(path, f"corrupt image header ({err})") from err


@dataclass(frozen=True)
class SkippedFile:
    """One file left out in skip mode, and why."""

    path: Path
    reason: str


class SkipReport:
    """Opt-in skip mode: collects every file left out, with its reason, for the run summary.

    Readers and checks raise on the first bad file unless they are given a ``SkipReport``; then they
    record the file here and go on. Print :meth:`lines` (or the ``inspect`` table) in run summaries.
    """

    def __init__(self) -> None:
        self.entries: list[SkippedFile] = []

    def add(self, path: str | Path, reason: str) -> None:
        """Record that ``path`` was skipped because of ``reason``."""
        self.entries.append(SkippedFile(Path(path), reason))

    def add_error(self, err: Exception, path: str | Path) -> None:
        """Record an error raised for ``path``; :class:`ImageReadError` keeps its own file and reason."""
        if isinstance(err, ImageReadError):
            self.add(err.path, err.reason)
        else:
            self.add(path, str(err).removeprefix(f"{path}: "))

    def __len__(self) -> int:
        return len(self.entries)

    def __iter__(self) -> Iterator[SkippedFile]:
        return iter(self.entries)

    def lines(self) -> list[str]:
        """One ``path: reason`` line per skipped file, in the order they were found."""
        return [f"{entry.path}: {entry.reason}" for entry in self.entries]


def raise_or_skip(err: Exception, path: str | Path, skip: SkipReport | None) -> None:
    """The one rule of skip mode: raise ``err`` unless a :class:`SkipReport` was given; else record it."""
    if skip is None:
        raise err
    skip.add_error(err, path)


def readable_size(path: str | Path, skip: SkipReport | None) -> tuple[int, int] | None:
    """``(width, height)`` from ``path``'s header; a bad file raises, or is recorded in ``skip`` (-> ``None``)."""
    try:
        return image_size(path)
    except ImageReadError as err:
        raise_or_skip(err, path, skip)
        return None


def collect_images(inputs: list[Path]) -> list[Path]:
    """Image files named directly or found below folders (sorted, each once); anything else is an error."""
    found: dict[Path, None] = {}
    for item in inputs:
        if item.is_dir():
            images = list_images(item)
            if not images:
                raise ConfigError(f"{item}: folder holds no images")
            found.update(dict.fromkeys(images))
        elif item.is_file() and is_image_file(item):
            found[item] = None
        else:
            raise ConfigError(f"{item}: not an image file or folder")
    by_id: dict[str, Path] = {}
    for path in found:  # rows, the review and evaluation are keyed by file name
        if by_id.setdefault(path.stem, path) != path:
            raise ConfigError(f"{path} and {by_id[path.stem]}: two images named {path.stem!r}; predict them apart")
    return list(found)
