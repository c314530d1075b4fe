import pandas as pd
import pytest

from analysis.cost import cost_summary, head_costs, stage_costs

# The paper's Table 4 (heterogeneous CXR): minutes and trainable parameters.
TABLE4 = [
    ("backbone", "", "", 302.20, 800_067),
    ("head", "independent", "lung", 8.11, 786_497),
    ("head", "independent", "abnormality", 2.51, 295_715),
    ("baseline", "baseline", "denoise", 302.20, 800_067),
    ("baseline", "baseline", "lung", 148.02, 786_497),
    ("baseline", "baseline", "abnormality", 9.25, 1_573_506),
]


def _stages(rows, folds=(0,)):
    return pd.DataFrame(
        [
            {
                "run": "r",
                "fold": f,
                "kind": k,
                "strategy": s,
                "task": t,
                "status": "done",
                "wall_s": m * 60,
                "epochs": 1,
                "trainable_params": p,
                "checkpoint": "",
            }
            for f in folds
            for k, s, t, m, p in rows
        ]
    )


def test_reductions_reproduce_paper_table_4():
    row = cost_summary(_stages(TABLE4)).iloc[0]
    assert row["shared_minutes"] == pytest.approx(312.82)
    assert row["baseline_minutes"] == pytest.approx(459.47)
    assert row["time_reduction_pct"] == pytest.approx(100 * (459.47 - 312.82) / 459.47)  # 31.92%
    assert (row["shared_params"], row["baseline_params"]) == (1_882_279, 3_160_070)
    assert row["params_reduction_pct"] == pytest.approx(40.4355, abs=1e-3)
    # one more task: one head (mean of 8.11, 2.51) vs one separate model (mean of 148.02, 9.25)
    assert row["marginal_shared_minutes"] == pytest.approx(5.31)
    assert row["marginal_baseline_minutes"] == pytest.approx(78.635)


def test_a_fine_tuned_backbone_is_counted_once_in_the_shared_parameters():
    """joint trains the encoder the backbone stage trained (backbone_params of its
    trainable_params): the shared model has the backbone once, plus the heads."""
    rows = [r for r in TABLE4 if r[1] != "independent"] + [
        ("head", "joint", "", 20.0, 400_000 + 786_497 + 295_715)]
    st = _stages(rows, folds=(0, 1)).assign(backbone_params=0)
    st.loc[st["strategy"] == "joint", "backbone_params"] = 400_000  # the encoder's part
    row = cost_summary(st).set_index("strategy").loc["joint"]
    assert row["shared_params"] == 800_067 + 786_497 + 295_715 == 1_882_279
    assert row["marginal_shared_params"] == pytest.approx((786_497 + 295_715) / 2)
    # a run folder written before backbone_params (no column): counted as trained, as before
    old = cost_summary(st.drop(columns="backbone_params")).set_index("strategy").loc["joint"]
    assert old["shared_params"] == 1_882_279 + 400_000


def test_run_totals_count_a_stored_backbone_once_and_every_folds_heads():
    """Three folds share one stored CDAE (the same checkpoint; the baseline's denoiser is it
    too): the run trained it once, and each fold's heads and separate models."""
    st = _stages(TABLE4, folds=(0, 1, 2))
    pretrain = (st["kind"] == "backbone") | (st["task"] == "denoise")
    st.loc[pretrain, "checkpoint"] = "store/abc/checkpoint"
    row = cost_summary(st).iloc[0]
    assert row["shared_minutes"] == pytest.approx(312.82)  # per fold: the backbone each time
    assert row["run_shared_minutes"] == pytest.approx(302.20 + 3 * (8.11 + 2.51))
    assert row["run_baseline_minutes"] == pytest.approx(302.20 + 3 * (148.02 + 9.25))
    assert row["run_time_ratio"] == pytest.approx(334.06 / 774.01)
    # without a store (no checkpoint path), every fold's stage counts
    st.loc[pretrain, "checkpoint"] = ""
    assert cost_summary(st).iloc[0]["run_shared_minutes"] == pytest.approx(3 * 312.82)


def test_stage_costs_average_folds_and_skip_failed_stages():
    st = _stages(TABLE4, folds=(0, 1))
    st.loc[(st["fold"] == 1) & (st["kind"] == "backbone"), "wall_s"] = 302.20 * 60 * 3
    st = pd.concat([st, _stages([("head", "joint", "", 999.0, 5)]).assign(status="failed")])
    costs = stage_costs(st)
    backbone = costs[costs["kind"] == "backbone"].iloc[0]
    assert backbone["minutes"] == pytest.approx(302.20 * 2) and backbone["n_folds"] == 2
    assert "joint" not in set(costs["strategy"])


