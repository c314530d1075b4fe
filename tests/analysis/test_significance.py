"""The significance table: which comparisons it makes, on which split, with which fold sizes."""

import numpy as np
import pandas as pd
import pytest

from analysis.significance import COLUMNS, fold_size_ratio, significance_table
from analysis.stats import pairwise_mcnemar
from umsrep.schema import METRICS_COLUMNS, PREDICTIONS_COLUMNS

BASE_DICE = [0.80, 0.82, 0.84, 0.86, 0.88]
JOINT_DICE = [0.82, 0.85, 0.85, 0.90, 0.93]  # minus BASE_DICE: 0.02, 0.03, 0.01, 0.04, 0.05


def _metrics(values: dict[str, list[float]], metric: str = "dice", task: str = "lung"):
    rows = [
        {"fold": f, "strategy": s, "task": task, "split": "val", "metric": metric, "value": v}
        for s, vals in values.items()
        for f, v in enumerate(vals)
    ]
    df = pd.DataFrame(rows, columns=[c for c in METRICS_COLUMNS if c != "noise"])
    return df.assign(noise="", run="r").astype(METRICS_COLUMNS)


def _preds(strategy, fold, ids, split="test", task="lung", y_true=1, y_pred=1, score=0.9, iou=0.8):
    n = len(ids)
    df = pd.DataFrame(
        {
            "fold": fold,
            "strategy": strategy,
            "task": task,
            "split": split,
            "sample_id": ids,
            "y_true": np.broadcast_to(y_true, n),
            "y_pred": np.broadcast_to(y_pred, n),
            "score": np.broadcast_to(score, n),
            "iou": np.broadcast_to(iou, n),
        }
    )
    return df.astype(PREDICTIONS_COLUMNS).assign(run="r")


def _val_preds(sizes: list[int], strategies=("joint", "baseline")):
    """Fold j holds out ``sizes[j]`` images of its own."""
    frames = [
        _preds(s, j, [f"v{j}-{i}" for i in range(n)], split="val")
        for j, n in enumerate(sizes)
        for s in strategies
    ]
    return pd.concat(frames) if frames else _preds("joint", 0, [], split="val")


def _table(metrics, preds, **kw):
    return significance_table(metrics, preds, pairwise_mcnemar(preds), **kw)


def test_fold_size_ratio_counts_held_out_and_training_images():
    # held out 10, 20, 30 of 60: training pools 50, 40, 30; mean 20 / mean 40
    assert fold_size_ratio(_val_preds([10, 20, 30])) == pytest.approx(0.5)
    assert fold_size_ratio(_val_preds([20] * 5)) == pytest.approx(0.25)
    assert np.isnan(fold_size_ratio(_val_preds([20])))


def test_corrected_t_row_matches_the_hand_computation():
    # the numbers of test_stats.test_corrected_t_matches_a_hand_computation: 5 folds of 20
    # held-out images, n_test/n_train = 20/80: t = 2.8284271, p = 0.0474207
    out = _table(_metrics({"joint": JOINT_DICE, "baseline": BASE_DICE}), _val_preds([20] * 5))
    assert list(out.columns) == ["run", *COLUMNS]
    row = out[out["test"] == "corrected_t"].iloc[0]
    assert (row["task"], row["metric"], row["split"], row["a"], row["b"]) == (
        "lung",
        "dice",
        "val",
        "joint",
        "baseline",
    )
    assert (row["mean_a"], row["mean_b"], row["diff"]) == pytest.approx((0.87, 0.84, 0.03))
    assert row["statistic"] == pytest.approx(2.8284271, abs=1e-6)
    assert row["p"] == pytest.approx(0.0474207, abs=1e-6)
    assert row["p_holm"] == row["p"]  # a family of one
    assert (row["ci_low"], row["ci_high"]) == pytest.approx((0.0005514, 0.0594486), abs=1e-6)


def test_corrected_t_takes_n_train_from_all_folds_of_the_run():
    # 5 folds of 20 held-out images (n_test/n_train = 20/80), but the pair has values on 3 of
    # them (say two stages failed): k = 3 in 1/k, while the training pools are still 80 images.
    # d = 0.02, 0.03, 0.01: mean 0.02, var 1e-4; t = 0.02 / sqrt((1/3 + 1/4) * 1e-4)
    # = 2 sqrt(12/7) = 2.6186147 (1/(k-1) = 1/2 in its place would give 2.1908902)
    metrics = _metrics({"joint": JOINT_DICE[:3], "baseline": BASE_DICE[:3]})
    out = _table(metrics, _val_preds([20] * 5))
    assert out.iloc[0]["statistic"] == pytest.approx(2.6186147, abs=1e-6)


def test_corrected_t_skips_a_metric_one_strategy_lacks():
    # the baseline has no AUC (say its folds held one class only): no auc pair, no error
    metrics = pd.concat(
        [
            _metrics({"joint": JOINT_DICE, "baseline": BASE_DICE}, "accuracy", task="cls"),
            _metrics({"joint": JOINT_DICE}, "auc", task="cls"),
        ]
    )
    out = _table(metrics, _val_preds([20] * 5))
    assert out["metric"].tolist() == ["accuracy"]


