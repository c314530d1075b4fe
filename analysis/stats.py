"""Significance tests between strategies: the corrected resampled t-test over cross-validation
folds, a paired bootstrap over test images, and McNemar's test on paired correct/wrong
decisions, with Holm's correction across a family of comparisons.

McNemar pairing: the two strategies' test predictions are inner-joined on (fold, sample_id), so
on held-out folds each fold's model contributes its own images and only samples both strategies
predicted are compared; where every fold model scores the same images (an external test set)
each image counts once, by the fold ensemble's decision or the fold models' majority
(``one_decision_per_image``), as McNemar's pairs must be independent. Correctness is ``y_true == y_pred`` for classification. For segmentation
the unit is the image: an image counts as correct when its IoU is at least ``iou_threshold``
(default ``umsrep.schema.SEGMENTATION_CORRECT_IOU``, the same rule training-time evaluation
writes into ``y_pred``; its docstring gives the value and the reason). A per-pixel test is not
possible from ``predictions.parquet``, which keeps one IoU per image and no masks.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from itertools import combinations

import numpy as np
import pandas as pd
from scipy import stats as sps
from statsmodels.stats.contingency_tables import mcnemar

from analysis.tables import order_strategies
from umsrep.schema import BACKBONE_LABELS, SEGMENTATION_CORRECT_IOU

EXACT = "exact binomial"
CHI2 = "chi-square (continuity corrected)"
DEFAULT_IOU_THRESHOLD = SEGMENTATION_CORRECT_IOU
BOOTSTRAP_RESAMPLES = 2000


@dataclass(frozen=True)
class McNemarResult:
    """b: pairs only A got right; c: pairs only B got right."""

    b: int
    c: int
    statistic: float
    p_value: float
    method: str


def compute_mcnemar(b: int, c: int, exact_below: int = 25) -> McNemarResult:
    """McNemar's test on the discordant counts: the exact binomial test when ``b + c <
    exact_below``, else chi-square with continuity correction ``(|b-c|-1)^2 / (b+c)``."""
    exact = (b + c) < exact_below
    res = mcnemar(np.array([[0, b], [c, 0]]), exact=exact, correction=True)
    return McNemarResult(
        int(b), int(c), float(res.statistic), float(min(res.pvalue, 1.0)), EXACT if exact else CHI2
    )


def holm(p_values: np.ndarray | list[float], alpha: float = 0.05) -> tuple[np.ndarray, np.ndarray]:
    """Holm-corrected p-values and the reject-at-alpha mask.

    The i-th smallest of m p-values becomes ``(m - i + 1) * p``, made non-decreasing along the
    sorted order and capped at 1 (Holm 1979; what statsmodels' ``multipletests(method="holm")``
    returns, without the garbage collection it runs on every call). NaN p-values (a test that
    could not be computed) stay NaN, are never rejected and do not count towards m.
    """
    p = np.asarray(p_values, dtype=float)
    corrected = np.full(p.shape, np.nan)
    ok = np.flatnonzero(~np.isnan(p))
    order = ok[np.argsort(p[ok], kind="stable")]
    m = len(order)
    scaled = (m - np.arange(m)) * p[order]
    corrected[order] = np.minimum(np.maximum.accumulate(scaled), 1.0)
    return corrected, ~np.isnan(corrected) & (corrected <= alpha)


@dataclass(frozen=True)
class CorrectedTResult:
    """mean: mean fold difference; ci_low/ci_high: its corrected t-interval; df = k - 1."""

    mean: float
    ci_low: float
    ci_high: float
    statistic: float
    p_value: float
    df: int


def compute_corrected_t(
    differences: np.ndarray | list[float], test_train_ratio: float, confidence: float = 0.95
) -> CorrectedTResult:
    """The corrected resampled t-test (Nadeau & Bengio 2003) on paired per-fold differences.

    ``t = mean(d) / sqrt((1/k + n_test/n_train) * var(d, ddof=1))``, two-sided p from Student's
    t with ``k - 1`` degrees of freedom. The ``n_test/n_train`` term widens the plain paired
    t-test's ``1/k``: the folds' training sets overlap, so their scores are correlated and the
    plain test is far too confident. The interval is ``mean ± t_{k-1} * se`` with the same
    standard error. Fewer than two folds, or differences with zero variance, give NaN.
    """
    d = np.asarray(differences, dtype=float)
    d = d[~np.isnan(d)]
    k = len(d)
    mean = float(d.mean()) if k else float("nan")
    var = float(d.var(ddof=1)) if k > 1 else 0.0
    if k < 2 or var == 0.0:
        return CorrectedTResult(mean, np.nan, np.nan, np.nan, np.nan, max(k - 1, 0))
    se = float(np.sqrt((1.0 / k + test_train_ratio) * var))
    t = mean / se
    half = float(sps.t.ppf(0.5 + confidence / 2, df=k - 1)) * se
    p = float(2 * sps.t.sf(abs(t), df=k - 1))
    return CorrectedTResult(mean, mean - half, mean + half, t, p, k - 1)


@dataclass(frozen=True)
class BootstrapResult:
    """Observed statistic of A, of B and their difference; percentile interval of the
    difference; two-sided bootstrap p; resamples whose statistic was defined."""

    value_a: float
    value_b: float
    diff: float
    ci_low: float
    ci_high: float
    p_value: float
    n_resamples: int


Statistic = Callable[[np.ndarray, np.ndarray], np.ndarray]


def mean_over_images(values: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Mean of ``values`` ``[k, n]`` (k fold models x n images) over the models and the images,
    each image counted as often as ``weights`` ``[B, n]`` says: one value per resample, ``[B]``."""
    return (values @ weights.T).mean(axis=0) / weights.sum(axis=1)


