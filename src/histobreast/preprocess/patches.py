"""Patch grids and windows: System A's 5x3 grid, Spanhol 2016's scaled images, sliding and random patches.

Every function takes an ``(H, W, 3)`` uint8 RGB image and returns a stack ``(N, size, size, 3)``
of uint8 patches, so batches go straight into :func:`histobreast.preprocess.transforms.to_model_input`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import cv2
import numpy as np

from histobreast.data.imageio import read_rgb
from histobreast.data.records import ImageRecord
from histobreast.errors import ConfigError, DatasetError

if TYPE_CHECKING:
    from histobreast.preprocess.stain import StainNormalizer
# Interpolation names accepted by resize_rgb, mapped to OpenCV flags.
_INTERPOLATION = {"area": cv2.INTER_AREA, "bilinear": cv2.INTER_LINEAR, "bicubic": cv2.INTER_CUBIC}


def resize_rgb(image: np.ndarray, size: tuple[int, int], interpolation: str = "auto") -> np.ndarray:
    """Resize ``image`` to ``size = (width, height)``.

    ``"auto"`` uses pixel-area averaging when shrinking (no aliasing) and bilinear when enlarging;
    ``"area"``, ``"bilinear"`` and ``"bicubic"`` force one method.
    """
    width, height = int(size[0]), int(size[1])
    if width <= 0 or height <= 0:
        raise ConfigError(f"resize size must be positive, got {width}x{height}")
    if image.shape[1] == width and image.shape[0] == height:
        return np.ascontiguousarray(image)
    if interpolation == "auto":
        shrinking = width * height < image.shape[0] * image.shape[1]
        flag = cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR
    elif interpolation in _INTERPOLATION:
        flag = _INTERPOLATION[interpolation]
    else:
        raise ConfigError(f"interpolation must be one of auto, {', '.join(_INTERPOLATION)}; got {interpolation!r}")
    return cv2.resize(np.ascontiguousarray(image), (width, height), interpolation=flag)


def window_starts(length: int, window: int, stride: int, cover_end: bool = False) -> np.ndarray:
    """Start offsets of windows of ``window`` px every ``stride`` px along an axis of ``length`` px.

    A window longer than the axis is clamped to one window at 0. With ``cover_end`` a last window
    flush with the end is added when the stride would otherwise leave a strip uncovered.
    """
    if window <= 0 or stride <= 0:
        raise ConfigError(f"window and stride must be positive, got window={window}, stride={stride}")
    if window >= length:
        return np.zeros(1, dtype=np.int64)
    starts = np.arange(0, length - window + 1, stride, dtype=np.int64)
    if cover_end and starts[-1] != length - window:
        starts = np.append(starts, length - window)
    return starts


def grid_patches(image: np.ndarray, grid: tuple[int, int] = (5, 3), patch_size: int = 224) -> np.ndarray:
    """System A's local-branch input: resize to ``(cols*size, rows*size)`` and cut a row-major grid.

    With the defaults (Zhu et al. 2019) the image is resized to 1120x672 and cut into 15
    non-overlapping 224x224 patches: ``(15, 224, 224, 3)``, left to right, then top to bottom.
    """
    cols, rows = grid
    if cols <= 0 or rows <= 0 or patch_size <= 0:
        raise ConfigError(f"grid and patch_size must be positive, got grid={grid}, patch_size={patch_size}")
    resized = resize_rgb(image, (cols * patch_size, rows * patch_size))
    return (
        resized.reshape(rows, patch_size, cols, patch_size, 3)
        .transpose(0, 2, 1, 3, 4)
        .reshape(rows * cols, patch_size, patch_size, 3)
        .copy()
    )


def rescale_rgb(image: np.ndarray, factor: float) -> np.ndarray:
    """``image`` resized by ``factor`` on both sides (at least 1 px): a change of µm/px."""
    height, width = image.shape[:2]
    return resize_rgb(image, (max(1, round(width * factor)), max(1, round(height * factor))))


def hybrid_inputs(
    image: np.ndarray, size: int, grid: tuple[int, int] = (5, 3), patch_size: int = 224
) -> tuple[np.ndarray, np.ndarray]:
    """System A's hybrid input from one image: the whole image resized to ``size x size`` (global
    branch) and its :func:`grid_patches` (local branch)."""
    return resize_rgb(image, (size, size)), grid_patches(image, grid, patch_size)


def _check_fits(image: np.ndarray, patch_size: int) -> None:
    height, width = image.shape[:2]
    if patch_size <= 0 or patch_size > min(height, width):
        raise ConfigError(f"patch_size {patch_size} does not fit in a {width}x{height} image")


def _crop_stack(image: np.ndarray, xs: np.ndarray, ys: np.ndarray, patch_size: int) -> np.ndarray:
    return np.stack([image[y : y + patch_size, x : x + patch_size] for x, y in zip(xs, ys)])


def load_scaled(record: ImageRecord, scale: float, stain: StainNormalizer | None = None) -> np.ndarray:
    """The record's image as uint8 RGB, stain-normalised at full resolution (if ``stain``), then
    resized by ``scale`` (Spanhol 2016's down-scaled images)."""
    if scale <= 0:
        raise ConfigError(f"spanhol.scale must be > 0, got {scale}")
    image = read_rgb(record.path)
    if stain is not None:
        image = stain.normalize(image).image
    return image if scale == 1.0 else rescale_rgb(image, scale)


def sliding_positions(height: int, width: int, patch_size: int, overlap: float) -> np.ndarray:
    """``(N, 2)`` top-left ``(y, x)`` of the row-major sliding windows covering an image (those of
    :func:`sliding_window_patches`); an image smaller than a patch is a :class:`DatasetError`."""
    if not 0.0 <= overlap < 1.0:
        raise ConfigError(f"spanhol.overlap must be in [0, 1), got {overlap}")
    if patch_size > min(height, width):
        raise DatasetError(f"patch size {patch_size} does not fit in a {width}x{height} image (after scaling)")
    stride = max(1, round(patch_size * (1.0 - overlap)))
    ys, xs = np.meshgrid(
        window_starts(height, patch_size, stride, cover_end=True),
        window_starts(width, patch_size, stride, cover_end=True),
        indexing="ij",
    )
    return np.stack([ys.ravel(), xs.ravel()], axis=1)


def sliding_window_patches(image: np.ndarray, patch_size: int, overlap: float = 0.5) -> np.ndarray:
    """Spanhol et al. 2016's sliding windows: ``patch_size`` squares with fractional ``overlap``, row-major.

    The stride is ``round(patch_size * (1 - overlap))``; a last row/column flush with the right and
    bottom edges is added when the stride leaves a strip, so the whole image is covered.
    """
    if not 0.0 <= overlap < 1.0:
        raise ConfigError(f"overlap must be in [0, 1), got {overlap}")
    _check_fits(image, patch_size)
    return crop_patches(image, sliding_positions(image.shape[0], image.shape[1], patch_size, overlap), patch_size)


def crop_patches(image: np.ndarray, positions: np.ndarray, patch_size: int) -> np.ndarray:
    """``(N, patch_size, patch_size, 3)`` squares of ``image`` at the top-left ``(y, x)`` ``positions``."""
    return _crop_stack(image, positions[:, 1], positions[:, 0], patch_size)


def random_patches(image: np.ndarray, patch_size: int, count: int, rng: np.random.Generator) -> np.ndarray:
    """Spanhol et al. 2016's random extraction: ``count`` squares at uniformly random positions."""
    _check_fits(image, patch_size)
    if count <= 0:
        raise ConfigError(f"count must be positive, got {count}")
    xs = rng.integers(0, image.shape[1] - patch_size + 1, size=count)
    ys = rng.integers(0, image.shape[0] - patch_size + 1, size=count)
    return _crop_stack(image, xs, ys, patch_size)
