"""The significance table: every pair of strategies (baseline included, baseline second), every
task and main metric, three tests side by side (``significance.csv`` of the report).

``corrected_t`` (split ``val``)
    The corrected resampled t-test (:func:`analysis.stats.compute_corrected_t`) on the k
    per-fold values of ``metrics.parquet`` on each fold's held-out part. ``n_test/n_train`` is
    counted in ``predictions.parquet``'s ``val`` rows of the task, over every fold of the run:
    fold j's held-out images are the ones it scored, its training images those the other folds
    held out (the folds partition the fine-tuning set). That is the fold's whole training pool,
    the part the training loop sets aside for early stopping included: the learner saw it, as
    the inner search does in Nadeau & Bengio's setting. For K folds that partition the set the
    ratio of mean sizes is ``1/(K-1)``; counting keeps it right when a pair has values on fewer
    folds than the run (a failed stage), where ``1/k`` and ``n_test/n_train`` part ways.
    Without ``val`` predictions the ratio is ``1/(K-1)`` with K the folds in the metrics.
``bootstrap`` (split ``test``, and each ``test:<dataset>``)
    A paired bootstrap over the images of the external test set, pooled and, when it pools
    several datasets, on each dataset on its own (the runner's ``test:<dataset>`` splits)
    (:func:`analysis.stats.compute_paired_bootstrap`). Every fold model scores every test image,
    so an image's value is the mean over the k fold models of its Dice or IoU (segmentation) or
    of being right (classification accuracy); AUC is the mean over fold models of each one's AUC
    on the resampled images, for binary tasks. Only images that both strategies' fold models all
    scored are used; a test split that is the held-out folds themselves (no external set: each
    image is scored by one fold model) gives no bootstrap rows.
``mcnemar`` (split ``test``)
    McNemar's test on paired correct/wrong decisions pooled over folds
    (:func:`analysis.stats.pairwise_mcnemar`); ``metric`` says what counts as correct.

``p_holm`` is Holm-corrected within each (run, task, metric, split, test) family. Denoising
is left out: its comparison is the shared backbone against the separate denoiser, not a pair of
strategies (Table 2 of the report shows it per noise level).
"""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd

from analysis.stats import (
    BOOTSTRAP_RESAMPLES,
    DEFAULT_IOU_THRESHOLD,
    auc_over_images,
    compute_corrected_t,
    compute_paired_bootstrap,
    holm,
    mean_over_images,
    pair_strategies,
)
from analysis.tables import dataset_splits
from umsrep.schema import BACKBONE_LABELS

log = logging.getLogger(__name__)

COLUMNS = [
    "task",
    "metric",
    "split",
    "a",
    "b",
    "test",
    "mean_a",
    "mean_b",
    "diff",
    "ci_low",
    "ci_high",
    "statistic",
    "p",
    "p_holm",
]
TESTS = ("corrected_t", "bootstrap", "mcnemar")
TESTED_METRICS = ("dice", "iou", "accuracy", "f1", "mcc", "auc")
CV_SPLIT = "val"


def fold_size_ratio(val_predictions: pd.DataFrame) -> float:
    """``mean n_test / mean n_train`` over folds from one task's ``val`` predictions (see the
    module doc); NaN when there are none."""
    ids = val_predictions[val_predictions["fold"] >= 0].groupby("fold")["sample_id"]
    held_out = {fold: set(s) for fold, s in ids}
    if len(held_out) < 2:
        return float("nan")
    everything = set().union(*held_out.values())
    n_test = [len(s) for s in held_out.values()]
    n_train = [len(everything - s) for s in held_out.values()]
    return float(np.mean(n_test) / np.mean(n_train))


