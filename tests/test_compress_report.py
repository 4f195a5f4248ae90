"""Compression figures (paper A, Figs. 10-13) from plain numbers."""

from __future__ import annotations

import math

import pytest

from histobreast.compress.prune import per_loop_fraction
from histobreast.report.compression import (
    plot_accuracy_vs_remaining_weights,
    plot_channel_importance,
    plot_loops_at_ratio,
    plot_pruning_ratio_curves,
)

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _assert_png(path, folder) -> None:
    data = path.read_bytes()
    assert data.startswith(PNG_MAGIC) and len(data) > 5000
    assert not [p for p in folder.iterdir() if p.name.endswith(".tmp")]  # written atomically


def test_channel_importance_before_and_after(tmp_path) -> None:
    before = {"se.3a": [i / 256 for i in range(256)], "se.4e": [0.5] * 832}
    after = {"se.3a": [0.5 + i / 1000 for i in range(128)], "se.4e": [0.49] * 416}
    path = plot_channel_importance(before, tmp_path / "fig11.png", after=after)
    _assert_png(path, tmp_path)
    assert plot_channel_importance(before, tmp_path / "fig11-before.png", layers=["se.4e"]).is_file()
    with pytest.raises(KeyError, match="se.4d"):
        plot_channel_importance(before, tmp_path / "bad.png", layers=["se.4d"])


def test_loops_at_ratio(tmp_path) -> None:
    loops = [1, 2, 3, 4]
    fractions = [per_loop_fraction(0.8, r) for r in loops]
    # Paper A, Fig. 10's accuracies; a missing one (None) is left out of the line.
    path = plot_loops_at_ratio(loops, [0.851, 0.878, None, 0.883], fractions, tmp_path / "fig10.png", target_ratio=0.8)
    _assert_png(path, tmp_path)


def test_pruning_ratio_curves(tmp_path) -> None:
    ratios = [0, 0.25, 0.5, 0.7, 0.9, 0.95]
    macs = [1.46e9 * (1 - r) ** 2 + 0.1e9 for r in ratios]
    params = [3.76e6 * (1 - r) ** 2 + 0.05e6 for r in ratios]
    path = plot_pruning_ratio_curves(
        ratios, [0.85, 0.86, 0.86, 0.85, 0.84, math.nan], macs, params, tmp_path / "fig12.png"
    )
    _assert_png(path, tmp_path)


def test_accuracy_vs_remaining_weights(tmp_path) -> None:
    series = {
        "DNS": ([1.0, 0.3, 0.1], [0.85, 0.84, 0.80]),
        "channel pruning + DNS": ([0.5, 0.15, 0.05], [0.86, 0.85, 0.83]),
    }
    _assert_png(plot_accuracy_vs_remaining_weights(series, tmp_path / "fig13.png"), tmp_path)
    with pytest.raises(ValueError, match="'DNS'"):
        plot_accuracy_vs_remaining_weights({"DNS": ([1.0, 0.5], [0.8])}, tmp_path / "bad.png")
