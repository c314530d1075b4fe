import numpy as np
import pandas as pd
import pytest
from scipy import stats

from analysis.tables import (
    SHARED_BACKBONE,
    compute_pooled_classification,
    denoise_table,
    metric_summary,
    order_strategies,
    overview_table,
    paper_table,
    summarize_folds,
)


def _metrics(rows):
    df = pd.DataFrame(
        rows, columns=["run", "fold", "strategy", "task", "split", "metric", "value", "noise"]
    )
    return df.astype({"fold": "int64", "value": "float64"})


def test_summarize_folds_known_mean_std_and_t_interval():
    s = summarize_folds([0.8, 0.9, 1.0])
    half = 4.302652729911275 * 0.1 / np.sqrt(3)  # t(0.975, df=2) * std / sqrt(n)
    assert (s["n_folds"], s["mean"], s["std"]) == (3, pytest.approx(0.9), pytest.approx(0.1))
    assert s["ci_low"] == pytest.approx(0.9 - half) and s["ci_high"] == pytest.approx(0.9 + half)
    one = summarize_folds([0.7])
    assert one["mean"] == 0.7 and np.isnan(one["std"]) and np.isnan(one["ci_low"])


def test_metric_summary_groups_folds_keeps_the_ensemble_apart_and_puts_baseline_last():
    rows = [
        ("r", f, s, "cls", "test", "accuracy", v, "")
        for s, vals in (("baseline", [0.6, 0.7]), ("joint", [0.8, 0.9, 1.0]))
        for f, v in enumerate(vals)
    ]
    rows += [
        ("r", -1, "joint", "cls", "test", "accuracy", 0.93, ""),  # the fold ensemble
        ("r", 0, "joint", "cls", "val", "accuracy", 0.1, ""),  # other split: ignored
        ("r", 0, "", "denoise", "test", "psnr", 30.0, "gaussian-10"),
    ]  # noise rows: Table 2
    out = metric_summary(_metrics(rows))
    assert out["strategy"].tolist() == ["joint", "baseline"]
    joint = out.iloc[0]
    # the ensemble's 0.93 is its own column, not a fourth fold: mean of 0.8, 0.9, 1.0
    assert joint["n_folds"] == 3 and joint["mean"] == pytest.approx(0.9)
    assert joint["ensemble"] == 0.93 and np.isnan(joint["pooled"])
    assert np.isnan(out.iloc[1]["ensemble"])
    table = paper_table(out)
    assert table.loc[table["strategy"] == "joint", "accuracy (ensemble)"].item() == 0.93
    assert table.loc[table["strategy"] == "baseline", "accuracy (ensemble)"].item() == "–"


def test_pooled_values_fall_back_to_predictions():
    metrics = _metrics(
        [
            ("r", 0, "joint", "cls", "test", "accuracy", 0.5, ""),
            ("r", 1, "joint", "cls", "test", "accuracy", 1.0, ""),
        ]
    )
    preds = pd.DataFrame(
        {
            "run": "r",
            "fold": [0, 0, 1, 1, -1, -1],  # -1: the fold ensemble, not pooled
            "strategy": "joint",
            "task": "cls",
            "split": "test",
            "sample_id": ["a", "b", "a", "b", "a", "b"],
            "y_true": [1, 0, 1, 0, 1, 0],
            "y_pred": [1, 1, 1, 0, 0, 1],
            "score": 0.5,
            "iou": np.nan,
        }
    )
    out = metric_summary(metrics, preds)
    assert out.iloc[0]["pooled"] == pytest.approx(0.75)  # 3 of 4 concatenated predictions right


def test_pooled_classification_matches_hand_counts():
    # tp=2 fn=1 fp=1 tn=2 -> precision=recall=2/3, mcc=(2*2-1*1)/sqrt(3*3*3*3)=1/3
    res = compute_pooled_classification(np.array([1, 1, 1, 0, 0, 0]), np.array([1, 1, 0, 1, 0, 0]))
    assert res["accuracy"] == pytest.approx(4 / 6)
    assert res["f1"] == pytest.approx(2 / 3)
    assert res["mcc"] == pytest.approx(1 / 3)
    three = compute_pooled_classification(np.array([0, 1, 2, 2]), np.array([0, 1, 2, 1]))
    assert three["accuracy"] == 0.75 and 0 < three["mcc"] < 1


