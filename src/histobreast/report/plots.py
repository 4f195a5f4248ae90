"""PNG figures for reports: ROC curves (paper A, Fig. 9), confusion matrices and per-class
scores (paper B, Fig. 7), a generic line chart, training curves from the engine's CSV log and
the case cards of ``predict --review``.
(The compression study's figures, paper A Figs. 10-13, are in ``report.compression``.)

Figures are built on ``matplotlib.figure.Figure`` (Agg, no pyplot global state, safe in
worker threads) and written atomically; every function returns the PNG path.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from histobreast.atomic import atomic_path
from histobreast.errors import HistobreastError

DPI = 120


def _save(fig: Figure, path: str | Path) -> Path:
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=DPI, bbox_inches="tight")
    return path


def plot_roc_curves(curves: Mapping[str, Mapping[str, Any]], path: str | Path, title: str = "ROC curves") -> Path:
    """Several ROC curves on one axes (paper A, Fig. 9: one per magnification).

    ``curves[label]`` is a ``metrics.roc_curve`` result (``fpr``, ``tpr``, ``auc``); an
    undefined curve (no positives or negatives) is listed in the legend as "AUC undefined".
    """
    fig = Figure(figsize=(5.5, 5))
    ax = fig.subplots()
    ax.plot([0, 1], [0, 1], color="0.7", linestyle="--", linewidth=1, label="chance")
    for label, curve in curves.items():
        if curve["fpr"]:
            ax.plot(curve["fpr"], curve["tpr"], linewidth=1.8, label=f"{label} (AUC {curve['auc']:.3f})")
        else:
            ax.plot([], [], linestyle="none", label=f"{label} (AUC undefined: one class only)")
    ax.set(
        xlim=(0, 1),
        ylim=(0, 1.01),
        xlabel="False positive rate (1 − specificity)",
        ylabel="True positive rate (sensitivity)",
        title=title,
    )
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize="small")
    return _save(fig, path)


def plot_confusion_matrix(
    matrix: Sequence[Sequence[int]] | np.ndarray,
    classes: Sequence[str],
    path: str | Path,
    title: str = "Confusion matrix",
) -> Path:
    """Counts (left) and row-normalised shares (right: each true class sums to 100%), true
    classes as rows (paper B, Fig. 7a)."""
    counts = np.asarray(matrix, dtype=np.int64)
    totals = counts.sum(axis=1, keepdims=True)
    shares = np.divide(counts, totals, out=np.zeros(counts.shape), where=totals > 0)
    size = 2.5 + 0.7 * len(classes)
    fig = Figure(figsize=(2 * size + 1, size), layout="constrained")
    axes = fig.subplots(1, 2)
    for ax, values, text, subtitle in (
        (axes[0], counts, [[f"{v:d}" for v in row] for row in counts], "counts"),
        (axes[1], shares, [[f"{v:.0%}" for v in row] for row in shares], "share of each true class"),
    ):
        ax.imshow(values, cmap="Blues", vmin=0, vmax=max(values.max(), 1e-9))
        high = values.max() * 0.6
        for i in range(len(classes)):
            for j in range(len(classes)):
                ax.text(j, i, text[i][j], ha="center", va="center", color="white" if values[i, j] > high else "black")
        ax.set_xticks(range(len(classes)), labels=list(classes), rotation=30, ha="right")
        ax.set_yticks(range(len(classes)), labels=list(classes))
        ax.set(xlabel="Predicted class", ylabel="True class", title=f"{title} ({subtitle})")
    return _save(fig, path)


def plot_per_class_scores(
    per_class: Mapping[str, Mapping[str, float]], path: str | Path, title: str = "Precision, recall and F1 per class"
) -> Path:
    """Grouped bars of precision, recall and F1 for each class (paper B, Fig. 7b); undefined
    (NaN) values are drawn as empty bars labelled "n/a"."""
    scores = ("precision", "recall", "f1")
    classes = list(per_class)
    x = np.arange(len(classes))
    width = 0.8 / len(scores)
    fig = Figure(figsize=(max(5.0, 1.6 * len(classes) + 2), 4))
    ax = fig.subplots()
    for k, score in enumerate(scores):
        values = np.array([per_class[c][score] for c in classes], dtype=np.float64)
        bars = ax.bar(
            x + (k - 1) * width, np.nan_to_num(values), width, label=score.capitalize() if score != "f1" else "F1"
        )
        ax.bar_label(
            bars, labels=["n/a" if math.isnan(v) else f"{v:.2f}" for v in values], fontsize="x-small", padding=1
        )
    ax.set_xticks(x, labels=classes)
    ax.set(ylim=(0, 1.22), yticks=np.linspace(0, 1, 6), ylabel="score", title=title)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(loc="upper center", ncols=len(scores), fontsize="small")
    return _save(fig, path)


def plot_lines(
    x: Sequence[float],
    series: Mapping[str, Sequence[float]],
    path: str | Path,
    *,
    xlabel: str,
    ylabel: str,
    title: str = "",
    log_y: bool = False,
) -> Path:
    """Named series against a shared ``x`` (e.g. accuracy of several runs against epochs or a
    hyper-parameter). NaN points are left out of each line."""
    fig = Figure(figsize=(6, 4))
    ax = fig.subplots()
    _draw_series(ax, np.asarray(x, dtype=np.float64), {k: np.asarray(v, dtype=np.float64) for k, v in series.items()})
    ax.set(xlabel=xlabel, ylabel=ylabel, title=title)
    if log_y:
        ax.set_yscale("log")
    return _save(fig, path)


def _draw_series(ax: Any, x: np.ndarray, series: Mapping[str, np.ndarray]) -> None:
    for name, y in series.items():
        keep = ~(np.isnan(x) | np.isnan(y))
        ax.plot(x[keep], y[keep], marker="o" if keep.sum() <= 50 else None, markersize=3, label=name)
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")


def read_numeric_csv(path: str | Path) -> dict[str, np.ndarray]:
    """The numeric columns of a CSV log (empty cells -> NaN); a column with any non-numeric
    value (e.g. a "phase" column) is not numeric and not returned."""
    path = Path(path)
    if not path.is_file():
        raise HistobreastError(f"{path}: training log not found")
    with path.open(newline="") as fh:
        reader = csv.DictReader(fh)
        rows = list(reader)
        names = reader.fieldnames or []
    if not rows:
        raise HistobreastError(f"{path}: training log has no rows")
    columns: dict[str, np.ndarray] = {}
    for name in names:
        try:
            columns[name] = np.array([float(r[name]) if r.get(name) not in (None, "") else math.nan for r in rows])
        except ValueError:
            continue  # text column by design (documented above)
    return columns


def _x_axis(columns: Mapping[str, np.ndarray]) -> tuple[str, np.ndarray]:
    """``epoch`` unless it repeats across rows of one epoch and ``step`` exists, then ``step``;
    the row number when neither exists."""
    epoch, step = columns.get("epoch"), columns.get("step")
    if epoch is not None and (step is None or len(np.unique(epoch[~np.isnan(epoch)])) == (~np.isnan(epoch)).sum()):
        return "epoch", epoch
    if step is not None:
        return "step", step
    return "row", np.arange(len(next(iter(columns.values()))), dtype=np.float64)


def _panel(name: str) -> str:
    lowered = name.lower()
    if "loss" in lowered:
        return "loss"
    if lowered == "lr" or "learning_rate" in lowered or lowered.endswith("_lr"):
        return "learning rate"
    if any(k in lowered for k in ("acc", "kappa", "f1", "auc", "precision", "recall")):
        return "accuracy and scores"
    return "other"


def plot_training_curves(csv_path: str | Path, path: str | Path, title: str = "Training curves") -> Path:
    """Every numeric column of the engine's CSV log against epoch (or step), one panel each for
    losses, accuracy-like scores, learning rate and anything else."""
    columns = read_numeric_csv(csv_path)
    panels: dict[str, dict[str, np.ndarray]] = {}
    for name, values in columns.items():
        if name not in ("epoch", "step") and not np.isnan(values).all():
            panels.setdefault(_panel(name), {})[name] = values
    if not panels:
        raise HistobreastError(f"{csv_path}: training log has no numeric columns to plot besides epoch/step")
    xname, x = _x_axis(columns)
    order = [p for p in ("loss", "accuracy and scores", "learning rate", "other") if p in panels]
    fig = Figure(figsize=(6, 2.6 * len(order)))
    axes = np.atleast_1d(fig.subplots(len(order), 1, sharex=True, squeeze=False)[:, 0])
    for ax, panel in zip(axes, order):
        _draw_series(ax, x, panels[panel])
        ax.set_ylabel(panel)
        if panel == "learning rate" and all(np.nanmin(v) > 0 for v in panels[panel].values()):
            ax.set_yscale("log")
    axes[0].set_title(title)
    axes[-1].set_xlabel(xname)
    return _save(fig, path)


def plot_case(
    image: np.ndarray,
    classes: Sequence[str],
    probs: Sequence[float],
    path: str | Path,
    *,
    title: str,
    note: str = "",
    highlight: tuple[int, int, int] = (70, 150, 255),
) -> Path:
    """A case card for review: the image beside its class probabilities, the called class's bar in
    ``highlight`` (RGB).

    ``image`` is an ``(H, W, 3)`` uint8 thumbnail; ``note`` (e.g. which views disagree) goes under it.
    """
    values = np.asarray(probs, dtype=np.float64)
    called = int(values.argmax())
    fig = Figure(figsize=(7.5, 3.2), layout="constrained")  # keeps class names clear of the image
    image_ax, bar_ax = fig.subplots(1, 2, gridspec_kw={"width_ratios": [1.35, 1]})
    image_ax.imshow(image)
    image_ax.set_axis_off()
    y = np.arange(len(classes))[::-1]  # first class on top
    colours = [tuple(c / 255 for c in highlight) if k == called else "0.65" for k in range(len(classes))]
    bars = bar_ax.barh(y, values, color=colours)
    bar_ax.bar_label(bars, labels=[f"{v:.2f}" for v in values], fontsize="small", padding=2)
    bar_ax.set_yticks(y, labels=list(classes))
    bar_ax.set(xlim=(0, 1.18), xticks=[0, 0.5, 1], xlabel="probability")
    bar_ax.spines[["top", "right"]].set_visible(False)
    fig.suptitle(title, fontsize="medium")
    if note:
        fig.supxlabel(note, fontsize="small")
    return _save(fig, path)
