import numpy as np
import pandas as pd
import pytest
from scipy.stats import binom

from analysis.stats import CHI2, EXACT, compute_mcnemar, holm, pairwise_mcnemar


def test_mcnemar_exact_branch_matches_binomial_by_hand():
    res = compute_mcnemar(10, 2)
    assert res.method == EXACT
    assert res.p_value == pytest.approx(2 * binom.cdf(2, 12, 0.5))  # 0.03857...
    assert res.p_value == pytest.approx(0.0385742, abs=1e-6)


def test_mcnemar_chi2_branch_with_continuity_correction():
    res = compute_mcnemar(30, 15)
    assert res.method == CHI2
    assert res.statistic == pytest.approx((abs(30 - 15) - 1) ** 2 / 45)  # 4.3556
    assert res.p_value == pytest.approx(0.036888, abs=1e-5)


def test_mcnemar_switches_branch_at_threshold_and_handles_no_discordance():
    assert compute_mcnemar(12, 12).method == EXACT  # 24 discordant pairs < 25
    assert compute_mcnemar(13, 12).method == CHI2  # 25
    assert compute_mcnemar(13, 12, exact_below=100).method == EXACT
    assert compute_mcnemar(0, 0).p_value == 1.0


def test_holm_on_known_p_values():
    corrected, reject = holm([0.01, 0.04, 0.03, 0.005])
    # sorted 0.005*4=0.02, 0.01*3=0.03, 0.03*2=0.06, 0.04*1=0.04 -> monotone max 0.06
    np.testing.assert_allclose(corrected, [0.03, 0.06, 0.06, 0.02])
    assert reject.tolist() == [True, False, False, True]


def _preds(strategy, correct, task="cls", iou=None, ids=None, fold=0):
    n = len(correct)
    ids = ids or [f"s{i}" for i in range(n)]
    return pd.DataFrame(
        {
            "run": "r",
            "fold": fold,
            "strategy": strategy,
            "task": task,
            "split": "test",
            "sample_id": ids,
            "y_true": 1,
            "y_pred": [1 if c else 0 for c in correct],
            "score": 0.5,
            "iou": iou if iou is not None else [np.nan] * n,
        }
    )


def test_pairwise_counts_discordant_pairs_on_shared_samples_only():
    # A right on 0-9, B right on 8-11: only A on 0-7 (b=8), only B on 10-11 (c=2)
    a = _preds("independent", [i < 10 for i in range(12)])
    b = _preds("baseline", [i >= 8 for i in range(12)])
    extra = _preds("baseline", [True], ids=["only-in-b"])  # no partner: must be ignored
    out = pairwise_mcnemar(pd.concat([a, b, extra]))
    row = out.iloc[0]
    assert (row["a"], row["b"], row["n_pairs"]) == ("independent", "baseline", 12)
    assert (row["only_a_correct"], row["only_b_correct"]) == (8, 2)
    assert row["p"] == pytest.approx(2 * binom.cdf(2, 10, 0.5))
    assert row["p_holm"] == row["p"]  # a family of one


def test_pairs_are_matched_within_fold():
    a = pd.concat([_preds("joint", [True] * 5, fold=0), _preds("joint", [False] * 5, fold=1)])
    b = pd.concat([_preds("baseline", [True] * 5, fold=0), _preds("baseline", [True] * 5, fold=1)])
    row = pairwise_mcnemar(pd.concat([a, b])).iloc[0]
    assert (row["n_pairs"], row["only_a_correct"], row["only_b_correct"]) == (10, 0, 5)


def test_segmentation_unit_is_image_at_iou_threshold():
    a = _preds("independent", [True] * 4, task="seg", iou=[0.95, 0.95, 0.95, 0.5])
    b = _preds("joint", [True] * 4, task="seg", iou=[0.85, 0.85, 0.95, 0.95])
    strict = pairwise_mcnemar(pd.concat([a, b])).iloc[0]
    assert strict["unit"] == "image (IoU >= 0.9)"
    assert (strict["only_a_correct"], strict["only_b_correct"]) == (2, 1)
    loose = pairwise_mcnemar(pd.concat([a, b]), iou_threshold=0.8).iloc[0]
    assert (loose["only_a_correct"], loose["only_b_correct"]) == (0, 1)


def test_holm_applies_within_each_task_family(run_dir):
    from analysis.load import load_runs

    out = pairwise_mcnemar(load_runs([run_dir]).predictions)
    for _, fam in out.groupby("task"):
        assert len(fam) == 6  # 4 models -> 6 pairs
        expected, _ = holm(fam["p"].to_numpy())
        np.testing.assert_allclose(fam["p_holm"], expected)
        assert (fam["significant"] == (fam["p_holm"] < 0.05)).all()
