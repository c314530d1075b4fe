import numpy as np
import pandas as pd
import pytest
from scipy.stats import binom, ttest_rel
from statsmodels.stats.multitest import multipletests

from analysis.stats import (
    CHI2,
    EXACT,
    auc_over_images,
    compute_bootstrap_interval,
    compute_corrected_t,
    compute_mcnemar,
    compute_paired_bootstrap,
    confusion_over_images,
    holm,
    mean_over_images,
    pairwise_mcnemar,
    resample_weights,
)


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
    """Held-out folds: each image once, paired within its fold."""
    held = [[f"f0-{i}" for i in range(5)], [f"f1-{i}" for i in range(5)]]
    a = pd.concat([_preds("joint", [True] * 5, ids=held[0], fold=0),
                   _preds("joint", [False] * 5, ids=held[1], fold=1)])
    b = pd.concat([_preds("baseline", [True] * 5, ids=held[0], fold=0),
                   _preds("baseline", [True] * 5, ids=held[1], fold=1)])
    row = pairwise_mcnemar(pd.concat([a, b])).iloc[0]
    assert (row["n_pairs"], row["only_a_correct"], row["only_b_correct"]) == (10, 0, 5)
    assert row["unit"] == "sample"


def test_an_external_image_scored_by_every_fold_model_counts_once():
    """k fold models on the same external images are not k times the pairs (k times the
    discordant counts made p far too small): the fold ensemble decides each image, else the
    majority of the fold models (a tie counts as wrong)."""
    k, n = 5, 8
    joint = [_preds("joint", [i < 6 for i in range(n)], fold=f) for f in range(k)]
    base = [_preds("baseline", [i < 2 for i in range(n)], fold=f) for f in range(k)]
    row = pairwise_mcnemar(pd.concat(joint + base)).iloc[0]
    assert (row["n_pairs"], row["only_a_correct"], row["only_b_correct"]) == (n, 4, 0)
    assert row["p"] == pytest.approx(compute_mcnemar(4, 0).p_value)  # not (20, 0)
    assert row["unit"] == f"sample, majority of {k} fold models"
    # with the fold ensemble's rows, its decisions: here it gets one more image right
    ens = [_preds("joint", [i < 7 for i in range(n)], fold=-1),
           _preds("baseline", [i < 2 for i in range(n)], fold=-1)]
    row = pairwise_mcnemar(pd.concat(joint + base + ens)).iloc[0]
    assert (row["n_pairs"], row["only_a_correct"], row["only_b_correct"]) == (n, 5, 0)
    assert row["unit"] == "sample, fold ensemble"
    # an ensemble for one strategy only: the other's images by its majority, none dropped
    row = pairwise_mcnemar(pd.concat(joint + base + ens[:1])).iloc[0]
    assert (row["n_pairs"], row["only_a_correct"], row["only_b_correct"]) == (n, 5, 0)
    # a tie between fold models counts as wrong
    tie = [_preds("joint", [f % 2 == 0 and i == 0 for i in range(n)], fold=f) for f in range(4)]
    base4 = [_preds("baseline", [i == 0 for i in range(n)], fold=f) for f in range(4)]
    row = pairwise_mcnemar(pd.concat(tie + base4)).iloc[0]
    assert (row["only_a_correct"], row["only_b_correct"]) == (0, 1)


def test_segmentation_unit_is_image_at_iou_threshold():
    a = _preds("independent", [True] * 4, task="seg", iou=[0.95, 0.95, 0.95, 0.5])
    b = _preds("joint", [True] * 4, task="seg", iou=[0.85, 0.85, 0.95, 0.95])
    strict = pairwise_mcnemar(pd.concat([a, b])).iloc[0]
    assert strict["unit"] == "image (IoU >= 0.9)"
    assert (strict["only_a_correct"], strict["only_b_correct"]) == (2, 1)
    loose = pairwise_mcnemar(pd.concat([a, b]), iou_threshold=0.8).iloc[0]
    assert (loose["only_a_correct"], loose["only_b_correct"]) == (0, 1)


