"""ROC curves of the report: which predictions each curve reads, and what it holds."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from analysis.figures import roc_figure
from analysis.roc import COLUMNS, ENSEMBLE, POOLED, roc_curves
from umsrep.metrics import compute_auc, compute_roc
from umsrep.schema import PREDICTIONS_COLUMNS


def _rows(fold, strategy, task, split, ids, y, score, iou=np.nan):
    return [{"fold": fold, "strategy": strategy, "task": task, "split": split,
             "sample_id": i, "y_true": int(t), "y_pred": int(s >= 0.5), "score": float(s),
             "iou": iou} for i, t, s in zip(ids, y, score, strict=True)]


@pytest.fixture
def predictions() -> pd.DataFrame:
    rng = np.random.default_rng(0)
    ids = [f"mc-{i}" for i in range(20)]
    y = np.array([0, 1] * 10)
    rows = []
    for fold in range(3):
        noisy = np.clip(0.3 + 0.4 * y + rng.normal(0, 0.3, 20), 0, 1)
        rows += _rows(fold, "joint", "tb", "test:montgomery", ids, y, noisy)
        rows += _rows(fold, "baseline", "tb", "test:montgomery", ids, y, noisy[::-1])
        # held-out: each fold its own images, one of them unlabelled
        val_ids = [f"sz-{fold}-{i}" for i in range(6)]
        rows += _rows(fold, "joint", "tb", "val", val_ids, [0, 0, 1, 1, 1, -1],
                      [0.1, 0.2 + fold / 10, 0.6, 0.7, 0.15, 0.9])
        rows += _rows(fold, "joint", "lung", "test:montgomery", ids, [1] * 20,
                      rng.uniform(0.9, 1, 20), iou=0.9)
        rows += _rows(fold, "joint", "view", "test:montgomery", ids, np.arange(20) % 3,
                      rng.uniform(0, 1, 20))  # three classes
        rows += _rows(fold, "joint", "tb", "test:jsrt", ids[:4], [0] * 4, [0.2] * 4)
        # three classes, though this split holds labels 0 and 1 only: its score is the
        # predicted class's probability, no curve to draw from it
        grade = _rows(fold, "joint", "grade", "test:montgomery", ids, y, rng.uniform(0, 1, 20))
        grade[0]["y_pred"] = 2
        rows += grade
    # the fold ensemble of joint separates the classes perfectly
    rows += _rows(-1, "joint", "tb", "test:montgomery", ids, y, 0.2 + 0.6 * y)
    return pd.DataFrame(rows).astype(PREDICTIONS_COLUMNS).assign(run="r")


def test_roc_curves_read_the_ensemble_the_fold_mean_or_the_pooled_held_out_images(predictions):
    curves = roc_curves(predictions)
    assert list(curves.columns) == COLUMNS
    # segmentation, three classes and a split of one class have no curve
    keys = curves[["split", "task", "strategy", "source"]].drop_duplicates()
    assert keys.values.tolist() == [
        ["test:montgomery", "tb", "joint", ENSEMBLE],
        ["test:montgomery", "tb", "baseline", ENSEMBLE],
        ["val", "tb", "joint", POOLED],
    ]
    joint = curves[(curves["split"] == "test:montgomery") & (curves["strategy"] == "joint")]
    assert joint["auc"].iloc[0] == 1.0 and joint[["n", "positives"]].iloc[0].tolist() == [20, 10]
    assert ((joint["fpr"] == 0) & (joint["tpr"] == 1)).any()  # the perfect corner
    # no ensemble rows for the baseline: each image's mean over the three fold models
    base = curves[curves["strategy"] == "baseline"]
    t = predictions[(predictions["strategy"] == "baseline") & (predictions["split"] ==
                                                                "test:montgomery")]
    mean = t.groupby("sample_id").agg(y=("y_true", "first"), s=("score", "mean"))
    assert base["auc"].iloc[0] == pytest.approx(compute_auc(mean["y"], mean["s"]))
    fpr, tpr, _ = compute_roc(mean["y"], mean["s"])
    assert base["fpr"].tolist() == pytest.approx(fpr) and base["tpr"].tolist() == pytest.approx(tpr)
    # held-out: 3 folds x 5 labelled images, each scored once by its own fold model
    val = curves[curves["split"] == "val"]
    assert val[["n", "positives"]].iloc[0].tolist() == [15, 9]
    assert val["auc"].iloc[0] == pytest.approx(
        compute_auc([0, 0, 1, 1, 1] * 3, [0.1, 0.2, 0.6, 0.7, 0.15, 0.1, 0.3, 0.6, 0.7, 0.15,
                                          0.1, 0.4, 0.6, 0.7, 0.15]))
    for _, c in curves.groupby(["split", "strategy"]):
        assert (c["fpr"].iloc[0], c["tpr"].iloc[0]) == (0, 0)
        assert (c["fpr"].iloc[-1], c["tpr"].iloc[-1]) == (1, 1)
        assert c["fpr"].is_monotonic_increasing and c["tpr"].is_monotonic_increasing


def test_roc_figure_draws_one_line_per_strategy_with_its_auc(predictions):
    curves = roc_curves(predictions)
    fig = roc_figure(curves[curves["split"] == "test:montgomery"], "tb · test:montgomery")
    names = [t.name for t in fig.data]
    assert names == ["chance", "joint (AUC 1.000)", f"baseline (AUC "
                     f"{curves[curves['strategy'] == 'baseline']['auc'].iloc[0]:.3f})"]
    assert "fold ensemble: 20 images, 10 positive" in fig.layout.title.text


def test_no_classification_no_curves(predictions):
    seg = predictions[predictions["task"] == "lung"]
    assert roc_curves(seg).empty and list(roc_curves(seg).columns) == COLUMNS
