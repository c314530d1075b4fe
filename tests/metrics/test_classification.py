"""Classification metrics against hand-computed values and numpy/scipy reference formulas."""

from __future__ import annotations

import logging
import math

import numpy as np
import pytest
import torch
from scipy.integrate import trapezoid
from scipy.stats import mannwhitneyu

from umsrep.metrics import compute_accuracy, compute_auc, compute_f1, compute_mcc, compute_roc


def confusion(y_true: np.ndarray, y_pred: np.ndarray, n: int) -> np.ndarray:
    matrix = np.zeros((n, n), dtype=np.int64)
    np.add.at(matrix, (y_true, y_pred), 1)
    return matrix


def reference_f1_per_class(y_true: np.ndarray, y_pred: np.ndarray, n: int) -> np.ndarray:
    m = confusion(y_true, y_pred, n)
    tp = np.diag(m).astype(float)
    fp = m.sum(axis=0) - tp
    fn = m.sum(axis=1) - tp
    denom = 2 * tp + fp + fn
    return np.divide(2 * tp, denom, out=np.full(n, np.nan), where=denom > 0)


def reference_mcc(y_true: np.ndarray, y_pred: np.ndarray, n: int) -> float:
    """Gorodkin's multi-class R_K from the confusion matrix."""
    m = confusion(y_true, y_pred, n).astype(float)
    t, p = m.sum(axis=1), m.sum(axis=0)
    c, s = np.trace(m), m.sum()
    denom = math.sqrt((s**2 - (p**2).sum()) * (s**2 - (t**2).sum()))
    return (c * s - (t * p).sum()) / denom


def reference_binary_auc(y_true: np.ndarray, score: np.ndarray) -> float:
    """Mann-Whitney U / (n_pos * n_neg), ties counted one half."""
    pos, neg = score[y_true == 1], score[y_true == 0]
    return mannwhitneyu(pos, neg).statistic / (len(pos) * len(neg))


def test_hand_computed_binary_case() -> None:
    y_true = [0, 1, 1, 0, 1]
    y_pred = [0, 1, 0, 0, 1]
    # tp=2 tn=2 fp=0 fn=1
    assert compute_accuracy(y_true, y_pred) == pytest.approx(0.8)
    assert compute_f1(y_true, y_pred) == pytest.approx(2 * 2 / (2 * 2 + 0 + 1))
    assert compute_mcc(y_true, y_pred) == pytest.approx((2 * 2 - 0) / math.sqrt(2 * 3 * 2 * 3))


def test_hand_computed_auc_with_tie() -> None:
    # positive scores 0.8, 0.4; negative 0.4, 0.1 -> pairs: (0.8>0.4) (0.8>0.1) (0.4=0.4 half) (0.4>0.1)
    assert compute_auc([1, 1, 0, 0], [0.8, 0.4, 0.4, 0.1]) == pytest.approx(3.5 / 4)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_binary_metrics_match_reference(seed: int) -> None:
    rng = np.random.default_rng(seed)
    y_true = rng.integers(0, 2, 200)
    y_pred = np.where(rng.random(200) < 0.7, y_true, 1 - y_true)
    score = np.clip(y_true * 0.3 + rng.random(200) * 0.7, 0, 1)
    assert compute_accuracy(y_true, y_pred) == pytest.approx((y_true == y_pred).mean())
    assert compute_f1(y_true, y_pred) == pytest.approx(reference_f1_per_class(y_true, y_pred, 2)[1])
    assert compute_mcc(y_true, y_pred) == pytest.approx(reference_mcc(y_true, y_pred, 2), abs=1e-6)
    assert compute_auc(y_true, score) == pytest.approx(
        reference_binary_auc(y_true, score), abs=1e-6
    )


@pytest.mark.parametrize("seed", [0, 1])
def test_multiclass_metrics_match_reference(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = 4
    y_true = rng.integers(0, n, 300)
    y_pred = np.where(rng.random(300) < 0.6, y_true, rng.integers(0, n, 300))
    logits = rng.normal(size=(300, n)) + 1.5 * np.eye(n)[y_true]
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)

    assert compute_f1(y_true, y_pred) == pytest.approx(
        np.nanmean(reference_f1_per_class(y_true, y_pred, n))
    )
    assert compute_mcc(y_true, y_pred) == pytest.approx(reference_mcc(y_true, y_pred, n), abs=1e-6)
    one_vs_rest = [reference_binary_auc((y_true == k).astype(int), probs[:, k]) for k in range(n)]
    assert compute_auc(y_true, probs) == pytest.approx(np.mean(one_vs_rest), abs=1e-6)


def test_mcc_is_multiclass_not_one_vs_rest_average() -> None:
    y_true = np.array([0, 0, 0, 1, 1, 2, 2, 2, 2, 1])
    y_pred = np.array([0, 1, 0, 1, 2, 2, 2, 0, 2, 1])
    ovr = np.mean(
        [reference_mcc((y_true == k).astype(int), (y_pred == k).astype(int), 2) for k in range(3)]
    )
    value = compute_mcc(y_true, y_pred)
    assert value == pytest.approx(reference_mcc(y_true, y_pred, 3), abs=1e-6)
    assert abs(value - ovr) > 1e-3


def test_explicit_num_classes_switches_to_macro() -> None:
    y_true = [0, 1, 1, 0, 1, 1]
    y_pred = [0, 1, 0, 1, 1, 1]
    per_class = reference_f1_per_class(np.array(y_true), np.array(y_pred), 2)
    assert compute_f1(y_true, y_pred) == pytest.approx(per_class[1])
    # class 2 never occurs: left out of the macro mean
    assert compute_f1(y_true, y_pred, num_classes=3) == pytest.approx(per_class.mean())
    with pytest.raises(ValueError, match="num_classes=2"):
        compute_f1([0, 2], [0, 1], num_classes=2)


