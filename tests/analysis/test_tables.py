import numpy as np
import pandas as pd
import pytest
from scipy import stats

from analysis.stats import auc_over_images, compute_bootstrap_interval
from analysis.tables import (
    SHARED_BACKBONE,
    across_runs,
    compute_pooled_classification,
    denoise_table,
    ensemble_intervals,
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


def _ensemble_predictions(n=40, seed=0):
    """A fold ensemble's external predictions (fold -1) for a lung and a TB task, two fold
    models' rows beside them and one TB film without a label."""
    rng = np.random.default_rng(seed)
    y = np.tile([0, 1], n // 2)
    score = np.clip(0.5 + 0.3 * (y - 0.5) + rng.normal(0, 0.25, n), 0, 1)
    dice = rng.uniform(0.9, 0.98, n)
    common = {"run": "r", "strategy": "joint", "split": "test:montgomery"}
    tb = pd.DataFrame({**common, "fold": -1, "task": "tb", "sample_id": [f"m{i}" for i in range(n)],
                       "y_true": y, "y_pred": (score > 0.5).astype(int), "score": score,
                       "iou": np.nan})
    lung = pd.DataFrame({**common, "fold": -1, "task": "lung", "sample_id": tb["sample_id"],
                         "y_true": 1, "y_pred": 1, "score": dice, "iou": dice / (2 - dice)})
    unlabelled = tb.iloc[:1].assign(sample_id="x", y_true=-1, y_pred=1, score=0.99)
    folds = pd.concat([tb.assign(fold=f, score=1 - tb["score"]) for f in (0, 1)])  # not scored
    return pd.concat([tb, unlabelled, lung, folds], ignore_index=True), y, score, dice


def test_ensemble_intervals_bound_each_figure_the_ensemble_predictions_hold():
    preds, y, score, dice = _ensemble_predictions()
    out = ensemble_intervals(preds, "test:montgomery").set_index(["task", "metric"])
    assert sorted(out.index) == [("lung", "dice_orig"), ("lung", "iou_orig"), ("tb", "accuracy"),
                                 ("tb", "auc"), ("tb", "f1"), ("tb", "mcc")]
    # the unlabelled film and the fold models' rows are left out: the interval is that of the
    # 40 labelled films' ensemble scores
    tb_auc = compute_bootstrap_interval(score, auc_over_images(y))
    assert (out.loc[("tb", "auc"), "ensemble_low"], out.loc[("tb", "auc"), "ensemble_high"]) == (
        pytest.approx(tb_auc.ci_low), pytest.approx(tb_auc.ci_high))
    for (task, metric), row in out.iterrows():
        assert row["ensemble_low"] < row["ensemble_high"], (task, metric)
    lung = out.loc[("lung", "dice_orig")]
    assert lung["ensemble_low"] < dice.mean() < lung["ensemble_high"]
    assert ensemble_intervals(preds, "test:jsrt").empty  # nothing predicted there
    three = preds[preds["task"] == "tb"].assign(y_true=lambda d: d["y_true"] % 3)
    three.loc[three.index[:5], "y_true"] = 2  # three classes: accuracy only
    assert ensemble_intervals(three, "test:montgomery")["metric"].tolist() == ["accuracy"]


def test_metric_summary_puts_the_ensemble_interval_beside_its_value_and_the_table_shows_it():
    preds, y, score, dice = _ensemble_predictions()
    tb = preds[(preds["fold"] == -1) & (preds["task"] == "tb") & (preds["y_true"] >= 0)]
    auc = float(auc_over_images(y)(score[None], np.ones((1, len(y))))[0])
    mcc = compute_pooled_classification(tb["y_true"], tb["y_pred"])["mcc"]
    rows = [("r", f, "joint", task, "test:montgomery", metric, 0.7 + 0.05 * f, "")
            for f in (0, 1) for task, metric in (("tb", "auc"), ("lung", "dice_orig_min"))]
    rows += [("r", -1, "joint", "tb", "test:montgomery", "auc", auc, ""),
             ("r", -1, "joint", "tb", "test:montgomery", "mcc", mcc, ""),
             ("r", -1, "joint", "lung", "test:montgomery", "dice_orig_min", dice.min(), "")]
    out = metric_summary(_metrics(rows), preds, "test:montgomery").set_index(["task", "metric"])
    row = out.loc[("tb", "auc")]
    assert row["ensemble"] == pytest.approx(auc)
    assert row["ensemble_low"] < row["ensemble"] < row["ensemble_high"]
    assert row["ensemble_high"] - row["ensemble_low"] > 0.1  # 40 films: a wide interval
    assert np.isnan(out.loc[("lung", "dice_orig_min"), "ensemble_low"])  # a minimum: none
    table = paper_table(out.reset_index()).set_index("task")
    lo, hi = row["ensemble_low"], row["ensemble_high"]
    assert table.loc["tb", "auc (ensemble)"] == f"{auc:.3f} [{lo:.3f}, {hi:.3f}]"
    assert table.loc["lung", "dice_orig_min (ensemble)"] == round(dice.min(), 3)


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


def _summary(rows):
    """metric_summary-shaped rows: (run, task, strategy, metric, mean, ensemble)."""
    return pd.DataFrame(rows, columns=["run", "task", "strategy", "metric", "mean", "ensemble"])


def test_across_runs_gives_each_runs_figure_and_how_many_runs_beat_the_baseline():
    summary = _summary([
        ("seed0", "lung", "joint", "dice", 0.90, 0.96),  # the ensemble's figure counts
        ("seed0", "lung", "baseline", "dice", 0.90, 0.95),
        ("seed1", "lung", "joint", "dice", 0.94, np.nan),  # no ensemble: the fold mean
        ("seed1", "lung", "baseline", "dice", 0.95, np.nan),
        ("seed0", "lung", "joint", "loss", 0.30, np.nan),  # a loss: lower is not worse
        ("seed0", "lung", "baseline", "loss", 0.40, np.nan),
        ("seed1", "lung", "joint", "loss", 0.35, np.nan),
        ("seed1", "lung", "baseline", "loss", 0.35, np.nan),
        ("seed0", "lung", "joint", "iou", 0.90, np.nan),  # one run only: no row
    ])
    by_dataset = _summary([
        ("seed0", "lung", "joint", "dice", 0.9, 0.97),
        ("seed1", "lung", "joint", "dice", 0.9, 0.95),
    ]).assign(split="test:montgomery")  # no baseline there: no difference to give
    out = across_runs(summary, by_dataset).set_index(["split", "strategy", "metric"])
    joint = out.loc[("test", "joint", "dice")]
    assert joint["n_runs"] == 2 and joint["mean"] == pytest.approx(0.95)
    assert (joint["min"], joint["max"]) == (0.94, 0.96)
    assert joint["std"] == pytest.approx(np.std([0.96, 0.94], ddof=1))
    assert joint["vs_baseline"] == pytest.approx(0.0)  # +0.01 and -0.01
    assert joint["runs_not_worse"] == 1
    loss = out.loc[("test", "joint", "loss")]
    assert loss["vs_baseline"] == pytest.approx(-0.05) and loss["runs_not_worse"] == 2
    base = out.loc[("test", "baseline", "dice")]
    assert np.isnan(base["vs_baseline"]) and pd.isna(base["runs_not_worse"])
    assert ("test", "joint", "iou") not in out.index
    mont = out.loc[("test:montgomery", "joint", "dice")]
    assert mont["mean"] == pytest.approx(0.96) and pd.isna(mont["runs_not_worse"])
    assert list(across_runs(summary, by_dataset)["split"].unique()) == ["test", "test:montgomery"]
    # one run: nothing to set side by side
    assert across_runs(summary[summary["run"] == "seed0"]).empty