def auc_over_images(y_true: np.ndarray) -> Statistic:
    """Mean over fold models of the ROC AUC of scores ``[k, n]`` with images weighted by
    ``weights`` ``[B, n]``: the weighted Mann-Whitney form, P(score of a positive > score of a
    negative) + P(tie) / 2. NaN for a resample with one class only. ``y_true`` ``[n]``: 0/1."""
    pos = np.asarray(y_true) == 1

    def statistic(scores: np.ndarray, weights: np.ndarray) -> np.ndarray:
        w_pos, w_neg = weights[:, pos], weights[:, ~pos]
        pairs = w_pos.sum(axis=1) * w_neg.sum(axis=1)
        aucs = []
        for s in scores:  # one fold model at a time keeps memory at n_pos x n_neg
            above = s[pos][:, None] - s[~pos][None, :]
            wins = (above > 0) + 0.5 * (above == 0)
            aucs.append(((w_pos @ wins) * w_neg).sum(axis=1))
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.mean(aucs, axis=0) / pairs

    return statistic


def confusion_over_images(y_true: np.ndarray, metric: str) -> Statistic:
    """Mean over fold models of the binary F-score (of class 1) or MCC of predicted labels
    ``[k, n]`` (0/1) with images weighted by ``weights`` ``[B, n]``: the confusion counts are
    weighted sums. A zero denominator gives an F-score of 0, and an MCC of 1 where every image
    is right and 0 otherwise, as ``compute_f1``, ``compute_mcc`` and
    ``compute_pooled_classification`` do. ``y_true`` ``[n]``: 0/1."""
    if metric not in ("f1", "mcc"):
        raise ValueError(f"metric must be 'f1' or 'mcc', got {metric!r}")
    pos = (np.asarray(y_true) == 1).astype(float)

    def statistic(labels: np.ndarray, weights: np.ndarray) -> np.ndarray:
        values = []
        for pred in (np.asarray(labels) == 1).astype(float):
            tp, fp = weights @ (pred * pos), weights @ (pred * (1 - pos))
            fn, tn = weights @ ((1 - pred) * pos), weights @ ((1 - pred) * (1 - pos))
            if metric == "f1":
                num, den = 2 * tp, 2 * tp + fp + fn
                values.append(np.divide(num, den, out=np.zeros_like(num), where=den > 0))
                continue
            num, den = tp * tn - fp * fn, np.sqrt((tp + fp) * (tp + fn) * (tn + fp) * (tn + fn))
            # undefined (one class predicted or present): 1 if every image is right, else 0,
            # as umsrep.metrics.mcc_from_confusion
            perfect = ((fp + fn) == 0).astype(float)
            values.append(np.divide(num, den, out=perfect, where=den > 0))
        return np.mean(values, axis=0)

    return statistic


