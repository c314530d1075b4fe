"""McNemar's test between every pair of strategies (baseline included), per task, with Holm's
correction across each task's family of comparisons.

Pairing: the two strategies' test predictions are inner-joined on (fold, sample_id), so each
fold's model contributes its own paired observations and only samples both strategies predicted
are compared. Correctness is ``y_true == y_pred`` for classification. For segmentation the unit
is the image: an image counts as correct when its IoU is at least ``iou_threshold`` (default
0.9, chosen because lung-field IoUs in the paper are 0.94-0.98, so 0.9 separates usable masks
from failed ones). A per-pixel test is not possible from ``predictions.parquet``, which keeps
one IoU per image and no masks.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import combinations

import numpy as np
import pandas as pd
from statsmodels.stats.contingency_tables import mcnemar
from statsmodels.stats.multitest import multipletests

from analysis.tables import order_strategies

EXACT = "exact binomial"
CHI2 = "chi-square (continuity corrected)"
DEFAULT_IOU_THRESHOLD = 0.9


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
    """Holm-corrected p-values and the reject-at-alpha mask (statsmodels ``multipletests``)."""
    p = np.asarray(p_values, dtype=float)
    if p.size == 0:
        return p, np.zeros(0, dtype=bool)
    reject, corrected, _, _ = multipletests(p, alpha=alpha, method="holm")
    return corrected, reject


def correctness(
    predictions: pd.DataFrame, iou_threshold: float = DEFAULT_IOU_THRESHOLD
) -> pd.DataFrame:
    """Adds ``correct`` (bool) and ``unit`` (str) to predictions of one task (see module doc)."""
    if predictions["iou"].notna().any():
        return predictions.assign(
            correct=predictions["iou"] >= iou_threshold, unit=f"image (IoU >= {iou_threshold:g})"
        )
    return predictions.assign(correct=predictions["y_true"] == predictions["y_pred"], unit="sample")


def _pair_strategies(strategies: list[str]) -> list[tuple[str, str]]:
    """Strategy pairs, baseline always second so 'A vs baseline' reads as a gain."""
    return list(combinations(order_strategies(strategies), 2))


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
        g = correctness(g, iou_threshold)
        family = []
        for a, b in _pair_strategies(list(dict.fromkeys(g["strategy"]))):
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