def test_paper_table_shape_and_cell_format():
    rows = [
        ("r", f, s, "cls", "test", m, v, "")
        for s in ("independent", "baseline")
        for m, v in (("accuracy", 0.8), ("mcc", 0.6))
        for f in range(3)
    ]
    table = paper_table(metric_summary(_metrics(rows)))
    assert table.columns.tolist()[:5] == ["run", "task", "strategy", "accuracy", "mcc"]
    assert table["strategy"].tolist() == ["independent", "baseline"]
    assert table.iloc[0]["accuracy"] == "0.800 ± 0.000 [0.800, 0.800]"


def test_denoise_table_per_noise_level():
    rows = [
        ("r", f, s, "denoise", "test", "psnr", v + f, n)
        for s in ("shared", "baseline")  # the runner's labels
        for n, v in (("gaussian-10", 39.0), ("poisson-30", 33.0))
        for f in range(2)
    ]
    out = denoise_table(_metrics(rows))
    first = out.iloc[0]
    assert (first["strategy"], first["noise"], first["mean"]) == (
        SHARED_BACKBONE,
        "gaussian-10",
        39.5,
    )
    assert first["ci_high"] - first["mean"] == pytest.approx(
        stats.t.ppf(0.975, 1) * np.sqrt(0.5) / np.sqrt(2)
    )
    assert len(out) == 4


def test_order_strategies():
    assert order_strategies(["baseline", "joint", "custom", "independent"]) == [
        "independent",
        "joint",
        "custom",
        "baseline",
    ]


def test_overview_picks_best_and_gain():
    # fold values (two folds each); the fold means and winners are worked out by hand below
    values = {
        ("cls", "accuracy"): {
            "independent": [0.80, 0.84],  # mean 0.82
            "joint": [0.86, 0.90],  # mean 0.88: the best strategy
            "shared": [0.95, 0.97],  # the backbone's own rows (runner label): never a winner
            "baseline": [0.70, 0.74],  # mean 0.72
        },
        ("seg", "iou"): {
            "independent": [0.90, 0.92],  # mean 0.91: the best by IoU, the primary metric
            "joint": [0.80, 0.80],
            "baseline": [0.85, 0.87],  # mean 0.86
        },
        ("seg", "dice"): {"independent": [0.5, 0.5], "joint": [0.99, 0.99],
                          "baseline": [0.5, 0.5]},  # joint wins Dice, which is not primary
        ("rec", "loss"): {"independent": [0.2, 0.2], "joint": [0.3, 0.3],
                          "baseline": [0.4, 0.4]},  # a loss is minimised
    }
    rows = [
        ("r", f, s, task, "test", metric, v, "")
        for (task, metric), by in values.items()
        for s, vals in by.items()
        for f, v in enumerate(vals)
    ]
    tests = pd.DataFrame(
        [{"run": "r", "task": "cls", "a": "joint", "b": "baseline", "p_holm": 0.01,
          "significant": True, "unit": "sample"},
         {"run": "r", "task": "cls", "a": "independent", "b": "baseline", "p_holm": 0.2,
          "significant": False, "unit": "sample"}]
    )
    over = overview_table(metric_summary(_metrics(rows)), tests).set_index("task")
    assert over.loc["cls", "best_strategy"] == "joint"
    assert over.loc["cls", "metric"] == "accuracy"
    assert over.loc["cls", "baseline"] == pytest.approx(0.72)
    assert over.loc["cls", "gain"] == pytest.approx(0.16)  # 0.88 - 0.72
    assert over.loc["cls", "gain_pct"] == pytest.approx(100 * 0.16 / 0.72)  # 22.2 %
    assert over.loc["cls", "p_holm"] == 0.01 and over.loc["cls", "significant"]
    assert over.loc["cls", "best"].startswith("0.880 ± 0.028")  # std |0.86-0.90|/sqrt(2)
    assert (over.loc["seg", "best_strategy"], over.loc["seg", "metric"]) == ("independent", "iou")
    assert over.loc["seg", "gain"] == pytest.approx(0.05)  # 0.91 - 0.86
    assert np.isnan(over.loc["seg", "p_holm"]) and not over.loc["seg", "significant"]
    assert (over.loc["rec", "best_strategy"], over.loc["rec", "metric"]) == ("independent", "loss")