def test_corrected_t_without_val_predictions_takes_equal_folds():
    # 5 folds: n_test/n_train = 1/4, the hand-computed case
    out = _table(_metrics({"joint": JOINT_DICE, "baseline": BASE_DICE}), _val_preds([]))
    assert out.iloc[0]["statistic"] == pytest.approx(2.8284271, abs=1e-6)


def test_holm_families_are_per_task_metric_and_test():
    metrics = pd.concat(
        [
            _metrics({"joint": JOINT_DICE, "baseline": BASE_DICE}, "dice"),
            _metrics({"joint": JOINT_DICE, "baseline": BASE_DICE}, "iou"),
            _metrics({"joint": JOINT_DICE, "baseline": BASE_DICE}, "dice", task="heart"),
        ]
    )
    out = _table(metrics, _val_preds([20] * 5))
    assert len(out) == 3
    np.testing.assert_allclose(out["p_holm"], [0.0474207] * 3, atol=1e-6)  # each alone


def _test_set(kind: str, folds=(0, 1, 2), n=30, shared=True):
    """Two strategies on a test set: joint better by 0.05 Dice on every image (segmentation),
    or right on 24 of 30 images where baseline is right on 18 (classification)."""
    frames = []
    for f in folds:
        ids = [f"t-{i}" if shared else f"t{f}-{i}" for i in range(n)]
        if kind == "segmentation":
            dice = np.linspace(0.7, 0.9, n)
            frames.append(_preds("joint", f, ids, score=dice + 0.05, iou=dice))
            frames.append(_preds("baseline", f, ids, score=dice, iou=dice - 0.05))
        else:
            y = np.arange(n) % 2
            right_j, right_b = np.arange(n) < 24, np.arange(n) < 18
            # right: 0.8 for a positive, 0.2 for a negative; wrong: the other one (exactly)
            for s, right in (("joint", right_j), ("baseline", right_b)):
                frames.append(
                    _preds(
                        s,
                        f,
                        ids,
                        task="cls",
                        y_true=y,
                        y_pred=np.where(right, y, 1 - y),
                        score=np.where(right == (y == 1), 0.8, 0.2),
                        iou=np.nan,
                    )
                )
    return pd.concat(frames, ignore_index=True)


def test_bootstrap_rows_on_an_external_test_set():
    out = _table(_metrics({}), _test_set("segmentation"))
    boot = out[out["test"] == "bootstrap"].set_index("metric")
    assert list(boot.index) == ["dice", "iou"] and set(boot["split"]) == {"test"}
    # every image's difference is 0.05, so every resample's mean is too
    assert boot.loc["dice", "diff"] == pytest.approx(0.05)
    assert (boot.loc["dice", "ci_low"], boot.loc["dice", "ci_high"]) == pytest.approx((0.05, 0.05))
    assert boot.loc["dice", "mean_b"] == pytest.approx(0.8)  # mean of linspace(0.7, 0.9)
    assert boot.loc["iou", "p"] == pytest.approx(2 / 2001)
    assert np.isnan(boot.loc["dice", "statistic"])


def test_classification_bootstrap_has_accuracy_and_auc():
    out = _table(_metrics({}), _test_set("classification"))
    boot = out[out["test"] == "bootstrap"].set_index("metric")
    assert list(boot.index) == ["accuracy", "auc"]
    # 24/30 vs 18/30 on every fold
    assert (boot.loc["accuracy", "mean_a"], boot.loc["accuracy", "mean_b"]) == pytest.approx(
        (0.8, 0.6)
    )
    # joint, AUC by hand: 15 positives, 15 negatives; right images score 0.8 (positive) or 0.2
    # (negative), the 6 wrong ones (24-29: 3 positives, 3 negatives) the other way round.
    # Of the 225 positive-negative pairs 12 * 12 are ordered right, 12 * 3 + 3 * 12 tie (one
    # half each) and 3 * 3 wrong: (144 + 36) / 225 = 0.8. Baseline, 12 wrong: (81 + 54) / 225
    assert (boot.loc["auc", "mean_a"], boot.loc["auc", "mean_b"]) == pytest.approx((0.8, 0.6))
    mcn = out[out["test"] == "mcnemar"].iloc[0]
    assert mcn["metric"] == "accuracy"
    assert (mcn["mean_a"], mcn["mean_b"]) == pytest.approx((0.8, 0.6))
    assert np.isnan(mcn["ci_low"])


def test_no_bootstrap_when_the_test_split_is_the_held_out_folds():
    out = _table(_metrics({}), _test_set("segmentation", shared=False))
    assert "bootstrap" not in set(out["test"])
    assert out.loc[out["test"] == "mcnemar", "metric"].tolist() == ["iou>=0.9"]


def test_denoising_is_left_out():
    den = _preds("", 0, ["a", "b"], task="denoise", y_true=-1, y_pred=-1, score=30.0, iou=np.nan)
    den = pd.concat([den, den.assign(strategy="baseline")])
    out = _table(_metrics({}), den)
    assert out.empty and list(out.columns) == ["run", *COLUMNS]
