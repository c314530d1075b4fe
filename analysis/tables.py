"""Metric tables in the paper's shapes (Tables 2, 3, 5, 7, 9).

Fold values are summarised as mean, sample standard deviation (ddof=1) and a two-sided 95%
confidence interval of the mean from the t-distribution with n-1 degrees of freedom. The
``pooled`` column is the test-set value over all fold models, computed here from
``predictions.parquet`` (classification: accuracy, F-score, MCC on the concatenated
predictions; segmentation: mean per-image IoU and Dice). The ``ensemble`` column is the fold
ensemble's value (the runner's ``fold == -1`` rows: the mean of the k fold models'
probabilities, ``umsrep/runner/ensemble.py``); those rows never enter a fold statistic.
``ensemble_low`` / ``ensemble_high`` bound it: the 95 % percentile bootstrap interval over the
test images (:func:`ensemble_intervals`), for the figures its predictions hold (segmentation
``dice_orig`` and ``iou_orig``; classification accuracy, and for two classes F-score, MCC and
AUC). The folds' t interval says how much training moves a figure; this one how much the
figure would move with another draw of test images, which rules an external set of 40 films.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import stats as sps

from umsrep.metrics.classification import mcc_from_confusion
from umsrep.schema import BACKBONE_LABELS, BASELINE

SHARED_BACKBONE = "shared backbone"  # label for the backbone's own rows (the runner's "shared")
KEYS = ["run", "task", "strategy", "metric"]
STRATEGY_ORDER = ("independent", "alternating", "joint")  # the paper's order; others follow
_METRIC_ORDER = [
    "accuracy",
    "pixel_accuracy",
    "f1",
    "iou",
    "dice",
    "dice_orig",
    "dice_orig_min",
    "iou_orig",
    "mcc",
    "auc",
    "psnr",
    "ssim",
    "ms_ssim",
    "loss",
]


def summarize_folds(values: np.ndarray | pd.Series, confidence: float = 0.95) -> dict[str, float]:
    """Mean, std (ddof=1), t-based CI of the mean and n for one metric's per-fold values."""
    x = np.asarray(values, dtype=float)
    x = x[~np.isnan(x)]
    n = len(x)
    mean = float(x.mean()) if n else float("nan")
    if n < 2:
        return {
            "n_folds": n,
            "mean": mean,
            "std": float("nan"),
            "ci_low": float("nan"),
            "ci_high": float("nan"),
        }
    std = float(x.std(ddof=1))
    half = float(sps.t.ppf(0.5 + confidence / 2, df=n - 1)) * std / np.sqrt(n)
    return {"n_folds": n, "mean": mean, "std": std, "ci_low": mean - half, "ci_high": mean + half}


def compute_pooled_classification(y_true: np.ndarray, y_pred: np.ndarray) -> dict[str, float]:
    """Accuracy, F-score and MCC of integer labels. F-score is of class 1 for binary labels and
    the macro average over classes otherwise; MCC is the multiclass (Gorodkin) form."""
    y_true, y_pred = np.asarray(y_true, int), np.asarray(y_pred, int)
    classes = np.union1d(y_true, y_pred)
    cm = pd.crosstab(
        pd.Categorical(y_true, classes), pd.Categorical(y_pred, classes), dropna=False
    ).to_numpy(float)
    tp = np.diag(cm)
    precision = np.divide(tp, cm.sum(0), out=np.zeros_like(tp), where=cm.sum(0) > 0)
    recall = np.divide(tp, cm.sum(1), out=np.zeros_like(tp), where=cm.sum(1) > 0)
    denom = precision + recall
    f1 = np.divide(2 * precision * recall, denom, out=np.zeros_like(tp), where=denom > 0)
    if set(classes.tolist()) <= {0, 1}:  # binary: class 1's F-score, 0 where it never occurs
        f_score = float(f1[list(classes).index(1)]) if 1 in classes else 0.0
    else:
        f_score = float(f1.mean())
    return {"accuracy": float(tp.sum() / cm.sum()), "f1": f_score,
            "mcc": mcc_from_confusion(cm)}


