"""Votes -> metrics: the two papers' evaluation criteria on integer labels or a ``Predictions`` table.

Paper A (Zhu et al. 2019, "Evaluation criteria", eqs. 9-13) reports the patient score PS, the
patient-level rate PL, the image-level rate IL, PPV and Cohen's kappa, plus F1, precision
(= PPV) and recall (= sensitivity) in its Table 4 and ROC curves in Fig. 9. Paper B (Liu et al.
2022, eqs. 1-4) reports accuracy, precision, recall and F1 per class.

Modules: :mod:`.scores` (integer labels), :mod:`.evaluation` (a ``Predictions`` table, folds),
:mod:`.bootstrap` (confidence intervals, paired differences). Conventions (docs/metrics.md says more):

- Labels are class indices ``0..C-1``; ``C = len(classes)``.
- A value that is undefined (precision of a class never predicted, recall or AUC of a class absent
  from the ground truth, kappa when both raters use one class) is ``NaN`` and a note says why;
  macro averages are over the classes where the value is defined (scikit-learn's
  ``zero_division=np.nan`` rule).
- The paper defines IL and PL over "cancer images" only; like every later work (and the paper's
  own tables, which report them for benign-vs-malignant accuracy), we compute both over **all**
  test images, whatever their class.
"""

from histobreast.metrics.bootstrap import (
    BootstrapUnit,
    bootstrap_ci,
    bootstrap_metrics,
    paired_accuracy_difference,
)
from histobreast.metrics.evaluation import (
    METRIC_INFO,
    SCALAR_METRICS,
    by_magnification,
    evaluate_predictions,
    resolve_positive_class,
    roc_curves,
    split_by_magnification,
    summarise_folds,
)
from histobreast.metrics.scores import (
    cohen_kappa,
    confusion_matrix,
    image_level_accuracy,
    patient_level_accuracy,
    patient_scores,
    per_class_scores,
    ppv,
    precision_recall_f1,
    roc_auc,
    roc_curve,
)

__all__ = [
    "BootstrapUnit",
    "METRIC_INFO",
    "SCALAR_METRICS",
    "bootstrap_ci",
    "bootstrap_metrics",
    "by_magnification",
    "cohen_kappa",
    "confusion_matrix",
    "evaluate_predictions",
    "image_level_accuracy",
    "paired_accuracy_difference",
    "patient_level_accuracy",
    "patient_scores",
    "per_class_scores",
    "ppv",
    "precision_recall_f1",
    "resolve_positive_class",
    "roc_auc",
    "roc_curve",
    "roc_curves",
    "split_by_magnification",
    "summarise_folds",
]
