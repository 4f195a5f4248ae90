"""Bootstrap confidence intervals of the metrics (resampling patients or images) and the paired
difference of two models' accuracy on the same images.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from typing import Any, Literal

import numpy as np

from histobreast.errors import DatasetError
from histobreast.metrics.evaluation import SCALAR_METRICS, evaluate_predictions, labelled
from histobreast.predictions import Predictions

BootstrapUnit = Literal["patient", "image"]


def _resampled_rows(
    patient_ids: Sequence[Any], n_boot: int, seed: int, by: BootstrapUnit
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """``n_boot`` resamples (with replacement) of the patients or images: per resample, the row
    indices and, for each row, which draw (0..units-1) brought it in."""
    if by == "patient":
        groups: dict[str, list[int]] = {}
        for i, pid in enumerate(patient_ids):
            groups.setdefault(str(pid), []).append(i)
        units = list(groups.values())
    elif by == "image":
        units = [[i] for i in range(len(patient_ids))]
    else:
        raise ValueError(f"bootstrap unit must be 'patient' or 'image', got {by!r}")
    rng = np.random.default_rng(seed)
    for _ in range(n_boot):
        picks = rng.integers(0, len(units), size=len(units))
        yield (
            np.array([i for u in picks for i in units[u]], dtype=np.int64),
            np.array([k for k, u in enumerate(picks) for _ in units[u]], dtype=np.int64),
        )


def _bootstrap_samples(pred: Predictions, n_boot: int, seed: int, by: BootstrapUnit) -> Iterator[Predictions]:
    """``n_boot`` resamples (with replacement) of the patients or images of ``pred``."""
    for idx, draw in _resampled_rows(pred.patient_ids, n_boot, seed, by):
        # A patient drawn twice counts as two patients in PL: give each draw its own id.
        draw_ids = [f"{pred.patient_ids[i]}#{k}" for i, k in zip(idx, draw)]
        yield Predictions(
            classes=list(pred.classes),
            image_ids=[pred.image_ids[i] for i in idx],
            probs=pred.probs[idx],
            labels=pred.labels[idx],
            patient_ids=draw_ids,
            magnifications=[pred.magnifications[i] for i in idx],
            paths=[pred.paths[i] for i in idx],
        )


def _interval(estimate: float, values: Sequence[float], level: float, **info: Any) -> dict[str, Any]:
    arr = np.asarray(values, dtype=np.float64)
    kept = arr[~np.isnan(arr)]
    tail = (1.0 - level) / 2.0
    low, high = np.quantile(kept, [tail, 1.0 - tail]) if kept.size else (math.nan, math.nan)
    return {
        "estimate": estimate,
        "low": float(low),
        "high": float(high),
        "level": level,
        "n_valid": int(kept.size),
        **info,
    }


def bootstrap_ci(
    pred: Predictions,
    metric_fn: Callable[[Predictions], float],
    n_boot: int = 1000,
    seed: int = 0,
    by: BootstrapUnit = "patient",
    level: float = 0.95,
) -> dict[str, Any]:
    """Percentile bootstrap confidence interval of ``metric_fn(pred)``.

    Resamples whole patients (default; images of one patient are correlated, so resampling
    images would give too narrow intervals) or single images. Resamples where the metric is
    NaN are left out and ``n_valid`` counts the rest. Deterministic for a given ``seed``.
    """
    values = [metric_fn(sample) for sample in _bootstrap_samples(pred, n_boot, seed, by)]
    return _interval(float(metric_fn(pred)), values, level, n_boot=n_boot, by=by, seed=seed)


def bootstrap_metrics(
    pred: Predictions,
    positive_class: str | int | None = None,
    names: Sequence[str] = SCALAR_METRICS,
    n_boot: int = 1000,
    seed: int = 0,
    by: BootstrapUnit = "patient",
    level: float = 0.95,
) -> dict[str, dict[str, Any]]:
    """:func:`bootstrap_ci` of several :func:`evaluate_predictions` metrics at once (one
    evaluation per resample): ``{name: {"estimate", "low", "high", ...}}``."""
    unknown = [n for n in names if n not in SCALAR_METRICS]
    if unknown:
        raise ValueError(f"unknown metrics {unknown}; choose from {list(SCALAR_METRICS)}")
    point = evaluate_predictions(pred, positive_class)["metrics"]
    draws = [evaluate_predictions(s, positive_class)["metrics"] for s in _bootstrap_samples(pred, n_boot, seed, by)]
    return {
        name: _interval(point[name], [d[name] for d in draws], level, n_boot=n_boot, by=by, seed=seed) for name in names
    }


def paired_accuracy_difference(
    a: Predictions,
    b: Predictions,
    n_boot: int = 1000,
    seed: int = 0,
    level: float = 0.95,
) -> dict[str, Any]:
    """Image-level accuracy of ``a`` minus that of ``b`` on the same labelled images.

    Rows are matched by image id. The interval is a percentile bootstrap over patients, and both
    tables are resampled together, so each patient's difficulty cancels out. That is why two methods
    can differ significantly even when their own intervals overlap. McNemar's exact test compares the
    images exactly one method gets right. It treats images as independent, so it is optimistic when
    one patient's images are correlated; trust the interval first.
    """
    if a.classes != b.classes:  # labels are class indices: they only pair up within one class list
        raise DatasetError(
            f"paired comparison needs the same classes in the same order; got {a.classes} and {b.classes}"
        )
    a, b = labelled(a), labelled(b)
    position = {image_id: i for i, image_id in enumerate(b.image_ids)}
    unmatched = sorted(set(a.image_ids) ^ set(position))
    if unmatched or len(position) != len(b) or len(set(a.image_ids)) != len(a):
        raise DatasetError(
            f"paired comparison needs the same images once in both tables; "
            f"{len(unmatched)} appear in only one (e.g. {unmatched[:5]}), or an id repeats"
        )
    order = np.array([position[i] for i in a.image_ids])
    if not np.array_equal(a.labels, b.labels[order]):
        wrong = [a.image_ids[i] for i in np.flatnonzero(a.labels != b.labels[order])[:5]]
        raise DatasetError(f"the two tables disagree on the true labels of some images (e.g. {wrong})")
    right_a = a.predicted == a.labels
    right_b = (b.predicted == b.labels)[order]
    draws = [
        float(right_a[idx].mean() - right_b[idx].mean())
        for idx, _ in _resampled_rows(a.patient_ids, n_boot, seed, "patient")
    ]
    only_a, only_b = int((right_a & ~right_b).sum()), int((right_b & ~right_a).sum())
    from scipy.stats import binomtest

    p_value = binomtest(min(only_a, only_b), only_a + only_b, 0.5).pvalue if only_a + only_b else 1.0
    return {
        **_interval(float(right_a.mean() - right_b.mean()), draws, level, n_boot=n_boot, by="patient", seed=seed),
        "accuracy_a": float(right_a.mean()),
        "accuracy_b": float(right_b.mean()),
        "n_images": len(a),
        "n_patients": len({str(p) for p in a.patient_ids}),
        "only_a_right": only_a,
        "only_b_right": only_b,
        "mcnemar_p": float(p_value),
    }
