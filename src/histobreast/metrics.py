"""Votes -> metrics: the two papers' evaluation criteria on integer labels or a ``Predictions`` table.

Paper A (Zhu et al. 2019, "Evaluation criteria", eqs. 9-13) reports the patient score PS, the
patient-level rate PL, the image-level rate IL, PPV and Cohen's kappa, plus F1, precision
(= PPV) and recall (= sensitivity) in its Table 4 and ROC curves in Fig. 9. Paper B (Liu et al.
2022, eqs. 1-4) reports accuracy, precision, recall and F1 per class.

Conventions (docs/metrics.md says more):

- Labels are class indices ``0..C-1``; ``C = len(classes)``.
- A value that is undefined (precision of a class never predicted, recall or AUC of a class absent
  from the ground truth, kappa when both raters use one class) is ``NaN`` and a note says why;
  macro averages are over the classes where the value is defined (scikit-learn's
  ``zero_division=np.nan`` rule).
- The paper defines IL and PL over "cancer images" only; like every later work (and the paper's
  own tables, which report them for benign-vs-malignant accuracy), we compute both over **all**
  test images, whatever their class.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, Literal

import numpy as np
from sklearn import metrics as skm

from histobreast.errors import DatasetError
from histobreast.predictions import Predictions

# One-line meanings shown beside tables in reports; keys are the keys of
# ``evaluate_predictions(...)["metrics"]``.
METRIC_INFO: dict[str, tuple[str, str]] = {
    "image_level_accuracy": ("IL", "image-level accuracy: correctly classified images / all images"),
    "patient_level_accuracy": (
        "PL",
        "patient-level accuracy: mean over patients of each patient's share of correct images",
    ),
    "kappa": (
        "Kappa",
        "Cohen's kappa: agreement with the pathologists' labels beyond chance (1 = perfect, 0 = chance)",
    ),
    "ppv": ("PPV", "positive predictive value: of the images called positive, the share that truly are"),
    "precision": ("Precision", "of the images the model assigns to a class, the share that truly belong to it (= PPV)"),
    "recall": ("Recall", "sensitivity: of the images truly in a class, the share the model finds"),
    "f1": ("F1", "harmonic mean of precision and recall"),
    "auc": ("AUC", "area under the ROC curve: chance that a random positive scores above a random negative"),
}

SCALAR_METRICS: tuple[str, ...] = tuple(METRIC_INFO)

BootstrapUnit = Literal["patient", "image"]


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


def resolve_positive_class(classes: Sequence[str], positive_class: str | int | None) -> int | None:
    """Index of the positive class: a name or index; ``None`` means the second class for a
    two-class problem (BreaKHis "malignant", scikit-learn's ``pos_label=1``) and macro averages
    for more classes."""
    if positive_class is None:
        return 1 if len(classes) == 2 else None
    if isinstance(positive_class, str):
        if positive_class not in classes:
            raise DatasetError(f"positive class {positive_class!r} is not one of the classes {list(classes)}")
        return list(classes).index(positive_class)
    if not 0 <= positive_class < len(classes):
        raise DatasetError(f"positive class index {positive_class} is out of range for classes {list(classes)}")
    return int(positive_class)


def _labelled(pred: Predictions) -> Predictions:
    if len(pred) == 0:
        raise DatasetError("no predictions to evaluate (0 images)")
    unknown = int((pred.labels < 0).sum())
    if unknown:
        raise DatasetError(f"{unknown} of {len(pred)} predictions have no true label; metrics need labelled images")
    return pred


def evaluate_predictions(pred: Predictions, positive_class: str | int | None = None) -> dict[str, Any]:
    """Every metric of both papers for one set of predictions, as a JSON-serialisable dict.

    ``metrics`` holds the scalars of :data:`SCALAR_METRICS`: with a positive class (default for
    two classes: the second) PPV, precision, recall, F1 and AUC are those of that class;
    otherwise they are macro averages over classes. ``per_class`` has every class's values,
    ``confusion_matrix`` the counts (rows = true), ``patient_scores`` PS per patient, ``notes``
    says which values are undefined (NaN) and why.
    """
    pred = _labelled(pred)
    classes = list(pred.classes)
    n = len(classes)
    pos = resolve_positive_class(classes, positive_class)
    y, y_hat = pred.labels, pred.predicted
    per_class = per_class_scores(y, y_hat, n)
    roc = roc_auc(y, pred.probs, pos, classes)
    notes = list(roc["notes"])
    notes += [
        f"precision of {classes[c]!r} undefined: never predicted"
        for c in np.flatnonzero(np.isnan(per_class["precision"]))
    ]
    notes += [
        f"recall of {classes[c]!r} undefined: no true images" for c in np.flatnonzero(np.isnan(per_class["recall"]))
    ]
    kappa = cohen_kappa(y, y_hat, n)
    if math.isnan(kappa):
        notes.append("kappa undefined: chance agreement is 1 (one class only in labels and predictions)")
    prf = precision_recall_f1(y, y_hat, n, pos)
    return {
        "classes": classes,
        "positive_class": None if pos is None else classes[pos],
        "averaging": "macro average over classes" if pos is None else f"positive class {classes[pos]!r}",
        "n_images": len(pred),
        "n_patients": len(set(pred.patient_ids)),
        "class_counts": {c: int(k) for c, k in zip(classes, np.bincount(y, minlength=n))},
        "metrics": {
            "image_level_accuracy": image_level_accuracy(y, y_hat),
            "patient_level_accuracy": patient_level_accuracy(y, y_hat, pred.patient_ids),
            "kappa": kappa,
            "ppv": prf["precision"],
            **prf,
            "auc": roc["auc"],
        },
        "per_class": {
            c: {
                "precision": float(per_class["precision"][i]),
                "recall": float(per_class["recall"][i]),
                "f1": float(per_class["f1"][i]),
                "auc": roc["per_class"][i],
                "support": int(per_class["support"][i]),
            }
            for i, c in enumerate(classes)
        },
        "confusion_matrix": confusion_matrix(y, y_hat, n).tolist(),
        "patient_scores": patient_scores(y, y_hat, pred.patient_ids),
        "notes": notes,
    }


def split_by_magnification(pred: Predictions) -> dict[int, Predictions]:
    """The rows of each magnification (ascending); every image must have one."""
    missing = sum(m is None for m in pred.magnifications)
    if missing:
        raise DatasetError(f"{missing} of {len(pred)} predictions have no magnification; cannot split by magnification")
    mags = np.array(pred.magnifications)
    return {int(m): pred.subset(mags == m) for m in sorted(set(pred.magnifications))}


def by_magnification(pred: Predictions, positive_class: str | int | None = None) -> dict[int, dict[str, Any]]:
    """:func:`evaluate_predictions` for each magnification (BreaKHis 40/100/200/400X)."""
    return {mag: evaluate_predictions(part, positive_class) for mag, part in split_by_magnification(pred).items()}


def roc_curves(pred: Predictions, positive_class: str | int | None = None) -> dict[str, dict[str, Any]]:
    """The ROC curves a report plots: with a positive class (default for two classes: the
    second), one per magnification (paper A, Fig. 9) or one over all images when they have no
    magnification; for more classes without one, a one-vs-rest curve per class."""
    pred = _labelled(pred)
    pos = resolve_positive_class(pred.classes, positive_class)
    if pos is None:
        return {c: roc_curve(pred.labels, pred.probs[:, i], i, c) for i, c in enumerate(pred.classes)}
    name = pred.classes[pos]
    if any(m is None for m in pred.magnifications):
        return {"all images": roc_curve(pred.labels, pred.probs[:, pos], pos, name)}
    return {
        f"{mag}X": roc_curve(part.labels, part.probs[:, pos], pos, name)
        for mag, part in split_by_magnification(pred).items()
    }


def _numeric_leaves(obj: Mapping[str, Any], prefix: str = "") -> Iterator[tuple[str, float]]:
    for key, value in obj.items():
        path = f"{prefix}{key}"
        if key == "patient_scores":
            continue  # per-patient values: the patients differ from fold to fold
        if isinstance(value, Mapping):
            yield from _numeric_leaves(value, f"{path}/")
        elif isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool):
            yield path, float(value)


def summarise_folds(results: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Mean ± standard deviation over folds of every numeric value of each fold's result dict.

    Nested keys are joined with ``/`` (``metrics/kappa``, ``per_class/benign/f1``); strings,
    lists and ``patient_scores`` are not averaged. The std is the sample std (``ddof=1``; NaN
    for one fold); NaN fold values are left out and ``n`` counts the folds used. Confusion
    matrices, where present, are summed, and ``classes`` is kept when every fold has the same.
    Every fold must have the same numeric keys.
    """
    if not results:
        raise ValueError("summarise_folds needs at least one fold")
    leaves = [dict(_numeric_leaves(r)) for r in results]
    keys = list(leaves[0])
    for i, fold in enumerate(leaves[1:], start=1):
        if set(fold) != set(keys):
            diff = sorted(set(fold) ^ set(keys))
            raise ValueError(f"fold {i} has different metrics from fold 0: {diff}")
    summary: dict[str, Any] = {"n_folds": len(results), "metrics": {}}
    if all("classes" in r and list(r["classes"]) == list(results[0]["classes"]) for r in results):
        summary["classes"] = list(results[0]["classes"])
    for key in keys:
        values = np.array([fold[key] for fold in leaves])
        kept = values[~np.isnan(values)]
        summary["metrics"][key] = {
            "mean": float(kept.mean()) if kept.size else math.nan,
            "std": float(kept.std(ddof=1)) if kept.size > 1 else math.nan,
            "n": int(kept.size),
            "values": values.tolist(),
        }
    if all("confusion_matrix" in r for r in results):
        summary["confusion_matrix"] = np.sum([np.asarray(r["confusion_matrix"]) for r in results], axis=0).tolist()
    return summary


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
    a, b = _labelled(a), _labelled(b)
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