def test_multitask_head_is_split_over_tasks_and_no_baseline_gives_nan():
    rows = [r for r in TABLE4 if r[0] != "baseline"] + [("head", "joint", "", 10.0, 1_000)]
    out = cost_summary(_stages(rows)).set_index("strategy")
    assert out.loc["joint", "marginal_shared_minutes"] == pytest.approx(5.0)  # 2 task heads
    assert pd.isna(out.loc["joint", "time_reduction_pct"])


def _curve(kind, strategy, task, metric, points, fold=0):
    return [{"run": "r", "fold": fold, "kind": kind, "strategy": strategy, "task": task,
             "epoch": e, "elapsed_s": s, "metric": metric, "value": v}
            for e, (s, v) in enumerate(points)]


def test_time_to_quality_counts_backbone_denoiser_and_first_epoch_at_baseline_best():
    from analysis.cost import time_to_quality

    stages = _stages([
        ("backbone", "", "", 5.0, 1),  # 300 s
        ("baseline", "baseline", "denoise", 5.0, 1),  # 300 s
        ("baseline", "baseline", "lung", 10.0, 1),
        ("head", "joint", "", 8.0, 1),
        ("head", "independent", "lung", 4.0, 1),
    ])
    curves = pd.DataFrame(
        # baseline: best Dice 0.90 first at 480 s (a later equal value does not count)
        _curve("baseline", "baseline", "lung", "lung/dice",
               [(120, 0.70), (240, 0.85), (480, 0.90), (600, 0.90)])
        # the loss is no quality metric; an AUC of another task is not the lung's
        + _curve("baseline", "baseline", "lung", "lung/iou", [(120, 0.99)])
        + _curve("head", "joint", "", "lung/dice", [(60, 0.80), (120, 0.91), (180, 0.95)])
        + _curve("head", "joint", "", "abnormal/auc", [(60, 0.99)])
        # the frozen-backbone head never reaches 0.90
        + _curve("head", "independent", "lung", "lung/dice", [(60, 0.85), (120, 0.89)]))
    got = time_to_quality(stages, curves).set_index("strategy")
    assert set(got.index) == {"joint", "independent"}
    joint = got.loc["joint"]
    assert joint["metric"] == "dice" and joint["baseline_quality"] == pytest.approx(0.90)
    assert joint["baseline_minutes"] == pytest.approx((300 + 480) / 60)  # 13.0
    assert joint["shared_minutes"] == pytest.approx((300 + 120) / 60)  # 7.0
    assert joint["ratio"] == pytest.approx(7.0 / 13.0)
    assert joint["run_ratio"] == pytest.approx(7.0 / 13.0)  # one fold: the same
    assert (joint["folds_reached"], joint["n_folds"]) == (1, 1)
    ind = got.loc["independent"]
    assert ind["folds_reached"] == 0 and pd.isna(ind["shared_minutes"]) and pd.isna(ind["ratio"])


def test_time_to_quality_over_the_run_counts_the_stored_backbone_once():
    """Two folds reuse one stored backbone (300 s; the baseline's denoiser is it): per fold the
    ratio charges it twice, over the run once."""
    from analysis.cost import time_to_quality

    stages = _stages([("backbone", "", "", 5.0, 1), ("baseline", "baseline", "denoise", 5.0, 1),
                      ("baseline", "baseline", "lung", 10.0, 1), ("head", "joint", "", 8.0, 1)],
                     folds=(0, 1))
    stages.loc[stages["task"].isin(["", "denoise"]) & (stages["kind"] != "head"),
               "checkpoint"] = "store/k/checkpoint"
    curves = pd.DataFrame(
        [row for fold in (0, 1) for row in
         _curve("baseline", "baseline", "lung", "lung/dice", [(240, 0.8), (480, 0.9)], fold)
         + _curve("head", "joint", "", "lung/dice", [(60, 0.85), (120, 0.95)], fold)])
    joint = time_to_quality(stages, curves).set_index("strategy").loc["joint"]
    assert joint["ratio"] == pytest.approx((300 + 120) / (300 + 480))
    assert joint["run_ratio"] == pytest.approx((300 + 2 * 120) / (300 + 2 * 480))


def test_time_to_quality_is_empty_without_curves():
    from analysis.cost import QUALITY_COLUMNS, time_to_quality

    empty = pd.DataFrame(columns=["run", "fold", "kind", "strategy", "task", "epoch",
                                  "elapsed_s", "metric", "value"])
    got = time_to_quality(_stages(TABLE4), empty)
    assert got.empty and list(got.columns) == QUALITY_COLUMNS