def pooled_from_predictions(predictions: pd.DataFrame, split: str = "test") -> pd.DataFrame:
    """Pooled test values (long format: run, task, strategy, metric, pooled) from predictions."""
    rows = []
    preds = predictions[(predictions["split"] == split) & (predictions["fold"] >= 0)]
    for (run, task, strategy), g in preds.groupby(["run", "task", "strategy"], sort=False):
        if g["iou"].notna().any():
            values = {"iou": g["iou"].mean(), "dice": g["score"].mean()}
        else:
            values = compute_pooled_classification(g["y_true"].to_numpy(), g["y_pred"].to_numpy())
        rows += [
            {"run": run, "task": task, "strategy": strategy, "metric": m, "pooled": v}
            for m, v in values.items()
        ]
    return pd.DataFrame(rows, columns=[*KEYS, "pooled"])


def ensemble_intervals(
    predictions: pd.DataFrame, split: str = "test", confidence: float = 0.95
) -> pd.DataFrame:
    """``[run, task, strategy, metric, ensemble_low, ensemble_high]``: the percentile bootstrap
    interval over images (``analysis.stats.compute_bootstrap_interval``, 2000 resamples, seed 0)
    of each fold ensemble's figure on ``split``, from its ``predictions.parquet`` rows (fold
    -1): ``dice_orig`` / ``iou_orig`` the mean of ``score`` / ``iou`` (each image's Dice and
    IoU at its original size); accuracy the mean of being right; with two classes F-score (of
    class 1), MCC and AUC (``score``: the probability of class 1). Rows without a label (-1) are
    left out. Empty when no ensemble predicted on ``split``."""
    from analysis import stats  # analysis.stats imports this module

    columns = [*KEYS, "ensemble_low", "ensemble_high"]
    preds = predictions[(predictions["split"] == split) & (predictions["fold"] == -1)]
    rows = []
    for (run, task, strategy), g in preds.groupby(["run", "task", "strategy"], sort=False):
        if g["iou"].notna().any():
            figures = {"dice_orig": (g["score"], stats.mean_over_images),
                       "iou_orig": (g["iou"], stats.mean_over_images)}
        else:
            g = g[g["y_true"] >= 0]
            y = g["y_true"].to_numpy(int)
            figures = {"accuracy": ((g["y_pred"] == g["y_true"]).astype(float),
                                    stats.mean_over_images)}
            if len(g) and set(np.unique(y)) == {0, 1}:
                figures |= {
                    "f1": (g["y_pred"], stats.confusion_over_images(y, "f1")),
                    "mcc": (g["y_pred"], stats.confusion_over_images(y, "mcc")),
                    "auc": (g["score"], stats.auc_over_images(y)),
                }
        for metric, (values, statistic) in figures.items():
            if not len(values):
                continue
            ci = stats.compute_bootstrap_interval(
                values.to_numpy(float), statistic, confidence=confidence)
            rows.append({"run": run, "task": task, "strategy": strategy, "metric": metric,
                         "ensemble_low": ci.ci_low, "ensemble_high": ci.ci_high})
    return pd.DataFrame(rows, columns=columns)


def metric_summary(
    metrics: pd.DataFrame,
    predictions: pd.DataFrame | None = None,
    split: str = "test",
    confidence: float = 0.95,
) -> pd.DataFrame:
    """One row per (run, task, strategy, metric) of the non-noise metrics of ``split``:
    n_folds, mean, std, ci_low, ci_high over folds >= 0, ``pooled``, ``ensemble``,
    ``ensemble_low`` and ``ensemble_high`` (see the module doc; NaN where there is none)."""
    m = metrics[(metrics["split"] == split) & (metrics["noise"].fillna("") == "")]
    folds = m[m["fold"] >= 0]
    rows = [
        {**dict(zip(KEYS, key, strict=True)), **summarize_folds(g["value"], confidence)}
        for key, g in folds.groupby(KEYS, sort=False)
    ]
    out = pd.DataFrame(rows, columns=[*KEYS, "n_folds", "mean", "std", "ci_low", "ci_high"])
    ensemble = (
        m[m["fold"] == -1]
        .groupby(KEYS, as_index=False)["value"]
        .mean()
        .rename(columns={"value": "ensemble"})
    )
    pooled = pd.DataFrame(columns=[*KEYS, "pooled"])
    intervals = pd.DataFrame(columns=[*KEYS, "ensemble_low", "ensemble_high"])
    if predictions is not None and len(predictions):
        pooled = pooled_from_predictions(predictions, split)
        intervals = ensemble_intervals(predictions, split, confidence)
    extra = ["pooled", "ensemble", "ensemble_low", "ensemble_high"]
    out = (
        out.merge(pooled, on=KEYS, how="left").merge(ensemble, on=KEYS, how="left")
        .merge(intervals, on=KEYS, how="left")
        if len(out)
        else out.assign(**{c: pd.Series(dtype=float) for c in extra})
    )
    out[extra] = out[extra].astype(float)
    out["strategy"] = out["strategy"].replace(dict.fromkeys(BACKBONE_LABELS, SHARED_BACKBONE))
    return _sort(out)