def test_torch_inputs_and_perfect_prediction() -> None:
    y = torch.tensor([0, 2, 1, 2, 0])
    assert compute_accuracy(y, y) == 1.0
    assert compute_f1(y, y) == 1.0
    assert compute_mcc(y, y) == pytest.approx(1.0)
    assert compute_auc(y, torch.nn.functional.one_hot(y, 3).float()) == pytest.approx(1.0)


def test_single_class_degenerate_cases(caplog: pytest.LogCaptureFixture) -> None:
    zeros = np.zeros(6, dtype=int)
    assert compute_accuracy(zeros, zeros) == 1.0
    assert compute_f1(zeros, zeros) == 0.0  # no positives at all: zero division -> 0
    assert compute_mcc(zeros, zeros) == pytest.approx(1.0)
    assert compute_mcc([0, 1, 0, 1], [0, 0, 0, 0]) == 0.0  # constant prediction
    with caplog.at_level(logging.WARNING, logger="umsrep.metrics.classification"):
        assert math.isnan(compute_auc(np.ones(5, dtype=int), np.linspace(0, 1, 5)))
    assert "only class 1" in caplog.text


def test_multiclass_auc_skips_classes_without_samples() -> None:
    y_true = np.array([0, 0, 1, 1])
    probs = np.array([[0.8, 0.1, 0.1], [0.5, 0.4, 0.1], [0.2, 0.7, 0.1], [0.3, 0.3, 0.4]])
    expected = np.mean(
        [reference_binary_auc((y_true == k).astype(int), probs[:, k]) for k in (0, 1)]
    )
    assert compute_auc(y_true, probs) == pytest.approx(expected)


def test_two_column_scores_are_binary() -> None:
    y_true = [0, 1, 1, 0, 1]
    p1 = np.array([0.2, 0.9, 0.3, 0.4, 0.7])
    assert compute_auc(y_true, np.stack([1 - p1, p1], axis=1)) == pytest.approx(
        compute_auc(y_true, p1)
    )


def test_bad_inputs_are_refused_with_a_reason() -> None:
    with pytest.raises(ValueError, match="3 samples but y_pred has 2"):
        compute_accuracy([0, 1, 1], [0, 1])
    with pytest.raises(ValueError, match="fractional"):
        compute_f1([0, 1], [0.2, 0.9])
    with pytest.raises(ValueError, match="empty"):
        compute_mcc([], [])
    with pytest.raises(ValueError, match="score is 1-D"):
        compute_auc([0, 1, 2], [0.1, 0.5, 0.9])


def test_roc_curve_corners_and_its_area_is_the_auc():
    y, s = [0, 0, 1, 1, 0, 1], [0.1, 0.4, 0.35, 0.8, 0.8, 0.9]
    fpr, tpr, thresholds = compute_roc(y, s)
    assert (fpr[0], tpr[0]) == (0, 0) and (fpr[-1], tpr[-1]) == (1, 1)
    assert thresholds == sorted(thresholds, reverse=True)
    assert len(fpr) == len(set(s)) + 1  # one point per distinct score, and the origin
    area = trapezoid(tpr, fpr)  # scipy's: numpy's trapezoid needs numpy >= 2
    assert area == pytest.approx(compute_auc(y, s))
    with pytest.raises(ValueError, match="both classes"):
        compute_roc([1, 1], [0.2, 0.3])


@pytest.mark.parametrize("y_true, y_pred, mcc, f1", [
    ([0] * 8 + [1], [0] * 9, 0.0, 0.0),  # a constant prediction of an imbalanced set
    ([0, 0, 1], [1, 1, 1], 0.0, 0.5),
    ([0] * 5, [0] * 5, 1.0, 0.0),  # one class, all right: MCC undefined, taken as 1
    ([1] * 4, [1] * 4, 1.0, 1.0),
    ([0, 1, 0, 1, 1], [0, 1, 1, 1, 0], None, None),  # defined: the reference
])
def test_every_mcc_and_f1_of_umsrep_agrees_on_the_edge_cases(y_true, y_pred, mcc, f1) -> None:
    """The per-fold metric, the pooled table and the bootstrap statistic give one value, and
    where MCC is undefined: 1.0 for a perfect prediction, else 0.0 (torchmetrics' epsilon form
    gave 0.83 for the first case)."""
    from analysis.stats import confusion_over_images
    from analysis.tables import compute_pooled_classification

    y, p = np.array(y_true), np.array(y_pred)
    if mcc is None:
        mcc, f1 = reference_mcc(y, p, 2), reference_f1_per_class(y, p, 2)[1]
    assert compute_mcc(y, p, num_classes=2) == pytest.approx(mcc)
    assert compute_f1(y, p, num_classes=2) == pytest.approx(f1)
    pooled = compute_pooled_classification(y, p)
    assert (pooled["mcc"], pooled["f1"]) == pytest.approx((mcc, f1))
    ones = np.ones((1, len(y)))
    assert confusion_over_images(y, "mcc")(p[None], ones)[0] == pytest.approx(mcc)
    assert confusion_over_images(y, "f1")(p[None], ones)[0] == pytest.approx(f1)


def test_a_split_that_shows_two_of_three_classes_is_scored_as_three() -> None:
    """evaluate passes the task's classes: macro F1 over three classes, not binary F1."""
    y_true, y_pred = [0, 1, 0, 1], [0, 1, 1, 1]
    assert compute_f1(y_true, y_pred) == pytest.approx(0.8)  # read as binary
    assert compute_f1(y_true, y_pred, num_classes=3) == pytest.approx((2 / 3 + 0.8) / 2)