def resample_weights(n: int, n_resamples: int = BOOTSTRAP_RESAMPLES, seed: int = 0) -> np.ndarray:
    """``[n_resamples, n]``: how often each of n images is drawn in each bootstrap resample (n
    draws with replacement), as floats (float @ float runs in BLAS; int does not)."""
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, n, size=(n_resamples, n)) + n * np.arange(n_resamples)[:, None]
    weights = np.bincount(draws.ravel(), minlength=n_resamples * n).reshape(n_resamples, n)
    return weights.astype(float)


@dataclass(frozen=True)
class BootstrapInterval:
    """Observed statistic, percentile interval over image resamples, resamples where the
    statistic was defined."""

    value: float
    ci_low: float
    ci_high: float
    n_resamples: int


def compute_bootstrap_interval(
    values: np.ndarray,
    statistic: Statistic = mean_over_images,
    n_resamples: int = BOOTSTRAP_RESAMPLES,
    seed: int = 0,
    confidence: float = 0.95,
) -> BootstrapInterval:
    """Percentile bootstrap interval of ``statistic(values)`` over images: ``values`` ``[k, n]``
    (or ``[n]``) as in :func:`compute_paired_bootstrap`, one model's figure on an external test
    set, resampled image by image. How far a figure on 40 images can move with the images drawn
    (a Montgomery AUC on 16 TB and 24 normal films spans about +-0.15); the same resamples as a
    paired bootstrap of the same seed and size."""
    values = np.atleast_2d(np.asarray(values, float))
    if values.shape[1] == 0:
        raise ValueError("compute_bootstrap_interval: no images to resample")
    value = float(statistic(values, np.ones((1, values.shape[1])))[0])
    stats = statistic(values, resample_weights(values.shape[1], n_resamples, seed))
    stats = stats[~np.isnan(stats)]
    if len(stats) == 0:
        return BootstrapInterval(value, np.nan, np.nan, 0)
    tail = (1 - confidence) / 2
    low, high = np.quantile(stats, [tail, 1 - tail])
    return BootstrapInterval(value, float(low), float(high), len(stats))


def compute_paired_bootstrap(
    a: np.ndarray,
    b: np.ndarray,
    statistic: Statistic = mean_over_images,
    n_resamples: int = BOOTSTRAP_RESAMPLES,
    seed: int = 0,
    confidence: float = 0.95,
) -> BootstrapResult:
    """Paired bootstrap over images of ``statistic(a) - statistic(b)``.

    ``a`` and ``b`` are ``[k, n]`` (or ``[n]``): the per-image values of k fold models on the
    same n images, in the same order. Each resample draws n images with replacement and uses the
    same draw for A and B, so the pairing is kept; ``statistic(values, weights)`` sees the draw
    as how often each image was drawn, ``weights`` ``[B, n]``. The interval is the percentile
    interval; the p-value is two-sided, ``2 * min(P*(diff <= 0), P*(diff >= 0))`` with the usual
    +1 in numerator and denominator, so it is below 1 - confidence when the interval excludes 0.
    The seed makes every call reproducible on its own, whatever ran before it.
    """
    a, b = np.atleast_2d(np.asarray(a, float)), np.atleast_2d(np.asarray(b, float))
    n = a.shape[1]
    once = np.ones((1, n))
    value_a, value_b = float(statistic(a, once)[0]), float(statistic(b, once)[0])
    weights = resample_weights(n, n_resamples, seed)
    diffs = statistic(a, weights) - statistic(b, weights)
    diffs = diffs[~np.isnan(diffs)]
    m = len(diffs)
    if m == 0:
        return BootstrapResult(value_a, value_b, value_a - value_b, np.nan, np.nan, np.nan, 0)
    tail = (1 - confidence) / 2
    low, high = np.quantile(diffs, [tail, 1 - tail])
    below, above = (1 + np.sum(diffs <= 0)) / (m + 1), (1 + np.sum(diffs >= 0)) / (m + 1)
    p = float(min(1.0, 2 * min(below, above)))
    return BootstrapResult(value_a, value_b, value_a - value_b, float(low), float(high), p, m)


def correctness(
    predictions: pd.DataFrame, iou_threshold: float = DEFAULT_IOU_THRESHOLD
) -> pd.DataFrame:
    """Adds ``correct`` (bool) and ``unit`` (str) to predictions of one task (see module doc)."""
    if predictions["iou"].notna().any():
        return predictions.assign(
            correct=predictions["iou"] >= iou_threshold, unit=f"image (IoU >= {iou_threshold:g})"
        )
    return predictions.assign(correct=predictions["y_true"] == predictions["y_pred"], unit="sample")


