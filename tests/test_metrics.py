"""Metrics against hand-computed values (paper A eqs. 9-13, paper B eqs. 1-4)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from histobreast import metrics as M
from histobreast.errors import DatasetError
from histobreast.predictions import Predictions

# Two patients, 6 images, binary (benign=0, malignant=1).
# P1: 4 malignant images, 3 correct (PS 0.75); P2: 2 benign images, 1 correct (PS 0.5).
Y_TRUE = np.array([1, 1, 1, 1, 0, 0])
P_MALIGNANT = np.array([0.9, 0.8, 0.7, 0.4, 0.3, 0.6])  # arg-max -> [1, 1, 1, 0, 0, 1]
PATIENTS = ["P1", "P1", "P1", "P1", "P2", "P2"]


def binary_predictions() -> Predictions:
    return Predictions(
        classes=["benign", "malignant"],
        image_ids=[f"img{i}" for i in range(6)],
        probs=np.stack([1 - P_MALIGNANT, P_MALIGNANT], axis=1),
        labels=Y_TRUE.copy(),
        patient_ids=list(PATIENTS),
        magnifications=[40, 40, 100, 100, 100, 100],
    )


def table_labels(table: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """y_true, y_pred reproducing a confusion table (rows true, columns predicted)."""
    pairs = [(t, p) for t in range(table.shape[0]) for p in range(table.shape[1]) for _ in range(table[t, p])]
    t, p = zip(*pairs)
    return np.array(t), np.array(p)


KAPPA_TABLE = np.array([[10, 2, 0], [1, 8, 1], [0, 3, 5]])


def test_il_ps_pl_hand_computed_and_pl_differs_from_il():
    y_hat = (P_MALIGNANT > 0.5).astype(int)
    assert M.image_level_accuracy(Y_TRUE, y_hat) == pytest.approx(4 / 6)
    assert M.patient_scores(Y_TRUE, y_hat, PATIENTS) == {"P1": 0.75, "P2": 0.5}
    assert M.patient_level_accuracy(Y_TRUE, y_hat, PATIENTS) == pytest.approx(0.625)


def test_binary_ppv_precision_recall_f1_kappa_confusion():
    y_hat = (P_MALIGNANT > 0.5).astype(int)
    # positive = malignant: TP 3, FP 1, FN 1
    assert M.ppv(Y_TRUE, y_hat, 2, positive_class=1) == pytest.approx(0.75)
    assert M.precision_recall_f1(Y_TRUE, y_hat, 2, positive_class=1) == pytest.approx(
        {"precision": 0.75, "recall": 0.75, "f1": 0.75}
    )
    # benign precision 1/2, malignant 3/4 -> per class and macro
    np.testing.assert_allclose(M.ppv(Y_TRUE, y_hat, 2), [0.5, 0.75])
    assert M.precision_recall_f1(Y_TRUE, y_hat, 2)["precision"] == pytest.approx(0.625)
    # po = 4/6, pe = (2*2 + 4*4)/36 = 5/9 -> kappa = (1/9)/(4/9)
    assert M.cohen_kappa(Y_TRUE, y_hat, 2) == pytest.approx(0.25)
    assert M.confusion_matrix(Y_TRUE, y_hat, 2).tolist() == [[1, 1], [1, 3]]


def test_kappa_and_per_class_scores_on_hand_made_table():
    y, y_hat = table_labels(KAPPA_TABLE)
    # po = 23/30; pe = (12*11 + 10*13 + 8*6)/900 = 310/900 -> kappa = 380/590
    assert M.cohen_kappa(y, y_hat, 3) == pytest.approx(380 / 590)
    scores = M.per_class_scores(y, y_hat, 3)
    np.testing.assert_allclose(scores["precision"], [10 / 11, 8 / 13, 5 / 6])
    np.testing.assert_allclose(scores["recall"], [10 / 12, 8 / 10, 5 / 8])
    np.testing.assert_allclose(scores["f1"], [2 * 10 / (2 * 10 + 1 + 2), 2 * 8 / (16 + 5 + 2), 2 * 5 / (10 + 1 + 3)])
    assert scores["support"].tolist() == [12, 10, 8]
    assert M.confusion_matrix(y, y_hat, 3).tolist() == KAPPA_TABLE.tolist()


def test_binary_roc_auc_counts_ordered_pairs():
    # pairs (pos, neg) with pos score > neg score: 0.9, 0.8, 0.7 beat both negatives; 0.4 beats 0.3 -> 7/8
    curve = M.roc_curve(Y_TRUE, P_MALIGNANT, positive_class=1)
    assert curve["auc"] == pytest.approx(7 / 8)
    assert curve["fpr"][0] == 0.0 and curve["tpr"][-1] == 1.0
    assert M.roc_auc(Y_TRUE, np.stack([1 - P_MALIGNANT, P_MALIGNANT], 1), positive_class=1)["auc"] == pytest.approx(
        7 / 8
    )


def test_predictions_csv_keeps_probabilities_exactly_so_a_rescore_gives_the_same_auc(tmp_path):
    probs = np.array([[1 - 1e-9, 1e-9], [1 - 3e-7, 3e-7], [0.4, 0.6]])  # 6 decimals would tie the first two
    pred = Predictions(
        classes=["benign", "malignant"],
        image_ids=["x", "y", "z"],
        probs=probs,
        labels=[0, 1, 1],
        patient_ids=["p", "q", "r"],
    )
    again = Predictions.from_csv(pred.to_csv(tmp_path / "predictions.csv"))
    np.testing.assert_array_equal(again.probs, probs)
    assert M.roc_auc(again.labels, again.probs, positive_class=1)["auc"] == 1.0


def test_roc_curves_per_magnification_all_images_or_per_class():
    pred = binary_predictions()
    assert list(M.roc_curves(pred)) == ["40X", "100X"]
    pred.magnifications = [None] * 6
    curves = M.roc_curves(pred)
    assert list(curves) == ["all images"] and curves["all images"]["auc"] == pytest.approx(7 / 8)
    four = Predictions(
        classes=list("abcd"), image_ids=list("wxyz"), probs=np.eye(4), labels=[0, 1, 2, 3], patient_ids=list("wxyz")
    )
    assert {k: v["auc"] for k, v in M.roc_curves(four).items()} == {"a": 1.0, "b": 1.0, "c": 1.0, "d": 1.0}


def test_multiclass_auc_with_class_absent_from_truth_is_nan_with_note():
    y = np.array([0, 0, 1, 1])
    probs = np.array([[0.8, 0.1, 0.1], [0.5, 0.2, 0.3], [0.1, 0.7, 0.2], [0.4, 0.3, 0.3]])
    result = M.roc_auc(y, probs)
    # class 0 vs rest: scores pos {0.8, 0.5} vs neg {0.1, 0.4} -> 4/4; class 1: pos {0.7, 0.3} vs neg {0.1, 0.2} -> 1
    assert result["per_class"][:2] == [1.0, 1.0]
    assert math.isnan(result["per_class"][2])
    assert result["auc"] == 1.0  # macro over the two defined classes
    assert result["notes"] == ["ROC and AUC of class 2 undefined: the ground truth has no positives"]
    named = M.roc_auc(y, probs, classes=["a", "b", "c"])
    assert named["notes"] == ["ROC and AUC of class 'c' undefined: the ground truth has no positives"]


def test_evaluate_predictions_collects_everything_and_is_json_serialisable():
    result = M.evaluate_predictions(binary_predictions(), positive_class="malignant")
    m = result["metrics"]
    assert m["image_level_accuracy"] == pytest.approx(4 / 6)
    assert m["patient_level_accuracy"] == pytest.approx(0.625)
    assert m["kappa"] == pytest.approx(0.25)
    assert m["ppv"] == m["precision"] == pytest.approx(0.75)
    assert m["auc"] == pytest.approx(7 / 8)
    assert result["class_counts"] == {"benign": 2, "malignant": 4}
    assert result["per_class"]["benign"]["precision"] == pytest.approx(0.5)
    assert result["confusion_matrix"] == [[1, 1], [1, 3]]
    assert result["n_patients"] == 2 and result["notes"] == []
    assert json.loads(json.dumps(result))["metrics"]["kappa"] == pytest.approx(0.25)
    # for two classes the default positive class is the second one
    assert M.evaluate_predictions(binary_predictions())["positive_class"] == "malignant"


def test_evaluate_notes_undefined_values():
    pred = Predictions(
        classes=["a", "b", "c"],
        image_ids=["x", "y"],
        probs=[[0.9, 0.05, 0.05], [0.8, 0.1, 0.1]],
        labels=[0, 1],
        patient_ids=["p", "q"],
    )
    result = M.evaluate_predictions(pred)
    assert math.isnan(result["per_class"]["b"]["precision"])
    assert math.isnan(result["per_class"]["c"]["recall"])
    assert any("'b'" in n and "never predicted" in n for n in result["notes"])
    assert any("'c'" in n and "no true images" in n for n in result["notes"])


def test_evaluate_rejects_unlabelled_and_unknown_positive_class():
    pred = binary_predictions()
    with pytest.raises(DatasetError, match="positive class 'tumour'"):
        M.evaluate_predictions(pred, positive_class="tumour")
    pred.labels[0] = -1
    with pytest.raises(DatasetError, match="1 of 6 predictions have no true label"):
        M.evaluate_predictions(pred)


def test_by_magnification_splits_and_evaluates_each():
    result = M.by_magnification(binary_predictions())
    assert list(result) == [40, 100]
    assert result[40]["n_images"] == 2 and result[40]["metrics"]["image_level_accuracy"] == 1.0
    # 100X: labels [1, 1, 0, 0], predicted [1, 0, 0, 1]
    assert result[100]["metrics"]["image_level_accuracy"] == 0.5
    assert result[100]["confusion_matrix"] == [[1, 1], [1, 1]]


def test_by_magnification_requires_magnifications():
    pred = binary_predictions()
    pred.magnifications[2] = None
    with pytest.raises(DatasetError, match="1 of 6 predictions have no magnification"):
        M.by_magnification(pred)


def test_summarise_folds_mean_std_nan_and_summed_confusion():
    folds = [
        {
            "metrics": {"kappa": 0.5, "auc": 0.9},
            "per_class": {"a": {"f1": 0.4}},
            "confusion_matrix": [[1, 0], [0, 1]],
            "patient_scores": {"p1": 1.0},
            "classes": ["a", "b"],
        },
        {
            "metrics": {"kappa": 0.7, "auc": math.nan},
            "per_class": {"a": {"f1": 0.6}},
            "confusion_matrix": [[2, 1], [0, 3]],
            "patient_scores": {"p9": 0.0},
            "classes": ["a", "b"],
        },
    ]
    summary = M.summarise_folds(folds)
    kappa = summary["metrics"]["metrics/kappa"]
    assert kappa["mean"] == pytest.approx(0.6) and kappa["std"] == pytest.approx(math.sqrt(0.02)) and kappa["n"] == 2
    auc = summary["metrics"]["metrics/auc"]
    assert auc["mean"] == 0.9 and auc["n"] == 1 and math.isnan(auc["std"])
    assert summary["metrics"]["per_class/a/f1"]["mean"] == pytest.approx(0.5)
    assert summary["confusion_matrix"] == [[3, 1], [0, 4]]
    assert not any(k.startswith("patient_scores") for k in summary["metrics"])
    with pytest.raises(ValueError, match="fold 1 has different metrics"):
        M.summarise_folds([{"kappa": 0.5}, {"auc": 0.5}])


def test_bootstrap_ci_contains_estimate_and_is_deterministic():
    rng = np.random.default_rng(1)
    n = 60
    labels = rng.integers(0, 2, n)
    p1 = labels * 0.3 + rng.uniform(0, 0.7, n)  # overlapping classes: about 75% accuracy
    pred = Predictions(
        classes=["benign", "malignant"],
        image_ids=[str(i) for i in range(n)],
        probs=np.stack([1 - p1, p1], 1),
        labels=labels,
        patient_ids=[f"p{i // 4}" for i in range(n)],
    )
    metric = lambda p: M.image_level_accuracy(p.labels, p.predicted)  # noqa: E731
    ci = M.bootstrap_ci(pred, metric, n_boot=200, seed=3)
    assert ci["low"] <= ci["estimate"] <= ci["high"] and ci["low"] < ci["high"]
    assert ci["n_valid"] == 200 and ci["by"] == "patient"
    assert M.bootstrap_ci(pred, metric, n_boot=200, seed=3) == ci
    assert M.bootstrap_ci(pred, metric, n_boot=200, seed=4) != ci


def test_bootstrap_resamples_whole_patients():
    # P1 has 1 image, P2 has 5: patient resamples hold 2, 6 or 10 images; image resamples always 6.
    pred = binary_predictions()
    pred.patient_ids = ["P1", "P2", "P2", "P2", "P2", "P2"]
    count = lambda p: float(len(p))  # noqa: E731
    by_patient = M.bootstrap_ci(pred, count, n_boot=100, seed=0, by="patient")
    assert by_patient["low"] == 2.0 and by_patient["high"] == 10.0
    by_image = M.bootstrap_ci(pred, count, n_boot=100, seed=0, by="image")
    assert by_image["low"] == by_image["high"] == 6.0


def test_bootstrap_counts_a_patient_drawn_twice_twice():
    pred = binary_predictions()
    n_patients = lambda p: float(len(set(p.patient_ids)))  # noqa: E731
    assert M.bootstrap_ci(pred, n_patients, n_boot=20, seed=0)["low"] == 2.0


def test_bootstrap_metrics_several_at_once():
    cis = M.bootstrap_metrics(binary_predictions(), names=["image_level_accuracy", "kappa"], n_boot=30, seed=0)
    assert set(cis) == {"image_level_accuracy", "kappa"}
    assert cis["image_level_accuracy"]["estimate"] == pytest.approx(4 / 6)
    with pytest.raises(ValueError, match="unknown metrics"):
        M.bootstrap_metrics(binary_predictions(), names=["accuracy"])


def _scored(right: np.ndarray, patients: list[str], order: np.ndarray | None = None) -> Predictions:
    """Binary predictions (true label 1 everywhere) that are right exactly where ``right`` says."""
    order = np.arange(len(right)) if order is None else order
    p = np.where(right, 0.9, 0.1)[order]
    return Predictions(
        classes=["benign", "malignant"],
        image_ids=[f"img{i}" for i in order],
        probs=np.stack([1 - p, p], axis=1),
        labels=np.ones(len(right), dtype=np.int64),
        patient_ids=[patients[i] for i in order],
    )


def test_paired_accuracy_difference_resamples_patients_of_both_tables_together():
    patients = [f"P{i // 4}" for i in range(80)]  # 20 patients of 4 images
    rng = np.random.default_rng(1)
    right_b = rng.random(80) < 0.5
    right_a = right_b.copy()
    right_a[::8] = True  # A also gets one more image of every other patient right
    result = M.paired_accuracy_difference(_scored(right_a, patients), _scored(right_b, patients), n_boot=500)
    assert result["estimate"] == pytest.approx(right_a.mean() - right_b.mean()) and result["estimate"] > 0
    assert result["only_b_right"] == 0 and result["only_a_right"] == int((right_a & ~right_b).sum())
    assert 0 < result["low"] <= result["estimate"] <= result["high"]  # A never loses: the interval excludes 0
    assert result["mcnemar_p"] < 0.05 and result["n_patients"] == 20
    # Rows are matched by image id, not position; the seed fixes the draws.
    shuffled = _scored(right_b, patients, order=rng.permutation(80))
    assert M.paired_accuracy_difference(_scored(right_a, patients), shuffled, n_boot=500) == result
    same = M.paired_accuracy_difference(_scored(right_b, patients), _scored(right_b, patients), n_boot=50)
    assert (same["estimate"], same["low"], same["high"], same["mcnemar_p"]) == (0.0, 0.0, 0.0, 1.0)


def test_paired_accuracy_difference_needs_the_same_images_and_labels():
    patients = ["P1"] * 3
    a = _scored(np.array([True, False, True]), patients)
    fewer = Predictions(
        classes=a.classes, image_ids=a.image_ids[:2], probs=a.probs[:2], labels=a.labels[:2], patient_ids=patients[:2]
    )
    with pytest.raises(DatasetError, match="img2"):
        M.paired_accuracy_difference(a, fewer)
    relabelled = Predictions(
        classes=a.classes, image_ids=a.image_ids, probs=a.probs, labels=np.array([1, 0, 1]), patient_ids=patients
    )
    with pytest.raises(DatasetError, match="true labels.*img1"):
        M.paired_accuracy_difference(a, relabelled)
    four_class = Predictions(
        classes=["Normal", "Benign", "InSitu", "Invasive"],
        image_ids=a.image_ids,
        probs=np.eye(4)[[3, 3, 3]],
        labels=[3, 3, 3],
        patient_ids=patients,
    )
    with pytest.raises(DatasetError, match=r"same classes.*\['benign', 'malignant'\] and \['Normal'"):
        M.paired_accuracy_difference(a, four_class)
