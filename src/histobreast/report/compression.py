"""PNG figures of paper A's compression study, from plain numbers (lists and dicts):

- :func:`plot_channel_importance` - importance per channel and its histogram, before and after
  pruning (Fig. 11);
- :func:`plot_loops_at_ratio` - accuracy against the number of loops R at one target ratio, with
  the per-loop fraction X (Fig. 10);
- :func:`plot_pruning_ratio_curves` - accuracy, MACs and parameters against the ratio O (Fig. 12);
- :func:`plot_accuracy_vs_remaining_weights` - accuracy against the fraction of weights left, one
  curve per method, e.g. DNS alone vs channel pruning + DNS (Fig. 13).

Like :mod:`histobreast.report.plots`, figures use ``matplotlib.figure.Figure`` (Agg, no pyplot
state) and are written atomically; each function returns the PNG path. NaN values (e.g. an
accuracy not measured) are left out of the lines.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from histobreast.report.plots import _save

_BEFORE, _AFTER = "tab:blue", "tab:orange"


def _array(values: Sequence[float] | None) -> np.ndarray:
    return np.asarray([np.nan if v is None else v for v in (values or [])], dtype=np.float64)


def _line(ax, x: np.ndarray, y: np.ndarray, **style) -> None:  # type: ignore[no-untyped-def]
    keep = ~(np.isnan(x) | np.isnan(y))
    ax.plot(x[keep], y[keep], marker="o", markersize=4, **style)


def plot_channel_importance(
    before: Mapping[str, Sequence[float]],
    path: str | Path,
    after: Mapping[str, Sequence[float]] | None = None,
    layers: Sequence[str] | None = None,
    title: str = "SEP channel importance",
) -> Path:
    """Fig. 11: for each layer, the importance of every channel (by index) and its histogram,
    before pruning and, when ``after`` is given, for the pruned (retrained) network."""
    names = list(layers) if layers is not None else list(before)
    missing = [n for n in names if n not in before or (after is not None and n not in after)]
    if missing:
        raise KeyError(f"no importance for layers {missing}")
    stages = [("before pruning", before, _BEFORE)] + ([("after pruning", after, _AFTER)] if after is not None else [])
    fig = Figure(figsize=(4.2 * 2 * len(stages), 2.6 * len(names)), layout="constrained")
    axes = np.atleast_2d(fig.subplots(len(names), 2 * len(stages), squeeze=False))
    for row, name in enumerate(names):
        for col, (stage, values_by_layer, colour) in enumerate(stages):
            values = _array(values_by_layer[name])
            per_channel, histogram = axes[row, 2 * col], axes[row, 2 * col + 1]
            per_channel.bar(np.arange(len(values)), values, width=1.0, color=colour)
            per_channel.set(
                xlabel="channel", ylabel="importance", ylim=(0, 1), title=f"{name}, {stage} ({len(values)} ch.)"
            )
            histogram.hist(values, bins=20, range=(0, 1), color=colour)
            histogram.set(
                xlabel="importance", ylabel="channels", title=f"mean {np.mean(values):.3f}, std {np.std(values):.3f}"
            )
    fig.suptitle(title)
    return _save(fig, path)


def plot_loops_at_ratio(
    loops: Sequence[int],
    accuracy: Sequence[float | None],
    per_loop_fraction: Sequence[float],
    path: str | Path,
    target_ratio: float,
    title: str | None = None,
) -> Path:
    """Fig. 10: accuracy of the network pruned to ``target_ratio`` in R loops (solid, left axis)
    and the fraction X removed per loop (dotted, right axis) against R."""
    x = _array(loops)
    fig = Figure(figsize=(6, 4), layout="constrained")
    ax = fig.subplots()
    _line(ax, x, _array(accuracy), color="black", label="accuracy")
    ax.set(xlabel="loops R", ylabel="accuracy", xticks=x, title=title or f"Target pruning ratio O = {target_ratio:g}")
    ax.grid(alpha=0.3)
    fraction_ax = ax.twinx()
    _line(fraction_ax, x, _array(per_loop_fraction), color="tab:red", linestyle=":", label="per-loop fraction X")
    fraction_ax.set(ylabel="per-loop fraction X", ylim=(0, 1))
    handles = ax.get_legend_handles_labels()[0] + fraction_ax.get_legend_handles_labels()[0]
    ax.legend(handles=handles, loc="lower right", fontsize="small")
    return _save(fig, path)


def plot_pruning_ratio_curves(
    ratios: Sequence[float],
    accuracy: Sequence[float | None],
    macs: Sequence[float],
    params: Sequence[float],
    path: str | Path,
    title: str = "Channel pruning",
) -> Path:
    """Fig. 12: (a) accuracy against the pruning ratio O; (b) GMACs and millions of parameters
    against O (raw counts in, scaled for the axes)."""
    x = _array(ratios)
    fig = Figure(figsize=(11, 4), layout="constrained")
    acc_ax, cost_ax = fig.subplots(1, 2)
    _line(acc_ax, x, _array(accuracy), color="black")
    acc_ax.set(xlabel="pruning ratio O", ylabel="accuracy", title="(a) accuracy")
    acc_ax.grid(alpha=0.3)
    _line(cost_ax, x, _array(macs) / 1e9, color="tab:blue", label="MACs (G)")
    cost_ax.set(xlabel="pruning ratio O", ylabel="GMACs", title="(b) MACs and parameters")
    cost_ax.grid(alpha=0.3)
    params_ax = cost_ax.twinx()
    _line(params_ax, x, _array(params) / 1e6, color="tab:green", linestyle="--", label="parameters (M)")
    params_ax.set(ylabel="parameters (M)")
    handles = cost_ax.get_legend_handles_labels()[0] + params_ax.get_legend_handles_labels()[0]
    cost_ax.legend(handles=handles, loc="upper right", fontsize="small")
    fig.suptitle(title)
    return _save(fig, path)


def plot_accuracy_vs_remaining_weights(
    series: Mapping[str, tuple[Sequence[float], Sequence[float | None]]],
    path: str | Path,
    title: str = "Accuracy against model size",
) -> Path:
    """Fig. 13: ``series[method] = (remaining weight fractions, accuracies)``, one curve each
    (fractions of the unpruned network's weights, 0-1)."""
    fig = Figure(figsize=(6, 4), layout="constrained")
    ax = fig.subplots()
    for name, (remaining, accuracy) in series.items():
        x, y = _array(remaining), _array(accuracy)
        if x.shape != y.shape:
            raise ValueError(f"series {name!r}: {x.size} remaining-weight values for {y.size} accuracies")
        order = np.argsort(x)
        _line(ax, x[order], y[order], label=name)
    ax.set(xlabel="remaining weights (fraction of the unpruned network)", ylabel="accuracy", title=title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
    return _save(fig, path)