def pair_strategies(strategies: list[str]) -> list[tuple[str, str]]:
    """Strategy pairs, baseline always second so 'A vs baseline' reads as a gain. The shared
    backbone's own rows (``BACKBONE_LABELS``) are not a strategy and pair with nothing."""
    kept = [s for s in strategies if s not in BACKBONE_LABELS]
    return list(combinations(order_strategies(kept), 2))


def one_decision_per_image(g: pd.DataFrame) -> pd.DataFrame:
    """The rows McNemar pairs, from one task's predictions with ``correct`` and ``unit``.

    McNemar counts independent pairs. Held-out folds score each image once: the fold models'
    rows are those pairs. An external test set is scored by every fold model, so each image
    would count k times (k times the discordant pairs, a p-value far too small): there each
    image counts once, by the fold ensemble's decision (fold -1) where the run has one, else
    by the majority of the fold models (a tie counts as wrong)."""
    models = g[g["fold"] >= 0]
    if models.empty or not models.duplicated(["strategy", "sample_id"]).any():
        return models
    parts = []
    for _, rows in g.groupby("strategy", sort=False):  # a strategy without an ensemble: votes
        ensemble, fold_models = rows[rows["fold"] == -1], rows[rows["fold"] >= 0]
        if not ensemble.empty:
            parts.append(ensemble.assign(unit=ensemble["unit"] + ", fold ensemble"))
            continue
        votes = fold_models.groupby(["strategy", "sample_id"], sort=False)
        k = int(votes.size().max())
        majority = votes["correct"].mean().gt(0.5).rename("correct").reset_index()
        first = votes.first().reset_index().drop(columns="correct")
        out = first.merge(majority, on=["strategy", "sample_id"]).assign(fold=-1)
        parts.append(out.assign(unit=out["unit"] + f", majority of {k} fold models"))
    return pd.concat(parts, ignore_index=True)


def pairwise_mcnemar(
    predictions: pd.DataFrame,
    split: str = "test",
    iou_threshold: float = DEFAULT_IOU_THRESHOLD,
    exact_below: int = 25,
    alpha: float = 0.05,
) -> pd.DataFrame:
    """All pairwise McNemar tests per (run, task), Holm-corrected within each (run, task).

    Columns: run, task, a, b, unit, n_pairs, acc_a, acc_b, only_a_correct, only_b_correct,
    method, statistic, p, p_holm, significant.
    """
    rows = []
    preds = predictions[predictions["split"] == split]
    for (run, task), g in preds.groupby(["run", "task"], sort=False):
        g = one_decision_per_image(correctness(g, iou_threshold))
        family = []
        for a, b in pair_strategies(list(dict.fromkeys(g["strategy"]))):
            pair = g[g["strategy"] == a].merge(
                g[g["strategy"] == b], on=["fold", "sample_id"], suffixes=("_a", "_b")
            )
            if pair.empty:
                continue
            only_a = int((pair["correct_a"] & ~pair["correct_b"]).sum())
            only_b = int((~pair["correct_a"] & pair["correct_b"]).sum())
            res = compute_mcnemar(only_a, only_b, exact_below)
            family.append(
                {
                    "run": run,
                    "task": task,
                    "a": a,
                    "b": b,
                    "unit": pair["unit_a"].iloc[0],
                    "n_pairs": len(pair),
                    "acc_a": float(pair["correct_a"].mean()),
                    "acc_b": float(pair["correct_b"].mean()),
                    "only_a_correct": only_a,
                    "only_b_correct": only_b,
                    "method": res.method,
                    "statistic": res.statistic,
                    "p": res.p_value,
                }
            )
        corrected, reject = holm([r["p"] for r in family], alpha)
        for r, pc, rej in zip(family, corrected, reject, strict=True):
            rows.append({**r, "p_holm": float(pc), "significant": bool(rej)})
    columns = [
        "run",
        "task",
        "a",
        "b",
        "unit",
        "n_pairs",
        "acc_a",
        "acc_b",
        "only_a_correct",
        "only_b_correct",
        "method",
        "statistic",
        "p",
        "p_holm",
        "significant",
    ]
    return pd.DataFrame(rows, columns=columns)
