"""Model inputs from uint8 RGB arrays: ``(..., H, W, 3)`` uint8 -> ``(..., 3, H, W)`` float32 tensors.

Images stay numpy ``uint8`` through pre-processing (stain, augmentation, grids, KREM crops) and
become tensors only here: scaled to [0, 1], then normalised with ImageNet's channel statistics,
the convention of the torchvision encoders the models build on (and of any ImageNet weights a
user brings).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from histobreast.errors import ConfigError

# torchvision's ImageNet channel mean and standard deviation (RGB).
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def to_tensor(images: np.ndarray) -> torch.Tensor:
    """``(..., H, W, 3)`` uint8 -> ``(..., 3, H, W)`` float32 in [0, 1] (one image or any stack)."""
    if images.dtype != np.uint8 or images.ndim < 3 or images.shape[-1] != 3:
        raise ConfigError(f"expected (..., H, W, 3) uint8 RGB, got shape {images.shape} {images.dtype}")
    return torch.from_numpy(np.ascontiguousarray(images)).movedim(-1, -3).float().div_(255.0)


def normalize(
    tensor: torch.Tensor, mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD
) -> torch.Tensor:
    """Per-channel ``(x - mean) / std`` of a ``(..., 3, H, W)`` tensor (a new tensor)."""
    shape = (3, 1, 1)
    return (tensor - torch.tensor(mean, dtype=tensor.dtype).view(shape)) / torch.tensor(std, dtype=tensor.dtype).view(
        shape
    )


def to_model_input(images: np.ndarray) -> torch.Tensor:
    """uint8 RGB image(s) -> ImageNet-normalised float32 ``(..., 3, H, W)``: the usual dataset transform."""
    return normalize(to_tensor(images))