def test_head_costs_put_each_tasks_head_beside_its_own_separate_model():
    """Table 4: the independent TB head took 2.51 min against the separate TB model's 9.25
    (0.27x), the lung head 8.11 against 148.02 (0.055x); a joint stage (task "") is split
    evenly over the tasks."""
    joint = [("head", "joint", "", 12.0, 900_000)]
    costs = head_costs(_stages(TABLE4 + joint, folds=(0, 1)))
    got = {(r.strategy, r.task): r for r in costs.itertuples(index=False)}
    assert set(got) == {(s, t) for s in ("independent", "joint") for t in ("abnormality", "lung")}
    tb = got["independent", "abnormality"]
    assert (tb.head_minutes, tb.model_minutes) == (pytest.approx(2.51), pytest.approx(9.25))
    assert tb.ratio == pytest.approx(2.51 / 9.25)
    assert got["independent", "lung"].ratio == pytest.approx(8.11 / 148.02)
    assert got["joint", "lung"].head_minutes == pytest.approx(6.0)
    assert got["joint", "abnormality"].ratio == pytest.approx(6.0 / 9.25)
    assert got["joint", "abnormality"].head_params == 450_000
    assert got["joint", "lung"].split and not got["independent", "lung"].split


def test_head_costs_share_an_alternating_stage_by_its_tasks_step_time():
    """An alternating stage that spent 3 of every 4 step-seconds on lung turns: lung gets 3/4
    of its minutes, per fold, then the mean over folds; an older stage (no step times) splits
    evenly, and says so."""
    rows = TABLE4 + [("head", "alternating", "", 12.0, 900_000)]
    stages = _stages(rows, folds=(0, 1))
    alt = stages["strategy"] == "alternating"
    stages["task_seconds"] = ""
    stages.loc[alt & (stages["fold"] == 0), "task_seconds"] = \
        '{"abnormality": 100.0, "lung": 300.0}'
    stages.loc[alt & (stages["fold"] == 1), "task_seconds"] = \
        '{"abnormality": 200.0, "lung": 200.0}'
    got = {(r.strategy, r.task): r for r in head_costs(stages).itertuples(index=False)}
    lung, tb = got["alternating", "lung"], got["alternating", "abnormality"]
    assert lung.head_minutes == pytest.approx((9.0 + 6.0) / 2)
    assert tb.head_minutes == pytest.approx((3.0 + 6.0) / 2)
    assert tb.ratio == pytest.approx(4.5 / 9.25)
    assert lung.split and lung.split_by == "step time" and tb.head_params == 450_000
    assert got["independent", "lung"].split_by == ""
    # one fold written before step times were kept: the stage is split evenly
    stages.loc[alt & (stages["fold"] == 1), "task_seconds"] = ""
    got = {(r.strategy, r.task): r for r in head_costs(stages).itertuples(index=False)}
    assert got["alternating", "lung"].head_minutes == pytest.approx(6.0)
    assert got["alternating", "lung"].split_by == "even"


def test_head_costs_of_a_timed_shared_stage_alone_name_its_tasks_and_add_up():
    """No separate model and no per-task head name the tasks: the stage's step times do, and
    the shares add up to its minutes."""
    stages = _stages([("head", "joint", "", 12.0, 900_000)])
    stages["task_seconds"] = '{"lung": 100.0, "tb": 300.0}'
    costs = head_costs(stages).set_index("task")
    assert costs["head_minutes"].to_dict() == {"lung": pytest.approx(3.0),
                                               "tb": pytest.approx(9.0)}
    assert (costs["split_by"] == "step time").all()


@pytest.mark.parametrize("bad", ["{not json", "[1, 2]", '{"lung": "fast"}'])
def test_head_costs_name_a_malformed_task_seconds(bad):
    stages = _stages([("head", "joint", "", 12.0, 900_000)])
    stages["task_seconds"] = bad
    with pytest.raises(ValueError, match="task_seconds .*expected a JSON object"):
        head_costs(stages)


def test_head_costs_without_a_baseline_have_no_ratio():
    rows = [r for r in TABLE4 if r[0] != "baseline"]
    costs = head_costs(_stages(rows))
    assert len(costs) == 2 and costs["ratio"].isna().all()
    assert costs["model_minutes"].isna().all()
    # a run of shared stages alone (task "", no task named anywhere): each counted once
    costs = head_costs(_stages([("head", "joint", "", 12.0, 900_000)]))
    assert costs["head_minutes"].tolist() == [pytest.approx(12.0)]
    assert costs["head_params"].tolist() == [900_000]
