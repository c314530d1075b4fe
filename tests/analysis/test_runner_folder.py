"""The analysis on a run folder the runner itself wrote (``runner_run_dir``, tests/conftest.py).

The labels, fold values and predictions are the runner's; every expected value below is counted
from its Parquet files with plain pandas/scipy, not by the analysis code under test.
"""

from __future__ import annotations

import argparse

import numpy as np
import pandas as pd
import pytest
from scipy.stats import binom, chi2

from analysis import cli
from analysis.load import load_runs
from analysis.significance import COLUMNS as SIGNIFICANCE_COLUMNS
from analysis.stats import pairwise_mcnemar
from analysis.tables import SHARED_BACKBONE, metric_summary, overview_table

RUNNER_BACKBONE = "shared"  # umsrep.schema.SHARED: the runner's label of backbone rows


def _read(run_dir, name: str) -> pd.DataFrame:
    return pd.read_parquet(run_dir / f"{name}.parquet")


def _fold_values(metrics: pd.DataFrame, strategy: str, task: str, metric: str,
                 split: str = "test") -> pd.Series:
    m = metrics[(metrics["strategy"] == strategy) & (metrics["task"] == task)
                & (metrics["metric"] == metric) & (metrics["split"] == split)
                & (metrics["fold"] >= 0) & (metrics["noise"] == "")]
    return m.set_index("fold")["value"].sort_index()


def test_the_runner_folder_has_the_labels_the_analysis_expects(runner_run_dir):
    """Pins the runner's side of the contract: a rename there must show up here."""
    stages = _read(runner_run_dir, "stages")
    backbone = stages[stages["kind"] == "backbone"]
    assert set(backbone["strategy"]) == {""} and set(backbone["task"]) == {"lung"}
    assert set(stages.loc[stages["kind"] == "head", "strategy"]) == {"independent", "joint"}
    metrics = _read(runner_run_dir, "metrics")
    lung = metrics[(metrics["task"] == "lung") & (metrics["split"] == "test")]
    assert set(lung["strategy"]) == {RUNNER_BACKBONE, "independent", "joint", "baseline"}
    # fold 1 reuses fold 0's stored backbone and reports no scores of its own
    assert set(lung.loc[lung["strategy"] == RUNNER_BACKBONE, "fold"]) == {0}


def test_load_runs_keeps_every_row_the_runner_wrote(runner_run_dir):
    data = load_runs([runner_run_dir])
    run = runner_run_dir.name
    assert data.runs == [run] and data.run_dirs[run] == runner_run_dir.resolve()
    assert data.configs[run]["experiment"]["name"] == "supervised"
    for name in ("stages", "metrics", "predictions", "curves"):
        raw, got = _read(runner_run_dir, name), getattr(data, name)
        assert len(got) == len(raw) > 0, name
        assert (got["run"] == run).all()
        pd.testing.assert_frame_equal(
            got.drop(columns="run").reset_index(drop=True), raw.reset_index(drop=True),
            check_dtype=False,
        )


def test_metric_summary_of_the_runner_folder(runner_run_dir):
    data = load_runs([runner_run_dir])
    raw, preds = _read(runner_run_dir, "metrics"), _read(runner_run_dir, "predictions")
    summary = metric_summary(data.metrics, data.predictions)
    iou = summary[(summary["task"] == "lung") & (summary["metric"] == "iou")]
    # the backbone's own lung scores are labelled as the backbone's, after the strategies
    assert iou["strategy"].tolist() == ["independent", "joint", SHARED_BACKBONE, "baseline"]
    iou = iou.set_index("strategy")
    assert iou.loc[SHARED_BACKBONE, "n_folds"] == 1
    assert iou.loc[SHARED_BACKBONE, "mean"] == pytest.approx(
        _fold_values(raw, RUNNER_BACKBONE, "lung", "iou").item())
    for strategy in ("independent", "joint", "baseline"):
        v = _fold_values(raw, strategy, "lung", "iou")
        row = iou.loc[strategy]
        assert row["n_folds"] == 2 == len(v)
        assert row["mean"] == pytest.approx((v[0] + v[1]) / 2)
        assert row["std"] == pytest.approx(abs(v[0] - v[1]) / np.sqrt(2))  # ddof=1, two folds
        p = preds[(preds["strategy"] == strategy) & (preds["task"] == "lung")
                  & (preds["split"] == "test") & (preds["fold"] >= 0)]
        assert len(p) == 32 and row["pooled"] == pytest.approx(p["iou"].sum() / 32)
    # the fold ensemble's own row (fold -1) is the ensemble column, never a fold
    ens = raw[(raw["fold"] == -1) & (raw["strategy"] == "joint") & (raw["task"] == "lung")
              & (raw["metric"] == "iou_orig") & (raw["split"] == "test")]["value"].item()
    joint = summary.query("task == 'lung' and metric == 'iou_orig' and strategy == 'joint'")
    assert joint["ensemble"].item() == pytest.approx(ens) and joint["n_folds"].item() == 2