def test_holm_applies_within_each_task_family():
    # 20 samples: independent right on all, joint wrong on 0-3, baseline wrong on 0-9
    ind = _preds("independent", [True] * 20)
    joint = _preds("joint", [i >= 4 for i in range(20)])
    base = _preds("baseline", [i >= 10 for i in range(20)])
    # a second task with one pair: independent right on all, baseline wrong on 0-9
    other = [
        _preds("independent", [True] * 20, task="t2"),
        _preds("baseline", [i >= 10 for i in range(20)], task="t2"),
    ]
    out = pairwise_mcnemar(pd.concat([ind, joint, base, *other])).set_index(["task", "a", "b"])
    # exact binomial p = 2 * 0.5**(b + c) when one side has no discordant pairs:
    # ind-joint (4, 0): 2/16 = 0.125; ind-base (10, 0): 2/1024; joint-base (6, 0): 2/64
    pairs = [("independent", "joint"), ("independent", "baseline"), ("joint", "baseline")]
    cls = out.loc["cls"].loc[pairs]
    np.testing.assert_allclose(cls["p"], [0.125, 0.001953125, 0.03125])
    # Holm by hand: sorted 0.001953125 * 3 = 0.005859375, 0.03125 * 2 = 0.0625, 0.125 * 1
    np.testing.assert_allclose(cls["p_holm"], [0.125, 0.005859375, 0.0625])
    assert cls["significant"].tolist() == [False, True, False]
    # the other task is a family of one: not multiplied by the first task's 3 (or 4) tests
    assert out.loc[("t2", "independent", "baseline"), "p_holm"] == pytest.approx(0.001953125)


def test_holm_leaves_untestable_comparisons_out_of_the_family():
    corrected, reject = holm([0.01, np.nan, 0.02])
    # m = 2: 0.01 * 2 = 0.02, 0.02 * 1 = 0.02
    np.testing.assert_allclose(corrected, [0.02, np.nan, 0.02])
    assert reject.tolist() == [True, False, True]
    assert holm([])[0].size == 0


def test_holm_matches_statsmodels():
    p = [0.2, 0.001, 0.04, 0.04, 0.5, 0.011]
    np.testing.assert_allclose(holm(p)[0], multipletests(p, method="holm")[1])


# --- corrected resampled t-test (Nadeau & Bengio 2003) ---

D = [0.02, 0.03, 0.01, 0.04, 0.05]  # per-fold differences, k = 5


def test_corrected_t_matches_a_hand_computation():
    # mean 0.03; var(ddof=1) = (1e-4 + 0 + 4e-4 + 1e-4 + 4e-4) / 4 = 2.5e-4;
    # n_test/n_train = 20/80 = 0.25; se = sqrt((1/5 + 0.25) * 2.5e-4) = sqrt(1.125e-4)
    # = 0.03 / sqrt(8), so t = sqrt(8) = 2.8284271.
    # Student t, 4 df: F(t) = 1/2 + sin(a)/2 * (1 + cos(a)^2 / 2) with tan(a) = t / 2 = sqrt(2),
    # sin(a)^2 = 2/3, so p = 2 (1 - F) = 1 - (7/6) sqrt(2/3) = 1 - 7 sqrt(6) / 18 = 0.0474207.
    # 95% interval: 0.03 -+ 2.7764451 (t table, 4 df) * 0.0106066 = [0.0005514, 0.0594486].
    res = compute_corrected_t(D, test_train_ratio=0.25)
    assert res.mean == pytest.approx(0.03)
    assert res.statistic == pytest.approx(2.8284271, abs=1e-6)
    assert res.p_value == pytest.approx(0.0474207, abs=1e-6)
    assert res.df == 4
    assert (res.ci_low, res.ci_high) == pytest.approx((0.0005514, 0.0594486), abs=1e-6)


