"""Dynamic Network Surgery: thresholds, pruning and splicing, straight-through gradients, sparse files."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from histobreast.compress.dns import DNSConfig, DynamicNetworkSurgery, load_sparse_weights, save_sparse_weights
from histobreast.compress.importance import compute_channel_importance
from histobreast.compress.profile import checkpoint_size_bytes, count_nonzero_parameters
from histobreast.compress.prune import prune_channels
from histobreast.errors import CheckpointError
from histobreast.models import create_model
from histobreast.models.weights import save_weights


def _linear(values: list[float]) -> nn.Linear:
    layer = nn.Linear(3, 2)
    with torch.no_grad():
        layer.weight.copy_(torch.tensor(values).reshape(2, 3))
        layer.bias.zero_()
    return layer


def _weights(layer: nn.Linear) -> torch.Tensor:
    return layer.parametrizations.weight.original


def _mask(layer: nn.Linear) -> list[float]:
    return layer.parametrizations.weight[0].mask.flatten().tolist()


def test_thresholds_come_from_mean_and_std_of_magnitudes() -> None:
    # |W| = 1..6: mean 3.5, std (unbiased) sqrt(17.5 / 5) = 1.8708
    layer = _linear([1, -2, 3, -4, 5, -6])
    surgery = DynamicNetworkSurgery(layer, DNSConfig(sensitivity=0.5))
    base = 3.5 + 0.5 * math.sqrt(3.5)
    low, high = surgery.thresholds()[""]
    assert low == pytest.approx(0.9 * base, rel=1e-6)  # a = 0.9 (mu + c sigma) = 3.9919
    assert high == pytest.approx(1.1 * base, rel=1e-6)  # b = 1.1 (mu + c sigma) = 4.8790


def test_masks_prune_below_a_splice_above_b_and_keep_the_band() -> None:
    layer = _linear([1, -2, 3, -4, 5, -6])  # c = 0: a = 3.15, b = 3.85
    surgery = DynamicNetworkSurgery(layer, DNSConfig(sensitivity=0.0))
    surgery.update_masks()
    assert _mask(layer) == [0, 0, 0, 1, 1, 1]
    with torch.no_grad():
        _weights(layer)[0, 2] = 3.5  # pruned weight grows into the band [a, b]: stays pruned
        _weights(layer)[1, 0] = -3.5  # kept weight falls into the band: stays kept
    surgery.update_masks()
    assert _mask(layer) == [0, 0, 0, 1, 1, 1]
    with torch.no_grad():
        _weights(layer)[0, 2] = 3.9  # grows above b = 3.85: spliced back
        _weights(layer)[1, 0] = -3.1  # falls below a = 3.15: pruned
    surgery.update_masks()
    assert _mask(layer) == [0, 0, 1, 0, 1, 1]
    assert surgery.remaining_fraction() == pytest.approx(3 / 6)


def test_forward_uses_masked_weights_and_gradients_reach_pruned_weights() -> None:
    layer = _linear([1, -2, 3, -4, 5, -6])
    surgery = DynamicNetworkSurgery(layer)
    surgery.update_masks()
    x = torch.tensor([[1.0, 1.0, 1.0]])
    out = layer(x)
    torch.testing.assert_close(out, torch.tensor([[0.0, 5.0 - 6.0 - 4.0]]))  # row 0 fully pruned
    out.sum().backward()
    # Straight-through: dL/dW = dL/d(W*T) = x for every weight, pruned or not.
    torch.testing.assert_close(_weights(layer).grad, torch.ones(2, 3))


def test_training_can_splice_a_pruned_weight_back() -> None:
    layer = _linear([1, -2, 3, -4, 5, -6])  # a = 3.15, b = 3.85
    surgery = DynamicNetworkSurgery(layer, DNSConfig(gamma=0.0))  # update at every step
    optimizer = torch.optim.SGD(layer.parameters(), lr=1.0)
    surgery.step()
    assert _mask(layer)[2] == 0
    for _ in range(2):  # the loss pushes weight [0, 2] from 3 up past b although it is masked
        optimizer.zero_grad()
        (-layer(torch.tensor([[0.0, 0.0, 0.5]]))[0, 0]).backward()
        optimizer.step()
        surgery.step()
    assert _weights(layer)[0, 2].item() == pytest.approx(4.0)
    assert _mask(layer)[2] == 1


def test_update_probability_decreases_and_stops() -> None:
    surgery = DynamicNetworkSurgery(_linear([1, 2, 3, 4, 5, 6]), DNSConfig(gamma=1e-4, power=1.0, stop_iteration=30000))
    assert surgery.update_probability(0) == 1.0
    assert surgery.update_probability(10000) == pytest.approx(0.5)  # (1 + 1e-4 * 1e4)^-1
    assert surgery.update_probability(20000) == pytest.approx(1 / 3)
    assert surgery.update_probability(30000) == 0.0


def test_mask_update_draws_are_seeded() -> None:
    def draws(seed: int) -> list[bool]:
        surgery = DynamicNetworkSurgery(_linear([1, 2, 3, 4, 5, 6]), DNSConfig(gamma=0.5), seed=seed)
        return [surgery.step() for _ in range(40)]

    assert draws(3) == draws(3)
    assert any(draws(3)) and not all(draws(3))


def test_per_layer_sensitivity_and_layer_selection() -> None:
    model = nn.Sequential(_linear([1, 2, 3, 4, 5, 6]), nn.ReLU(), nn.Linear(2, 2))
    surgery = DynamicNetworkSurgery(model, DNSConfig(sensitivity={"0": 1.0, "default": -10.0}), layers=["0", "2"])
    thresholds = surgery.thresholds()
    assert thresholds["0"][0] == pytest.approx(0.9 * (3.5 + math.sqrt(3.5)))
    assert thresholds["2"] == (0.0, 0.0)  # mu - 10 sigma < 0 -> clamped at 0: nothing is pruned
    with pytest.raises(ValueError, match="no conv/linear layers named"):
        DynamicNetworkSurgery(nn.Sequential(nn.Linear(2, 2)), layers=["5"])


def test_finalize_bakes_zeros_and_sparse_file_round_trips_compactly(tmp_path) -> None:
    model = nn.Sequential(nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 2))
    surgery = DynamicNetworkSurgery(model, DNSConfig(sensitivity=1.0))  # a ~ 0.9 (mu + sigma): most weights go
    surgery.update_masks()
    remaining = surgery.remaining_fraction()
    assert 0.05 < remaining < 0.5
    with pytest.raises(ValueError, match="finalize"):
        save_sparse_weights(model, tmp_path / "early.safetensors")
    surgery.finalize()
    assert not hasattr(model[0], "parametrizations")
    kept_weights = round(remaining * (64 * 64 + 64 * 2))
    assert count_nonzero_parameters(model) == kept_weights + 64 + 2  # + the (unmasked) biases
    sparse = save_sparse_weights(model, tmp_path / "sparse.safetensors")
    dense = save_weights(model, tmp_path / "dense.safetensors")
    assert checkpoint_size_bytes(sparse) < 0.6 * checkpoint_size_bytes(dense)
    state = load_sparse_weights(sparse)
    assert set(state) == set(model.state_dict())
    for key, value in model.state_dict().items():
        assert torch.equal(state[key], value)


def test_dense_file_is_not_a_sparse_file(tmp_path) -> None:
    path = save_weights({"w": torch.ones(3)}, tmp_path / "dense.safetensors")
    with pytest.raises(CheckpointError, match="not a sparse weights file"):
        load_sparse_weights(path)


def test_dns_after_channel_pruning_trains_and_reloads(tmp_path) -> None:
    model = create_model("googlenet_sep", aux_logits=False)
    batch = torch.randn(2, 3, 64, 64)
    pruned = prune_channels(model, compute_channel_importance(model, [batch]), 0.5)
    kwargs = pruned.model_kwargs
    surgery = DynamicNetworkSurgery(pruned, DNSConfig(sensitivity=0.0, gamma=0.0))
    optimizer = torch.optim.SGD(pruned.parameters(), lr=0.01)
    pruned.train()
    loss = nn.functional.cross_entropy(pruned(batch), torch.tensor([0, 1]))
    loss.backward()
    optimizer.step()
    assert surgery.step()
    assert 0.2 < surgery.remaining_fraction() < 0.8
    finished = surgery.finalize().eval()
    path = save_sparse_weights(finished, tmp_path / "pruned_dns.safetensors")
    reloaded = create_model("googlenet_sep", **kwargs)
    reloaded.load_state_dict(load_sparse_weights(path))
    reloaded.eval()
    with torch.no_grad():
        torch.testing.assert_close(reloaded(batch), finished(batch))
    assert reloaded.inception["3a"].out_channels == 128
