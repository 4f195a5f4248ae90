"""Cost counting: parameters, MACs, file sizes; the timing helpers' contract (no timed assertions)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from histobreast.compress.profile import (
    checkpoint_size_bytes,
    count_macs,
    count_nonzero_parameters,
    count_parameters,
    measure_latency,
    measure_throughput,
)


class TwoHeads(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)  # 3*4*9 + 4 = 112 parameters
        self.head = nn.Linear(4, 5)  # 25
        self.aux = nn.Linear(4, 7)  # 35

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = self.conv(x).mean(dim=(2, 3))
        if self.training:
            return self.head(features) + self.aux(features)[:, :5]
        return self.head(features)


def test_count_parameters_by_hand() -> None:
    model = TwoHeads()
    assert count_parameters(model) == 112 + 25 + 35
    assert count_parameters(model, exclude=("aux",)) == 112 + 25
    model.conv.weight.requires_grad_(False)
    assert count_parameters(model, trainable_only=True) == 4 + 25 + 35


def test_count_macs_by_hand_in_eval_mode() -> None:
    model = TwoHeads().train()
    # conv: 4 outputs x 3 inputs x 9 taps x 8x8 positions; head: 4 x 5; aux skipped (eval mode); batch 2.
    assert count_macs(model, torch.randn(2, 3, 8, 8)) == 2 * (4 * 3 * 9 * 64 + 4 * 5)
    assert model.training  # mode restored


def test_count_macs_takes_several_inputs() -> None:
    class Pair(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(6, 3)

        def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
            return self.fc(a) + self.fc(b)

    assert count_macs(Pair(), (torch.randn(1, 6), torch.randn(4, 6))) == (1 + 4) * 6 * 3


def test_count_nonzero_parameters() -> None:
    layer = nn.Linear(4, 2)
    with torch.no_grad():
        layer.weight.copy_(torch.tensor([[0.0, 1.0, 0.0, 2.0], [0.0, 0.0, 0.0, 3.0]]))
        layer.bias.copy_(torch.tensor([0.5, 0.0]))
    assert count_nonzero_parameters(layer) == 4
    assert count_nonzero_parameters(nn.Sequential(layer), exclude=("0",)) == 0


def test_checkpoint_size_of_file_and_folder(tmp_path) -> None:
    (tmp_path / "a.bin").write_bytes(b"x" * 10)
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "b.json").write_bytes(b"y" * 5)
    assert checkpoint_size_bytes(tmp_path / "a.bin") == 10
    assert checkpoint_size_bytes(tmp_path) == 15


def test_latency_helpers_run_in_eval_mode_and_restore_it() -> None:
    model = TwoHeads().train()
    x = torch.randn(4, 3, 8, 8)
    assert measure_latency(model, x, repeats=2, warmup=1) > 0
    assert measure_throughput(model, x, repeats=2, warmup=0) > 0
    assert model.training
    with pytest.raises(ValueError, match="repeats"):
        measure_latency(model, x, repeats=0)
