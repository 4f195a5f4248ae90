"""SEP channel importance: the mean SE gate per channel over a dataset, saved with a run."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from histobreast.compress.importance import compute_channel_importance, load_importance, save_importance, se_blocks
from histobreast.errors import CheckpointError
from histobreast.models import create_model
from histobreast.models.layers import SEBlock
from histobreast.models.weights import save_weights


class TinySEP(nn.Module):
    """conv -> BN -> SE, enough to check the statistic against a hand computation."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 32, 3, padding=1)
        self.bn = nn.BatchNorm2d(32)
        self.se = SEBlock(32, reduction=16)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.se(self.bn(self.conv(x)))


def test_importance_is_the_mean_gate_over_samples_not_batches() -> None:
    model = TinySEP()
    images = torch.randn(5, 3, 8, 8)
    loader = DataLoader(TensorDataset(images, torch.zeros(5, dtype=torch.long)), batch_size=3)  # batches of 3 and 2
    importance = compute_channel_importance(model, loader)
    assert list(importance) == ["se"]
    model.eval()
    with torch.no_grad():  # eq. (3) of paper A by hand: s = sigmoid(W2 relu(W1 z)), z = spatial mean
        squeezed = model.bn(model.conv(images)).mean(dim=(2, 3))
        gates = torch.sigmoid(model.se.fc2(torch.relu(model.se.fc1(squeezed))))
    torch.testing.assert_close(importance["se"], gates.mean(dim=0))


def test_pass_runs_in_eval_mode_and_restores_the_mode() -> None:
    model = TinySEP().train()
    running_mean = model.bn.running_mean.clone()
    compute_channel_importance(model, [torch.randn(4, 3, 8, 8)])
    assert model.training
    assert torch.equal(model.bn.running_mean, running_mean)  # eval mode: BN statistics untouched
    assert not model.se.gate._forward_hooks  # hooks removed


def test_googlenet_sep_gives_one_importance_vector_per_sep_layer() -> None:
    model = create_model("googlenet_sep")
    importance = compute_channel_importance(model, [(torch.randn(2, 3, 64, 64), torch.tensor([0, 1]))], max_batches=1)
    assert list(importance) == [f"se.{n}" for n in ("3a", "3b", "4a", "4b", "4c", "4d", "4e")]
    assert [len(v) for v in importance.values()] == [256, 480, 512, 512, 512, 528, 832]
    assert all(((v > 0) & (v < 1)).all() for v in importance.values())  # sigmoid gates


def test_max_batches_limits_the_pass() -> None:
    model = TinySEP()
    first = torch.randn(2, 3, 8, 8)
    torch.testing.assert_close(
        compute_channel_importance(model, [first, torch.randn(2, 3, 8, 8) * 10], max_batches=1),
        compute_channel_importance(model, [first]),
    )


def test_models_without_se_blocks_are_refused() -> None:
    with pytest.raises(ValueError, match="no SE blocks"):
        compute_channel_importance(create_model("googlenet_bn"), [torch.randn(1, 3, 64, 64)])
    assert se_blocks(create_model("googlenet_bn")) == {}


def test_importance_saves_and_loads(tmp_path) -> None:
    importance = {"se.3a": torch.rand(256), "se.4e": torch.rand(832)}
    path = save_importance(importance, tmp_path / "importance.safetensors")
    loaded = load_importance(path)
    assert set(loaded) == set(importance)
    for key, value in importance.items():
        torch.testing.assert_close(loaded[key], value)


def test_loading_something_else_is_refused(tmp_path) -> None:
    path = save_weights({"fc.weight": torch.zeros(2, 3)}, tmp_path / "weights.safetensors")
    with pytest.raises(CheckpointError, match="not a channel-importance file"):
        load_importance(path)
    with pytest.raises(CheckpointError, match="not found"):
        load_importance(tmp_path / "missing.safetensors")