def test_overview_names_a_strategy_never_the_backbone(runner_run_dir):
    """A supervised backbone scored on its own task: even when its scores are the best of all,
    the overview's best is one of the strategies (the runner's head stages)."""
    data = load_runs([runner_run_dir])
    metrics = data.metrics.copy()
    backbone = (metrics["strategy"] == RUNNER_BACKBONE) & (metrics["task"] == "lung")
    metrics.loc[backbone & metrics["metric"].isin(["iou", "dice"]), "value"] = 0.99
    summary = metric_summary(metrics, data.predictions)
    over = overview_table(summary, pairwise_mcnemar(data.predictions)).set_index("task")
    stages, raw = _read(runner_run_dir, "stages"), _read(runner_run_dir, "metrics")
    heads = sorted(set(stages.loc[stages["kind"] == "head", "strategy"]))
    for task, metric in (("lung", "iou"), ("abnormal", "accuracy")):
        means = {s: _fold_values(raw, s, task, metric).mean() for s in heads}
        top = max(means.values())
        row = over.loc[task]
        assert row["metric"] == metric
        assert row["best_strategy"] in {s for s, v in means.items() if v == top}
        base = _fold_values(raw, "baseline", task, metric).mean()
        assert row["baseline"] == pytest.approx(base)
        assert row["gain"] == pytest.approx(top - base)


def _mcnemar_p_by_hand(only_a: int, only_b: int) -> float:
    n = only_a + only_b
    if n == 0:
        return 1.0
    if n < 25:  # exact binomial, two-sided
        return min(1.0, 2 * binom.cdf(min(only_a, only_b), n, 0.5))
    return chi2.sf((abs(only_a - only_b) - 1) ** 2 / n, 1)  # with continuity correction


def test_significance_csv_of_the_runner_folder(runner_run_dir, tmp_path):
    parser = argparse.ArgumentParser()
    cli.add_arguments(parser)
    out = tmp_path / "r.html"
    args = parser.parse_args([str(runner_run_dir), "-o", str(out), "--bootstrap-resamples", "200"])
    assert cli.run(args) == 0
    sig = pd.read_csv(tmp_path / "r_tables" / "significance.csv")
    assert list(sig.columns) == SIGNIFICANCE_COLUMNS
    preds, raw = _read(runner_run_dir, "predictions"), _read(runner_run_dir, "metrics")
    # McNemar of joint vs baseline on the abnormal task, pairs counted by hand: every fold
    # model scores the external test set, so each image counts once, by the fold ensemble
    p = preds[(preds["task"] == "abnormal") & (preds["split"] == "test")]
    assert p[p["fold"] >= 0].duplicated(["strategy", "sample_id"]).any()
    p = p[p["fold"] == -1]
    right = p.assign(ok=p["y_true"] == p["y_pred"]).pivot_table(
        index="sample_id", columns="strategy", values="ok", aggfunc="first")
    assert len(right) == 16
    only_a = int((right["joint"] & ~right["baseline"]).sum())
    only_b = int((~right["joint"] & right["baseline"]).sum())
    row = sig.query("task == 'abnormal' and test == 'mcnemar' and a == 'joint' "
                    "and b == 'baseline'").iloc[0]
    assert row["p"] == pytest.approx(_mcnemar_p_by_hand(only_a, only_b))
    assert row["mean_a"] == pytest.approx(right["joint"].mean())
    assert row["mean_b"] == pytest.approx(right["baseline"].mean())
    # the corrected t-test's means are the fold means of the runner's own val scores
    row = sig.query("task == 'abnormal' and metric == 'accuracy' and test == 'corrected_t' "
                    "and a == 'joint' and b == 'baseline'").iloc[0]
    assert row["split"] == "val"
    assert row["mean_a"] == pytest.approx(_fold_values(raw, "joint", "abnormal", "accuracy",
                                                       "val").mean())
    assert row["mean_b"] == pytest.approx(_fold_values(raw, "baseline", "abnormal", "accuracy",
                                                       "val").mean())


def test_the_report_takes_correct_iou_from_the_runner_config(runner_run_dir, tmp_path):
    """``evaluation.correct_iou`` sits where the runner writes it (under ``experiment``)."""
    import shutil

    import yaml

    from analysis.report import ReportOptions, resolve_options

    run = tmp_path / "strict"
    run.mkdir()
    for name in ("stages", "metrics", "predictions"):
        shutil.copy(runner_run_dir / f"{name}.parquet", run)
    config = yaml.safe_load((runner_run_dir / "config.yaml").read_text())
    assert config["experiment"]["evaluation"]["correct_iou"] == 0.9  # the runner's default
    config["experiment"]["evaluation"]["correct_iou"] = 0.25
    (run / "config.yaml").write_text(yaml.safe_dump(config))
    assert resolve_options(load_runs([run]), ReportOptions()).iou_threshold == 0.25
    assert resolve_options(load_runs([runner_run_dir]), ReportOptions()).iou_threshold == 0.9


def test_significance_pairs_strategies_only(runner_run_dir):
    """A supervised backbone's own lung scores are no strategy: the McNemar family of the lung
    task is the three pairs of independent, joint and baseline, as for the abnormal task."""
    data = load_runs([runner_run_dir])
    tests = pairwise_mcnemar(data.predictions)
    pairs = {(t, a, b) for t, a, b in zip(tests["task"], tests["a"], tests["b"], strict=True)}
    want = {("independent", "joint"), ("independent", "baseline"), ("joint", "baseline")}
    assert pairs == {(t, a, b) for t in ("lung", "abnormal") for a, b in want}