def corrected_t_rows(metrics: pd.DataFrame, predictions: pd.DataFrame) -> list[dict]:
    """Corrected resampled t-tests on the ``val`` fold values of every tested metric."""
    m = metrics[
        (metrics["split"] == CV_SPLIT)
        & (metrics["noise"].fillna("") == "")
        & (metrics["fold"] >= 0)
        & metrics["metric"].isin(TESTED_METRICS)
        & ~metrics["strategy"].isin(BACKBONE_LABELS)
    ]
    val = predictions[predictions["split"] == CV_SPLIT]
    rows = []
    for (run, task), g in m.groupby(["run", "task"], sort=False):
        ratio = fold_size_ratio(val[(val["run"] == run) & (val["task"] == task)])
        if np.isnan(ratio) and g["fold"].nunique() > 1:
            ratio = 1 / (g["fold"].nunique() - 1)
            log.info("%s/%s: no val predictions; n_test/n_train = 1/(folds - 1)", run, task)
        for metric in [x for x in TESTED_METRICS if x in set(g["metric"])]:
            wide = g[g["metric"] == metric].pivot_table(
                index="fold", columns="strategy", values="value", aggfunc="mean"
            )
            present = [s for s in dict.fromkeys(g["strategy"]) if s in wide.columns]
            for a, b in pair_strategies(present):
                pair = wide[[a, b]].dropna()
                if pair.empty:
                    continue
                res = compute_corrected_t(pair[a] - pair[b], ratio)
                rows.append(
                    _row(run, task, metric, CV_SPLIT, a, b, "corrected_t")
                    | _values(pair[a].mean(), pair[b].mean(), res.mean, res.ci_low, res.ci_high)
                    | {"statistic": res.statistic, "p": res.p_value}
                )
    return rows


def _row(run, task, metric, split, a, b, test) -> dict:
    return {
        "run": run,
        "task": task,
        "metric": metric,
        "split": split,
        "a": a,
        "b": b,
        "test": test,
    }


def _values(mean_a, mean_b, diff, ci_low, ci_high) -> dict:
    return {"mean_a": mean_a, "mean_b": mean_b, "diff": diff, "ci_low": ci_low, "ci_high": ci_high}


def task_kind(predictions: pd.DataFrame) -> str:
    """The kind of a task from its prediction rows: segmentation, classification or denoise."""
    if predictions["iou"].notna().any():
        return "segmentation"
    return "classification" if (predictions["y_true"] >= 0).all() else "denoise"


def _by_strategy(g: pd.DataFrame, columns: list[str]) -> dict[str, pd.DataFrame]:
    """One task's fold-model rows (fold >= 0) per strategy: index fold, columns (value column,
    sample_id), NaN where a fold model did not score an image."""
    rows = g[g["fold"] >= 0].drop_duplicates(["strategy", "fold", "sample_id"])
    wide = rows.set_index(["strategy", "fold", "sample_id"])[[*columns, "y_true"]]
    wide = wide.astype(float).unstack("sample_id")
    return {s: wide.xs(s, level="strategy") for s in wide.index.unique("strategy")}


def _paired_images(wide: dict[str, pd.DataFrame], a: str, b: str, columns: list[str]):
    """Per (strategy, column) a ``[k, n]`` array over the folds both strategies have and the n
    images all those fold models scored, and the images' labels ``[n]``; None if n < 2."""
    folds = wide[a].index.intersection(wide[b].index)
    if folds.empty:
        return None
    labels_a, labels_b = wide[a].loc[folds, "y_true"], wide[b].loc[folds, "y_true"]
    scored = (labels_a.notna() & labels_b.notna()).all()
    images = scored.index[scored.to_numpy()]
    if len(images) < 2:
        return None
    arrays = {
        (s, c): wide[s].loc[folds, c][images].to_numpy(float) for s in (a, b) for c in columns
    }
    return arrays, labels_a[images].iloc[0].to_numpy(float)


def bootstrap_rows(
    predictions: pd.DataFrame, split: str, n_resamples: int, seed: int
) -> list[dict]:
    """Paired bootstraps on ``split``: per-image Dice and IoU, or accuracy and (binary) AUC."""
    preds = predictions[predictions["split"] == split]
    rows = []
    for (run, task), g in preds.groupby(["run", "task"], sort=False):
        kind = task_kind(g)
        if kind == "denoise":
            continue
        g = g.assign(correct=(g["y_true"] == g["y_pred"]).astype(float))
        columns = {"segmentation": ["score", "iou"], "classification": ["correct", "score"]}[kind]
        wide = _by_strategy(g, columns)
        for a, b in pair_strategies(list(wide)):
            paired = _paired_images(wide, a, b, columns)
            if paired is None:
                log.info(
                    "%s/%s: %s and %s share no test images scored by every fold model; "
                    "no bootstrap",
                    run,
                    task,
                    a,
                    b,
                )
                continue
            arrays, y = paired
            for metric, column, statistic in _bootstrap_metrics(kind, arrays, y, a, b):
                res = compute_paired_bootstrap(
                    arrays[(a, column)], arrays[(b, column)], statistic, n_resamples, seed
                )
                rows.append(
                    _row(run, task, metric, split, a, b, "bootstrap")
                    | _values(res.value_a, res.value_b, res.diff, res.ci_low, res.ci_high)
                    | {"statistic": np.nan, "p": res.p_value}
                )
    return rows