def test_corrected_t_without_the_correction_is_the_paired_t_test():
    # n_test/n_train = 0 leaves 1/k: t = 0.03 / sqrt(2.5e-4 / 5) = 3 sqrt(2) = 4.2426407;
    # tan(a)^2 = 4.5, sin(a) = 3 / sqrt(11): p = 1 - (3 / sqrt(11)) (12 / 11)
    # = 1 - 36 / (11 sqrt(11)) = 0.0132356
    res = compute_corrected_t(D, test_train_ratio=0.0)
    assert res.statistic == pytest.approx(4.2426407, abs=1e-6)
    assert res.p_value == pytest.approx(0.0132356, abs=1e-6)
    ref = ttest_rel(np.array(D) + 0.5, np.full(5, 0.5))  # the reference library agrees
    assert res.p_value == pytest.approx(ref.pvalue)


def test_corrected_t_is_antisymmetric_and_nan_when_undefined():
    flipped = compute_corrected_t([-d for d in D], 0.25)
    assert flipped.statistic == pytest.approx(-2.8284271, abs=1e-6)
    assert flipped.p_value == pytest.approx(0.0474207, abs=1e-6)
    assert np.isnan(compute_corrected_t([0.02], 0.25).p_value)  # one fold
    assert np.isnan(compute_corrected_t([0.02, 0.02, 0.02], 0.25).p_value)  # no spread


# --- paired bootstrap ---


def test_mean_and_auc_statistics_by_hand():
    values = np.array([[1.0, 2.0, 3.0], [3.0, 4.0, 5.0]])  # 2 fold models x 3 images
    weights = np.array([[1.0, 1.0, 1.0], [3.0, 0.0, 0.0]])  # draw counts of 2 resamples
    # resample 1: (2 + 4) / 2 = 3; resample 2: image 0 only: (1 + 3) / 2 = 2
    np.testing.assert_allclose(mean_over_images(values, weights), [3.0, 2.0])
    auc = auc_over_images(np.array([0, 0, 1, 1]))
    # the scikit-learn docs' example: 3 of 4 positive-negative pairs ordered right
    assert auc(np.array([[0.1, 0.4, 0.35, 0.8]]), np.ones((1, 4)))[0] == pytest.approx(0.75)
    # a tie counts one half: (1 + 0.5 + 1 + 1) / 4
    assert auc(np.array([[0.1, 0.5, 0.5, 0.8]]), np.ones((1, 4)))[0] == pytest.approx(0.875)
    # negative 0.1 drawn twice: pairs weigh 2 * 3; right: 0.35>0.1 (2), 0.8>0.1 (2), 0.8>0.4 (1)
    got = auc(np.array([[0.1, 0.4, 0.35, 0.8]]), np.array([[2.0, 1.0, 1.0, 1.0]]))[0]
    assert got == pytest.approx(5 / 6)
    assert np.isnan(auc(np.array([[0.1, 0.4, 0.35, 0.8]]), np.array([[1.0, 1.0, 0.0, 0.0]]))[0])


def test_bootstrap_of_a_clearly_positive_difference_excludes_zero():
    b = np.linspace(0.80, 0.90, 50)
    d = 0.05 + 0.01 * np.sin(np.arange(50))  # every image better by 0.04 to 0.06
    res = compute_paired_bootstrap(b + d, b, n_resamples=2000, seed=0)
    assert res.diff == pytest.approx(np.mean(d))
    assert (res.value_a, res.value_b) == pytest.approx((np.mean(b + d), 0.85))
    assert 0.04 <= res.ci_low < res.diff < res.ci_high <= 0.06
    # no resample has a difference <= 0: p = 2 * (1 + 0) / (2000 + 1)
    assert res.p_value == pytest.approx(2 / 2001)
    assert res.n_resamples == 2000


def test_bootstrap_of_a_zero_mean_difference_covers_zero():
    b = np.linspace(0.5, 0.9, 40)
    d = np.tile([0.1, -0.1], 20)  # mean exactly 0
    res = compute_paired_bootstrap(b + d, b, seed=0)
    assert res.diff == pytest.approx(0.0, abs=1e-12)
    assert res.ci_low < 0 < res.ci_high
    assert res.p_value > 0.5