def dataset_splits(frame: pd.DataFrame, split: str = "test") -> list[str]:
    """The per-dataset parts of ``split`` in ``frame`` (a metrics or predictions table), sorted:
    ``test:jsrt``, ``test:montgomery`` when the external test set pools those datasets (the
    runner scores each on its own beside the pooled ``test``)."""
    prefix = f"{split}:"
    return sorted({str(s) for s in frame["split"].dropna().unique() if str(s).startswith(prefix)})


def dataset_summary(
    metrics: pd.DataFrame,
    predictions: pd.DataFrame | None = None,
    split: str = "test",
    confidence: float = 0.95,
) -> pd.DataFrame:
    """:func:`metric_summary` of each split of :func:`dataset_splits`, a ``split`` column
    after ``run``."""
    columns = [
        "run", "split", *KEYS[1:], "n_folds", "mean", "std", "ci_low", "ci_high", "pooled",
        "ensemble", "ensemble_low", "ensemble_high",
    ]
    frames = [
        metric_summary(metrics, predictions, s, confidence).assign(split=s)
        for s in dataset_splits(metrics, split)
    ]
    return (
        pd.concat(frames, ignore_index=True)[columns] if frames else pd.DataFrame(columns=columns)
    )


def dataset_paper_table(summary: pd.DataFrame, digits: int = 3) -> pd.DataFrame:
    """:func:`paper_table` of each split of a :func:`dataset_summary`, a ``split`` column after
    ``run``; a metric one split lacks reads '–'."""
    frames = [
        paper_table(g.drop(columns="split"), digits).assign(split=s)
        for s, g in summary.groupby("split", sort=False)
    ]
    if not frames:
        return pd.DataFrame(columns=["run", "split", "task", "strategy"])
    out = pd.concat(frames, ignore_index=True).astype(object).fillna("–")
    return out[["run", "split", *[c for c in out.columns if c not in ("run", "split")]]]


def order_strategies(names: list[str] | pd.Series) -> list[str]:
    """Unique strategy names: the paper's strategies first, then others as first seen, then
    the shared backbone, the baseline last."""
    seen = list(dict.fromkeys(names))
    known = [s for s in STRATEGY_ORDER if s in seen]
    tail = [s for s in (SHARED_BACKBONE, "", BASELINE) if s in seen]
    return known + [s for s in seen if s not in known and s not in tail] + tail


def _sort(df: pd.DataFrame) -> pd.DataFrame:
    """Strategies by :func:`order_strategies`, tasks as first seen, metrics in the paper's order."""
    order = {m: i for i, m in enumerate(_METRIC_ORDER)}
    strat = order_strategies(df["strategy"])
    df = df.assign(
        _s=df["strategy"].map({s: i for i, s in enumerate(strat)}),
        _m=df["metric"].map(lambda x: order.get(x, len(order))),
        _t=df["task"].map({t: i for i, t in enumerate(dict.fromkeys(df["task"]))}),
    )
    return (
        df.sort_values(["run", "_t", "_s", "_m"])
        .drop(columns=["_s", "_m", "_t"])
        .reset_index(drop=True)
    )


def format_mean_ci(row: pd.Series, digits: int = 3) -> str:
    """'0.912 ± 0.013 [0.903, 0.921]' (mean ± std [95% CI]); just the mean for one fold."""
    if np.isnan(row["std"]):
        return f"{row['mean']:.{digits}f}"
    return f"{row['mean']:.{digits}f} ± {row['std']:.{digits}f} [{row['ci_low']:.{digits}f}, {row['ci_high']:.{digits}f}]"


