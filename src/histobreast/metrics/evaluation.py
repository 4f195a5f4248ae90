"""A ``Predictions`` table -> every metric of the two papers, per magnification, ROC curves,
and the mean and spread over folds.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np

from histobreast.errors import DatasetError
from histobreast.metrics.scores import (
    cohen_kappa,
    confusion_matrix,
    image_level_accuracy,
    patient_level_accuracy,
    patient_scores,
    per_class_scores,
    precision_recall_f1,
    roc_auc,
    roc_curve,
)
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


def labelled(pred: Predictions) -> Predictions:
    """``pred`` itself, checked to hold at least one image and a true label for every image."""
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
    pred = labelled(pred)
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
    pred = labelled(pred)
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
