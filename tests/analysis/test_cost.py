import pandas as pd
import pytest

from analysis.cost import cost_summary, stage_costs

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
