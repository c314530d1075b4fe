"""ROC curves of the binary classification tasks: one curve per run, split, task and strategy,
as the points a report draws and a reader re-plots (``roc.csv``).

A bar of AUC says how well a model ranks on average; the curve says where: at what false-alarm
rate a screening model finds most of the disease, and whether two strategies with the same AUC
trade sensitivity for specificity differently (what a TB screening programme chooses by).
"""

from __future__ import annotations

import pandas as pd

from analysis.tables import order_strategies
from umsrep.metrics import compute_auc, compute_roc

ENSEMBLE = "fold ensemble"
POOLED = "held-out folds pooled"
COLUMNS = ["run", "split", "task", "strategy", "source", "n", "positives", "auc", "fpr", "tpr",
           "threshold"]


def _scores(g: pd.DataFrame, split: str) -> tuple[pd.DataFrame, str]:
    """``(sample_id, y_true, score)`` rows, one per image, and where they come from.

    A test split: the fold ensemble's rows (fold -1), or, for a run without them, each image's
    mean over the fold models (what the ensemble averages). The held-out split ("val"): each
    image as scored by the fold model that held it out, pooled over the folds."""
    if split == "val":
        return g[g["fold"] >= 0], POOLED
    ens = g[g["fold"] == -1]
    if len(ens):
        return ens, ENSEMBLE
    folds = g[g["fold"] >= 0]
    mean = folds.groupby("sample_id", sort=False).agg(y_true=("y_true", "first"),
                                                      score=("score", "mean"))
    return mean.reset_index(), ENSEMBLE


def roc_curves(predictions: pd.DataFrame) -> pd.DataFrame:
    """One row per point of each binary classification task's ROC curve (columns
    :data:`COLUMNS`; ``auc`` repeated on every point of its curve), for every split of
    ``predictions`` (a ``predictions.parquet`` table with a ``run`` column). Segmentation rows
    (``iou`` set), unlabelled images (``y_true`` -1) and tasks of more than two classes (a label or a
    prediction above 1) are left out, and so is a curve whose images hold one class only."""
    rows = []
    cls = predictions[predictions["iou"].isna() & (predictions["y_true"] >= 0)]
    for (run, split, task), g in cls.groupby(["run", "split", "task"], sort=False):
        # a task of more classes scores the predicted class, not class 1: its predictions
        # name a class above 1 somewhere, though a split may hold labels 0 and 1 only
        if not set(g["y_true"].unique()) | set(g["y_pred"].unique()) <= {0, 1}:
            continue
        for strategy in order_strategies(g["strategy"]):
            scores, source = _scores(g[g["strategy"] == strategy], str(split))
            y, s = scores["y_true"].to_numpy(int), scores["score"].to_numpy(float)
            if len(set(y)) < 2:
                continue
            fpr, tpr, thresholds = compute_roc(y, s)
            head = {"run": run, "split": split, "task": task, "strategy": strategy,
                    "source": source, "n": len(y), "positives": int(y.sum()),
                    "auc": compute_auc(y, s)}
            rows += [head | {"fpr": f, "tpr": t, "threshold": th}
                     for f, t, th in zip(fpr, tpr, thresholds, strict=True)]
    return pd.DataFrame(rows, columns=COLUMNS)
