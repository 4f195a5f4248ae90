"""Model inputs from uint8 RGB arrays as tensors: ``(..., H, W, 3)`` uint8 -> ``(..., 3, H, W)`` float32.

Images stay numpy ``uint8`` through pre-processing (stain, augmentation, grids, KREM crops) and
become tensors only here. The arithmetic is :mod:`histobreast.preprocess.model_arrays` (numpy,
shared with the torch-free ONNX runtime): [0, 1] scaling, then ImageNet's channel statistics.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from histobreast.preprocess.model_arrays import IMAGENET_MEAN, IMAGENET_STD, model_array, normalize_array, unit_array

__all__ = ["IMAGENET_MEAN", "IMAGENET_STD", "normalize", "to_model_input", "to_tensor"]


def to_tensor(images: np.ndarray) -> torch.Tensor:
    """``(..., H, W, 3)`` uint8 -> ``(..., 3, H, W)`` float32 in [0, 1] (one image or any stack)."""
    return torch.from_numpy(unit_array(images))


def normalize(
    tensor: torch.Tensor, mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD
) -> torch.Tensor:
    """Per-channel ``(x - mean) / std`` of a ``(..., 3, H, W)`` tensor (a new tensor)."""
    return torch.from_numpy(normalize_array(tensor.detach().cpu().numpy(), mean, std)).to(tensor.device)


def to_model_input(images: np.ndarray) -> torch.Tensor:
    """uint8 RGB image(s) -> ImageNet-normalised float32 ``(..., 3, H, W)``: the usual dataset transform."""
    return torch.from_numpy(model_array(images))
