"""uint8 RGB arrays -> the models' input arrays, in numpy: ``(..., H, W, 3)`` uint8 -> ``(..., 3, H, W)`` float32.

Scaled to [0, 1], then normalised with ImageNet's channel statistics, the convention of the
torchvision encoders the models build on (and of any ImageNet weights a user brings). Torch-free:
the ONNX runtime feeds these arrays to onnxruntime, and :mod:`histobreast.preprocess.transforms`
wraps them as tensors, so both paths see the same numbers.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from histobreast.errors import ConfigError

# torchvision's ImageNet channel mean and standard deviation (RGB).
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def unit_array(images: np.ndarray) -> np.ndarray:
    """``(..., H, W, 3)`` uint8 -> ``(..., 3, H, W)`` float32 in [0, 1] (one image or any stack)."""
    if images.dtype != np.uint8 or images.ndim < 3 or images.shape[-1] != 3:
        raise ConfigError(f"expected (..., H, W, 3) uint8 RGB, got shape {images.shape} {images.dtype}")
    return np.ascontiguousarray(np.moveaxis(images, -1, -3), dtype=np.float32) / np.float32(255.0)


def normalize_array(
    array: np.ndarray, mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD
) -> np.ndarray:
    """Per-channel ``(x - mean) / std`` of a ``(..., 3, H, W)`` array (a new array, its dtype kept)."""
    shape = (3, 1, 1)
    mean_ = np.asarray(mean, dtype=array.dtype).reshape(shape)
    std_ = np.asarray(std, dtype=array.dtype).reshape(shape)
    return (array - mean_) / std_


def model_array(images: np.ndarray) -> np.ndarray:
    """uint8 RGB image(s) -> ImageNet-normalised float32 ``(..., 3, H, W)``: every model's input."""
    return normalize_array(unit_array(images))
