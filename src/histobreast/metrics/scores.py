"""Metrics of integer labels: IL, patient scores and PL, per-class precision/recall/F1, PPV,
kappa, confusion matrix, ROC and AUC (scikit-learn underneath; undefined values are NaN).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from sklearn import metrics as skm


def _labels_pair(
    y_true: Sequence[int] | np.ndarray, y_pred: Sequence[int] | np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    t = np.asarray(y_true, dtype=np.int64).ravel()
    p = np.asarray(y_pred, dtype=np.int64).ravel()
    if t.shape != p.shape:
        raise ValueError(f"y_true has {t.size} labels but y_pred has {p.size}")
    if t.size == 0:
        raise ValueError("metrics need at least one image")
    return t, p


def _quiet(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Call a scikit-learn metric without its UndefinedMetricWarning: undefined values are NaN
    here and explained by a note instead."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return fn(*args, **kwargs)


def image_level_accuracy(y_true: Sequence[int] | np.ndarray, y_pred: Sequence[int] | np.ndarray) -> float:
    """IL = N_rec / N_all (paper A, eq. 11): correctly classified images over all test images."""
    t, p = _labels_pair(y_true, y_pred)
    return float(skm.accuracy_score(t, p))


def patient_scores(
    y_true: Sequence[int] | np.ndarray, y_pred: Sequence[int] | np.ndarray, patient_ids: Sequence[str]
) -> dict[str, float]:
    """PS = N_rec / N_P per patient (paper A, eq. 9), in order of first appearance.

    N_P is the number of the patient's test images and N_rec how many of them are correct.
    """
    t, p = _labels_pair(y_true, y_pred)
    if len(patient_ids) != t.size:
        raise ValueError(f"patient_ids has {len(patient_ids)} entries, expected {t.size}")
    correct: dict[str, list[bool]] = {}
    for pid, ok in zip(patient_ids, t == p):
        correct.setdefault(str(pid), []).append(bool(ok))
    return {pid: float(np.mean(flags)) for pid, flags in correct.items()}


def patient_level_accuracy(
    y_true: Sequence[int] | np.ndarray, y_pred: Sequence[int] | np.ndarray, patient_ids: Sequence[str]
) -> float:
    """PL = sum(PS) / N_patient (paper A, eq. 10): every patient weighs the same, however many
    images they have, so PL differs from IL when patients have different image counts."""
    return float(np.mean(list(patient_scores(y_true, y_pred, patient_ids).values())))


def per_class_scores(
    y_true: Sequence[int] | np.ndarray, y_pred: Sequence[int] | np.ndarray, n_classes: int
) -> dict[str, np.ndarray]:
    """Precision, recall, F1 and support of every class (paper B, eqs. 2-4), one-vs-rest.

    Precision is NaN for a class never predicted, recall for a class absent from ``y_true``,
    F1 when the class is neither present nor predicted.
    """
    t, p = _labels_pair(y_true, y_pred)
    precision, recall, f1, support = _quiet(
        skm.precision_recall_fscore_support, t, p, labels=list(range(n_classes)), zero_division=np.nan
    )
    return {"precision": precision, "recall": recall, "f1": f1, "support": support.astype(np.int64)}


def precision_recall_f1(
    y_true: Sequence[int] | np.ndarray,
    y_pred: Sequence[int] | np.ndarray,
    n_classes: int,
    positive_class: int | None = None,
) -> dict[str, float]:
    """Precision, recall and F1 of ``positive_class``, or their macro average over classes
    (NaN classes left out) when it is ``None``."""
    scores = per_class_scores(y_true, y_pred, n_classes)
    if positive_class is not None:
        return {k: float(scores[k][positive_class]) for k in ("precision", "recall", "f1")}
    return {k: _nanmean(scores[k]) for k in ("precision", "recall", "f1")}


def ppv(
    y_true: Sequence[int] | np.ndarray,
    y_pred: Sequence[int] | np.ndarray,
    n_classes: int,
    positive_class: int | None = None,
) -> float | np.ndarray:
    """PPV = TP / (TP + FP) (paper A, eq. 12) of ``positive_class``; per class (an array) when
    it is ``None``. PPV is the precision of that class."""
    precision = per_class_scores(y_true, y_pred, n_classes)["precision"]
    return precision if positive_class is None else float(precision[positive_class])


def cohen_kappa(y_true: Sequence[int] | np.ndarray, y_pred: Sequence[int] | np.ndarray, n_classes: int) -> float:
    """Kappa = (Acc - Acc_r) / (1 - Acc_r) (paper A, eq. 13): Acc the observed agreement, Acc_r
    the agreement expected by chance from the two label distributions. NaN when Acc_r = 1."""
    t, p = _labels_pair(y_true, y_pred)
    return float(_quiet(skm.cohen_kappa_score, t, p, labels=list(range(n_classes))))


def confusion_matrix(
    y_true: Sequence[int] | np.ndarray, y_pred: Sequence[int] | np.ndarray, n_classes: int
) -> np.ndarray:
    """``(C, C)`` counts: row = true class, column = predicted class."""
    t, p = _labels_pair(y_true, y_pred)
    return skm.confusion_matrix(t, p, labels=list(range(n_classes)))


def roc_curve(
    y_true: Sequence[int] | np.ndarray,
    scores: Sequence[float] | np.ndarray,
    positive_class: int,
    name: str | None = None,
) -> dict[str, Any]:
    """ROC of ``positive_class`` (called ``name`` in notes) against the rest from its probability ``scores``.

    Returns ``{"fpr", "tpr", "thresholds", "auc"}`` (lists and a float). When ``y_true`` lacks
    positives or negatives the curve is undefined: empty lists, ``auc`` NaN and a ``note``.
    """
    t = np.asarray(y_true, dtype=np.int64).ravel() == positive_class
    s = np.asarray(scores, dtype=np.float64).ravel()
    if t.shape != s.shape:
        raise ValueError(f"y_true has {t.size} labels but scores has {s.size}")
    if t.all() or not t.any():
        missing = "negatives" if t.all() else "positives"
        label = repr(name) if name is not None else positive_class
        return {
            "fpr": [],
            "tpr": [],
            "thresholds": [],
            "auc": math.nan,
            "note": f"ROC and AUC of class {label} undefined: the ground truth has no {missing}",
        }
    fpr, tpr, thresholds = skm.roc_curve(t, s)
    return {
        "fpr": fpr.tolist(),
        "tpr": tpr.tolist(),
        "thresholds": thresholds.tolist(),
        "auc": float(skm.auc(fpr, tpr)),
    }


def roc_auc(
    y_true: Sequence[int] | np.ndarray,
    probs: np.ndarray,
    positive_class: int | None = None,
    classes: Sequence[str] | None = None,
) -> dict[str, Any]:
    """AUC of ``positive_class``, or the one-vs-rest macro AUC over classes when ``None``.

    Returns ``{"auc", "per_class": [one-vs-rest AUC per class], "notes": [...]}``; a class absent
    from ``y_true`` gets NaN, a note, and is left out of the macro mean.
    """
    probs = np.asarray(probs, dtype=np.float64)
    names = list(classes) if classes is not None else [None] * probs.shape[1]
    curves = [roc_curve(y_true, probs[:, c], c, names[c]) for c in range(probs.shape[1])]
    per_class = [c["auc"] for c in curves]
    notes = [c["note"] for c in curves if "note" in c]
    auc = per_class[positive_class] if positive_class is not None else _nanmean(np.array(per_class))
    return {"auc": auc, "per_class": per_class, "notes": notes}


def _nanmean(values: np.ndarray) -> float:
    values = np.asarray(values, dtype=np.float64)
    return float(np.mean(values[~np.isnan(values)])) if (~np.isnan(values)).any() else math.nan
