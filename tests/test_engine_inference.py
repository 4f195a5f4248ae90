"""Generic inference: probabilities over tensor and dict batches, predict_proba."""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, TensorDataset

from histobreast.engine.inference import predict_probabilities, to_device


class FixedLogits(nn.Module):
    """Logits = the first C input features, so expected probabilities are a hand-computed softmax."""

    def __init__(self, classes: int = 3) -> None:
        super().__init__()
        self.classes = classes
        self.dummy = nn.Parameter(torch.zeros(()))

    def forward(self, x: Tensor) -> Tensor:
        return x[:, : self.classes] + self.dummy


class VotingModel(FixedLogits):
    """Has its own predict_proba (like the hybrid model's patch vote), which must be preferred."""

    def predict_proba(self, whole: Tensor, parts: Tensor) -> Tensor:
        return torch.full((whole.shape[0], self.classes), 1.0 / self.classes)


def test_softmax_of_logits_in_dataset_order_and_mode_restored() -> None:
    x = torch.tensor([[0.0, 0.0, 0.0], [np.log(2.0), 0.0, 0.0], [0.0, 0.0, np.log(3.0)]], dtype=torch.float32)
    y = torch.tensor([0, 1, 2])
    model = FixedLogits().train()
    probs, targets = predict_probabilities(model, DataLoader(TensorDataset(x, y), batch_size=2), device="cpu")
    expected = np.array([[1 / 3, 1 / 3, 1 / 3], [0.5, 0.25, 0.25], [0.2, 0.2, 0.6]])
    np.testing.assert_allclose(probs, expected, atol=1e-6)
    assert probs.dtype == np.float32 and targets.dtype == np.int64
    assert targets.tolist() == [0, 1, 2]
    assert model.training  # put back in train mode


def test_predict_proba_is_used_with_dict_inputs() -> None:
    batches = [({"whole": torch.randn(2, 3), "parts": torch.randn(2, 4, 3)}, torch.tensor([1, 0]))]
    probs, targets = predict_probabilities(VotingModel(), batches, device="cpu", amp=False)
    np.testing.assert_allclose(probs, np.full((2, 3), 1 / 3), atol=1e-7)
    assert targets.tolist() == [1, 0]


class MappingModel(FixedLogits):
    """Takes one mapping, like the hybrid model with the contract's {"global", "patches"} keys."""

    def forward(self, inputs: dict[str, Tensor]) -> Tensor:  # type: ignore[override]
        return inputs["global"][:, : self.classes] + inputs["patches"].mean(dim=1)[:, : self.classes] + self.dummy


def test_dict_with_a_python_keyword_key_is_passed_as_one_mapping() -> None:
    batches = [({"global": torch.zeros(2, 3), "patches": torch.zeros(2, 15, 3)}, torch.tensor([0, 1]))]
    probs, _ = predict_probabilities(MappingModel(), batches, device="cpu")
    np.testing.assert_allclose(probs, np.full((2, 3), 1 / 3), atol=1e-7)


def test_to_device_makes_image_batches_channels_last() -> None:
    moved = to_device(
        {"img": torch.randn(2, 3, 4, 4), "vec": torch.randn(2, 5)}, torch.device("cpu"), channels_last=True
    )
    assert moved["img"].is_contiguous(memory_format=torch.channels_last)
    assert moved["vec"].shape == (2, 5)