def test_bootstrap_keeps_the_pairing():
    # images differ a lot, the two strategies by exactly 0.01 on each: an unpaired resampling
    # would give a wide interval, the paired one none
    b = np.linspace(0.0, 1.0, 30)
    res = compute_paired_bootstrap(b + 0.01, b, seed=3)
    assert (res.ci_low, res.ci_high) == pytest.approx((0.01, 0.01))


def test_bootstrap_is_reproducible_with_its_seed():
    rng = np.random.default_rng(7)
    a, b = rng.random((3, 25)), rng.random((3, 25))
    first, again = compute_paired_bootstrap(a, b, seed=1), compute_paired_bootstrap(a, b, seed=1)
    assert first == again
    other = compute_paired_bootstrap(a, b, seed=2)
    assert (other.ci_low, other.ci_high) != (first.ci_low, first.ci_high)
    assert other.diff == first.diff  # the observed difference does not depend on the seed


def test_confusion_over_images_counts_weights_as_repeated_images():
    """F-score and MCC of weighted images equal those of the images repeated that often
    (``compute_pooled_classification`` on the expanded labels); two models average."""
    from analysis.tables import compute_pooled_classification

    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 30)
    pred = np.stack([np.where(rng.random(30) < 0.7, y, 1 - y) for _ in range(2)])
    weights = rng.integers(0, 4, (5, 30)).astype(float)
    for metric in ("f1", "mcc"):
        got = confusion_over_images(y, metric)(pred, weights)
        want = [np.mean([compute_pooled_classification(np.repeat(y, w.astype(int)),
                                                       np.repeat(p, w.astype(int)))[metric]
                         for p in pred]) for w in weights]
        assert got == pytest.approx(want)
    # nothing predicted positive and nothing positive: MCC undefined, every image right: 1
    zeros = np.zeros(4)
    assert confusion_over_images(zeros, "mcc")(zeros[None], np.ones((1, 4)))[0] == 1.0
    assert confusion_over_images(zeros, "f1")(zeros[None], np.ones((1, 4)))[0] == 0.0
    with pytest.raises(ValueError, match="f1"):
        confusion_over_images(y, "precision")


def test_bootstrap_interval_brackets_the_value_and_narrows_with_more_images():
    rng = np.random.default_rng(3)
    small, large = rng.normal(0.9, 0.05, 40), rng.normal(0.9, 0.05, 4000)
    few, many = compute_bootstrap_interval(small), compute_bootstrap_interval(large)
    assert few.value == pytest.approx(small.mean()) and few.n_resamples == 2000
    assert few.ci_low < few.value < few.ci_high
    # a percentile interval of a mean: about +-1.96 standard errors
    assert few.ci_high - few.ci_low == pytest.approx(2 * 1.96 * small.std() / np.sqrt(40), rel=0.15)
    assert many.ci_high - many.ci_low < (few.ci_high - few.ci_low) / 5
    assert compute_bootstrap_interval(small, seed=0) == few  # seeded
    with pytest.raises(ValueError, match="no images"):
        compute_bootstrap_interval(np.array([]))
    # an AUC that is 1 on every resample with both classes; resamples with one class left out
    y = np.array([0, 0, 0, 1, 1])
    perfect = compute_bootstrap_interval(np.array([0.1, 0.2, 0.3, 0.8, 0.9]), auc_over_images(y))
    assert (perfect.value, perfect.ci_low, perfect.ci_high) == (1.0, 1.0, 1.0)
    assert 0 < perfect.n_resamples < 2000


def test_interval_and_paired_bootstrap_draw_the_same_images():
    """One seed, one set of resamples: a pair's difference is the difference of the two
    intervals' resampled means, resample by resample."""
    weights = resample_weights(25, 300, seed=4)
    assert weights.shape == (300, 25) and (weights.sum(1) == 25).all()
    rng = np.random.default_rng(1)
    a, b = rng.random(25), rng.random(25)
    paired = compute_paired_bootstrap(a, b, n_resamples=300, seed=4)
    diffs = mean_over_images(a[None], weights) - mean_over_images(b[None], weights)
    assert (paired.ci_low, paired.ci_high) == pytest.approx(tuple(np.quantile(diffs, [0.025, 0.975])))