def _bootstrap_metrics(kind: str, arrays: dict, y: np.ndarray, a: str, b: str):
    """(metric, column, statistic) to bootstrap; AUC only with 0/1 labels of both classes and
    finite scores (the positive-class probability, see ``umsrep/train/evaluate.py``)."""
    if kind == "segmentation":
        return [("dice", "score", mean_over_images), ("iou", "iou", mean_over_images)]
    out = [("accuracy", "correct", mean_over_images)]
    scores = np.concatenate([arrays[(a, "score")], arrays[(b, "score")]])
    if set(np.unique(y)) == {0.0, 1.0} and np.isfinite(scores).all():
        out.append(("auc", "score", auc_over_images(y)))
    return out


def mcnemar_rows(mcnemar: pd.DataFrame, iou_threshold: float, split: str) -> list[dict]:
    """The McNemar table's rows in the significance layout; ``mean_*`` are the fractions of
    paired decisions each strategy got right."""
    rows = []
    for r in mcnemar.to_dict("records"):
        metric = "accuracy" if r["unit"].startswith("sample") else f"iou>={iou_threshold:g}"
        rows.append(
            _row(r["run"], r["task"], metric, split, r["a"], r["b"], "mcnemar")
            | _values(r["acc_a"], r["acc_b"], r["acc_a"] - r["acc_b"], np.nan, np.nan)
            | {"statistic": r["statistic"], "p": r["p"]}
        )
    return rows


def significance_table(
    metrics: pd.DataFrame,
    predictions: pd.DataFrame,
    mcnemar: pd.DataFrame,
    split: str = "test",
    iou_threshold: float = DEFAULT_IOU_THRESHOLD,
    n_resamples: int = BOOTSTRAP_RESAMPLES,
    seed: int = 0,
) -> pd.DataFrame:
    """``run`` followed by :data:`COLUMNS`: corrected t-tests, then bootstraps (on ``split``,
    then on each of its datasets, ``<split>:<dataset>``), then McNemar tests on ``split``, per
    run and task (see the module doc). ``mcnemar`` is
    :func:`analysis.stats.pairwise_mcnemar`'s table of the same predictions; its denoising
    rows are left out."""
    kinds = {k: task_kind(g) for k, g in predictions.groupby(["run", "task"], sort=False)}
    tested = mcnemar[
        [kinds.get(k) != "denoise" for k in zip(mcnemar["run"], mcnemar["task"], strict=True)]
    ]
    rows = (
        corrected_t_rows(metrics, predictions)
        + [
            row
            for s in [split, *dataset_splits(predictions, split)]
            for row in bootstrap_rows(predictions, s, n_resamples, seed)
        ]
        + mcnemar_rows(tested, iou_threshold, split)
    )
    out = pd.DataFrame(rows, columns=["run", *COLUMNS])
    out["p_holm"] = np.nan
    for _, family in out.groupby(["run", "task", "metric", "split", "test"], sort=False):
        out.loc[family.index, "p_holm"] = holm(family["p"].to_numpy())[0]
    task_order = {t: i for i, t in enumerate(dict.fromkeys(out["task"]))}
    test_order = {t: i for i, t in enumerate(TESTS)}
    out = out.assign(_t=out["task"].map(task_order), _x=out["test"].map(test_order))
    out = out.sort_values(["run", "_t", "_x"], kind="stable").drop(columns=["_t", "_x"])
    return out.reset_index(drop=True)