def _ensemble_cell(row: pd.Series, digits: int) -> float | str:
    """The ensemble's value, with its bootstrap interval when there is one."""
    value, low, high = row["ensemble"], row["ensemble_low"], row["ensemble_high"]
    if pd.isna(value) or pd.isna(low) or pd.isna(high):
        return value
    return f"{value:.{digits}f} [{low:.{digits}f}, {high:.{digits}f}]"


def paper_table(summary: pd.DataFrame, digits: int = 3) -> pd.DataFrame:
    """The paper's Table 3/5/7/9 shape: one row per (run, task, strategy), one column per metric
    holding 'mean ± std [CI]', plus '<metric> (pooled)' and, where the run has fold ensembles,
    '<metric> (ensemble)' columns ('0.789 [0.650, 0.913]' where the ensemble's bootstrap interval
    over test images is known, else the value); the baseline rows come last."""
    if summary.empty:
        return pd.DataFrame(columns=["run", "task", "strategy"])
    s = summary.assign(cell=summary.apply(format_mean_ci, axis=1, digits=digits))
    if "ensemble_low" in s:
        s["ensemble"] = s.apply(_ensemble_cell, axis=1, digits=digits)
    metrics = list(dict.fromkeys(s["metric"]))
    wide = s.pivot_table(
        index=["run", "task", "strategy"],
        columns="metric",
        values="cell",
        aggfunc="first",
        sort=False,
    )
    wide = wide[metrics]
    for column in ("pooled", "ensemble"):
        if column not in s or s[column].isna().all():
            continue
        extra = s.pivot_table(
            index=["run", "task", "strategy"],
            columns="metric",
            values=column,
            aggfunc="first",
            sort=False,
        )
        # Series.map, not DataFrame.map: pyproject allows pandas 2.0, which lacks the latter
        extra = extra.apply(lambda col: col.map(
            lambda v: round(v, digits) if isinstance(v, float) else v))
        extra = extra.rename(columns=lambda c, col=column: f"{c} ({col})")
        wide = wide.join(extra[[f"{m} ({column})" for m in metrics if f"{m} ({column})" in extra]])
    wide = wide.reset_index()
    wide["_b"] = wide["strategy"] == BASELINE
    wide = (
        wide.sort_values(["run", "_b"], kind="stable").drop(columns="_b").astype(object).fillna("–")
    )
    wide.columns.name = None
    return wide.reset_index(drop=True)


def denoise_table(
    metrics: pd.DataFrame, split: str = "test", confidence: float = 0.95
) -> pd.DataFrame:
    """Table 2: PSNR/SSIM/MS-SSIM per noise level (rows with a non-empty ``noise``), over folds.

    Columns: run, task, strategy, noise, metric, n_folds, mean, std, ci_low, ci_high.
    """
    m = metrics[
        (metrics["split"] == split) & (metrics["noise"].fillna("") != "") & (metrics["fold"] >= 0)
    ]
    keys = ["run", "task", "strategy", "noise", "metric"]
    rows = [
        {**dict(zip(keys, key, strict=True)), **summarize_folds(g["value"], confidence)}
        for key, g in m.groupby(keys, sort=False)
    ]
    out = pd.DataFrame(rows, columns=[*keys, "n_folds", "mean", "std", "ci_low", "ci_high"])
    out["strategy"] = out["strategy"].replace(dict.fromkeys(BACKBONE_LABELS, SHARED_BACKBONE))
    return out


DEFAULT_PRIMARY_METRICS = ("iou", "dice", "accuracy", "f1", "mcc", "auc", "psnr")


