"""Classification metrics: accuracy, F1, MCC (labels in), ROC AUC and the ROC curve (scores in).

Labels are integer class indices ``[N]`` (0..C-1). Binary tasks have C = 2 with 1 as the
positive class. The number of classes is ``num_classes`` when given, otherwise
``max(label) + 1`` over ``y_true`` and ``y_pred`` (at least 2). All functions are pure and
return a Python float; they wrap ``torchmetrics.functional``.
"""

from __future__ import annotations

import logging
import math
import warnings

import numpy as np
import torch
from torchmetrics.functional.classification import (
    binary_auroc,
    binary_f1_score,
    binary_roc,
    multiclass_accuracy,
    multiclass_auroc,
    multiclass_f1_score,
)

from umsrep.metrics._inputs import ArrayLike, check_same_length, labels_to_long, to_tensor

logger = logging.getLogger(__name__)


def _labels_pair(
    y_true: ArrayLike, y_pred: ArrayLike, num_classes: int | None
) -> tuple[torch.Tensor, torch.Tensor, int]:
    true = labels_to_long(y_true, "y_true")
    pred = labels_to_long(y_pred, "y_pred")
    check_same_length(true, pred, ("y_true", "y_pred"))
    seen = int(max(true.max(), pred.max())) + 1
    if num_classes is None:
        return true, pred, max(2, seen)
    if seen > num_classes:
        raise ValueError(
            f"label {seen - 1} found but num_classes={num_classes}; labels must be 0..{num_classes - 1}"
        )
    return true, pred, num_classes


def compute_accuracy(y_true: ArrayLike, y_pred: ArrayLike) -> float:
    """Fraction of samples whose predicted label equals the true label (micro accuracy)."""
    true, pred, n = _labels_pair(y_true, y_pred, None)
    return float(multiclass_accuracy(pred, true, num_classes=n, average="micro"))


def compute_f1(y_true: ArrayLike, y_pred: ArrayLike, num_classes: int | None = None) -> float:
    """F1 score: binary F1 of class 1 when there are 2 classes, macro F1 when more.

    With no positive sample and no positive prediction the binary F1 is 0.0 (zero division).
    For macro F1, classes absent from both ``y_true`` and ``y_pred`` are left out of the mean.
    """
    true, pred, n = _labels_pair(y_true, y_pred, num_classes)
    if n == 2:
        return float(binary_f1_score(pred, true))
    return float(multiclass_f1_score(pred, true, num_classes=n, average="macro"))


def compute_mcc(y_true: ArrayLike, y_pred: ArrayLike, num_classes: int | None = None) -> float:
    """Matthews correlation coefficient, the true multi-class form (Gorodkin's R_K).

    Not an average of one-vs-rest MCCs. Where it is undefined (a zero denominator:
    one class predicted, or one class present): 1.0 for a perfect prediction, else 0.0
    (``mcc_from_confusion``, the rule of every MCC umsrep and its analysis compute).
    """
    true, pred, n = _labels_pair(y_true, y_pred, num_classes)
    cm = torch.zeros(n * n, dtype=torch.float64)
    cm.index_add_(0, true * n + pred, torch.ones_like(true, dtype=torch.float64))
    return mcc_from_confusion(cm.view(n, n).numpy())


def mcc_from_confusion(cm: np.ndarray) -> float:
    """Gorodkin's R_K of a confusion matrix ``[true, predicted]`` (counts or weights):
    ``(c s - sum_k p_k t_k) / sqrt((s^2 - sum p_k^2) (s^2 - sum t_k^2))``. With a zero
    denominator (one class predicted, or one present) 1.0 when every sample is right, else 0.0:
    torchmetrics' epsilon form gave a constant prediction of an imbalanced set a non-zero
    value (0.83 for 8 negatives and 1 positive all called negative)."""
    cm = np.asarray(cm, dtype=float)
    s, c = cm.sum(), np.trace(cm)
    t, p = cm.sum(axis=1), cm.sum(axis=0)
    den = np.sqrt((s**2 - (p**2).sum()) * (s**2 - (t**2).sum()))
    if not den > 0:
        return 1.0 if s > 0 and c == s else 0.0
    return float((c * s - (t * p).sum()) / den)


def compute_auc(y_true: ArrayLike, score: ArrayLike) -> float:
    """ROC AUC from scores.

    Args:
        y_true: ``[N]`` integer labels.
        score: ``[N]`` score of the positive class (binary), or ``[N, C]`` per-class scores.
            ``[N, 2]`` is treated as binary with column 1 positive. With ``C > 2`` the result is
            the macro mean of one-vs-rest AUCs over the classes present in ``y_true``; rows are
            softmaxed by torchmetrics unless they already lie in [0, 1], so pass probabilities.

    Returns NaN (and logs a warning) when ``y_true`` holds a single class: AUC is undefined.
    """
    true = labels_to_long(y_true, "y_true")
    scores = to_tensor(score, "score").float()
    check_same_length(true, scores, ("y_true", "score"))
    if scores.ndim == 2 and scores.shape[1] == 2:
        scores = scores[:, 1]
    present = torch.unique(true)
    if present.numel() < 2:
        logger.warning(
            "compute_auc: y_true holds only class %d over %d samples; ROC AUC is undefined, "
            "returning NaN",
            int(present[0]),
            true.numel(),
        )
        return math.nan
    if scores.ndim == 1:
        if int(true.max()) > 1:
            raise ValueError(
                f"y_true has label {int(true.max())} but score is 1-D; pass [N, C] scores"
            )
        return float(binary_auroc(scores, true))
    n = scores.shape[1]
    if int(true.max()) >= n:
        raise ValueError(f"y_true has label {int(true.max())} but score has only {n} columns")
    with warnings.catch_warnings():
        # torchmetrics warns about classes without positives; they are dropped just below
        warnings.simplefilter("ignore", UserWarning)
        per_class = multiclass_auroc(scores, true, num_classes=n, average="none")
    return float(per_class[present].mean())


def compute_roc(
    y_true: ArrayLike, score: ArrayLike
) -> tuple[list[float], list[float], list[float]]:
    """The binary ROC curve: ``(fpr, tpr, thresholds)`` from ``y_true`` ``[N]`` (0/1) and
    ``score`` ``[N]`` (the probability of class 1), from (0, 0) to (1, 1), one point per
    distinct score, thresholds falling (torchmetrics ``binary_roc``, which reads scores outside
    0-1 as logits and thresholds their sigmoid: the same curve). Raises ``ValueError`` unless
    both classes are present."""
    true = labels_to_long(y_true, "y_true")
    scores = to_tensor(score, "score").float()
    check_same_length(true, scores, ("y_true", "score"))
    if scores.ndim != 1 or set(torch.unique(true).tolist()) != {0, 1}:
        raise ValueError("compute_roc needs 1-D scores and labels of both classes 0 and 1")
    fpr, tpr, thresholds = binary_roc(scores, true)
    return fpr.tolist(), tpr.tolist(), thresholds.tolist()
