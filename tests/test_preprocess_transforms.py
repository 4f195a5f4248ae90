"""uint8 RGB arrays -> ImageNet-normalised float tensors, for single images and stacks of patches."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from histobreast.errors import ConfigError
from histobreast.preprocess.transforms import IMAGENET_MEAN, IMAGENET_STD, normalize, to_model_input, to_tensor


def test_to_tensor_layout_and_scale() -> None:
    image = np.zeros((2, 3, 3), np.uint8)
    image[1, 2] = (255, 0, 51)
    tensor = to_tensor(image)
    assert tensor.shape == (3, 2, 3) and tensor.dtype == torch.float32
    assert tensor[:, 1, 2].tolist() == pytest.approx([1.0, 0.0, 0.2])
    assert to_tensor(np.zeros((15, 8, 8, 3), np.uint8)).shape == (15, 3, 8, 8)


def test_imagenet_normalisation_by_hand() -> None:
    image = np.full((4, 4, 3), 255, np.uint8)
    out = to_model_input(image)
    expected = [(1.0 - m) / s for m, s in zip(IMAGENET_MEAN, IMAGENET_STD)]  # e.g. (1 - 0.485) / 0.229 = 2.2489
    assert out[:, 0, 0].tolist() == pytest.approx(expected) and expected[0] == pytest.approx(2.2489, abs=1e-4)
    batch = to_model_input(np.stack([image, np.zeros_like(image)]))
    assert torch.equal(batch[0], out) and batch[1, 0, 0, 0].item() == pytest.approx(-0.485 / 0.229)
    assert torch.equal(normalize(torch.ones(3, 1, 1), mean=(0, 0, 0), std=(2, 2, 2)), torch.full((3, 1, 1), 0.5))


def test_rejects_non_rgb_input() -> None:
    with pytest.raises(ConfigError, match="uint8 RGB"):
        to_tensor(np.zeros((4, 4), np.uint8))
    with pytest.raises(ConfigError, match="uint8 RGB"):
        to_tensor(np.zeros((4, 4, 3), np.float32))