def overview_table(
    summary: pd.DataFrame,
    tests: pd.DataFrame,
    primary_metrics: tuple[str, ...] = DEFAULT_PRIMARY_METRICS,
) -> pd.DataFrame:
    """Per (run, task): the best non-baseline strategy by the fold mean of the task's primary
    metric (the first of ``primary_metrics`` it has), its gain over the baseline (absolute and
    %) and the Holm-corrected McNemar p of best vs baseline."""
    rows = []
    for (run, task), g in summary.groupby(["run", "task"], sort=False):
        metric = next((m for m in primary_metrics if m in set(g["metric"])), g["metric"].iloc[0])
        m = g[g["metric"] == metric].set_index("strategy")
        candidates = m.drop(index=[BASELINE, SHARED_BACKBONE], errors="ignore")
        if candidates.empty:
            continue
        best = candidates["mean"].idxmin() if metric == "loss" else candidates["mean"].idxmax()
        base = m["mean"].get(BASELINE, np.nan)
        test = tests[
            (tests["run"] == run)
            & (tests["task"] == task)
            & (tests["a"] == best)
            & (tests["b"] == BASELINE)
        ]
        rows.append(
            {
                "run": run,
                "task": task,
                "metric": metric,
                "best_strategy": best,
                "best": format_mean_ci(m.loc[best]),
                "baseline": base,
                "gain": m.loc[best, "mean"] - base,
                "gain_pct": 100 * (m.loc[best, "mean"] - base) / base if base else np.nan,
                "p_holm": test["p_holm"].iloc[0] if len(test) else np.nan,
                "significant": bool(test["significant"].iloc[0]) if len(test) else False,
                "unit": test["unit"].iloc[0] if len(test) else "",
            }
        )
    return pd.DataFrame(rows)


ACROSS_RUNS_COLUMNS = ["split", "task", "strategy", "metric", "n_runs", "mean", "std", "min",
                       "max", "vs_baseline", "runs_not_worse"]


def across_runs(summary: pd.DataFrame, by_dataset: pd.DataFrame | None = None,
                split: str = "test") -> pd.DataFrame:
    """Several runs of one experiment (its seeds, say) side by side: one row per split, task,
    strategy and metric that two runs or more report. Each run gives one figure, its fold
    ensemble's where it has one, else its mean over folds; ``mean``, ``std`` (ddof 1), ``min``
    and ``max`` are over the runs. ``vs_baseline``: the mean over the runs of the strategy's
    figure minus the baseline's of the same run; ``runs_not_worse``: in how many of the runs
    that have both the strategy is at or above the baseline (at or below, for a loss). Empty
    with fewer than two runs.

    ``summary`` is :func:`metric_summary` of ``split``, ``by_dataset`` :func:`dataset_summary`
    (its ``split`` column names each dataset's part). One seed's margin over the baseline can
    be another seed's deficit: this table says how many seeds a conclusion holds for."""
    frame = summary.assign(split=split)
    if by_dataset is not None and len(by_dataset):
        frame = pd.concat([frame, by_dataset], ignore_index=True)
    if frame.empty or frame["run"].nunique() < 2:
        return pd.DataFrame(columns=ACROSS_RUNS_COLUMNS)
    frame = frame.assign(value=frame["ensemble"].astype(float).fillna(frame["mean"]))
    group = ["split", "task", "metric"]
    base = frame[frame["strategy"] == BASELINE].set_index(["run", *group])["value"]
    rows = []
    for (sp, task, strategy, metric), g in frame.groupby(
            ["split", "task", "strategy", "metric"], sort=False):
        values = g["value"].dropna()
        if len(values) < 2:
            continue
        row = {"split": sp, "task": task, "strategy": strategy, "metric": metric,
               "n_runs": len(values), "mean": values.mean(), "std": values.std(ddof=1),
               "min": values.min(), "max": values.max(), "vs_baseline": np.nan,
               "runs_not_worse": np.nan}
        if strategy != BASELINE:
            keys = [(r, sp, task, metric) for r in g.loc[values.index, "run"]]
            paired = pd.Series(values.to_numpy(), index=pd.MultiIndex.from_tuples(keys))
            b = base.reindex(paired.index)
            diff = (paired - b).dropna()
            if len(diff):
                row["vs_baseline"] = diff.mean()
                row["runs_not_worse"] = int((diff <= 0).sum() if metric == "loss"
                                            else (diff >= 0).sum())
        rows.append(row)
    out = pd.DataFrame(rows, columns=ACROSS_RUNS_COLUMNS).astype({"runs_not_worse": "Int64"})
    return out.sort_values("split", kind="stable", key=lambda s: s != split).reset_index(
        drop=True)
