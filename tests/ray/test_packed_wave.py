"""A packed wave for real: three stages share one Train run that pulls them from the wave's
queue, the worker is killed in the middle stage and resumes it from that stage's checkpoint."""

from __future__ import annotations

import json

import pandas as pd
import pytest

pytestmark = [pytest.mark.ray, pytest.mark.slow]


def test_packed_wave_runs_stages_in_one_train_run_and_recovers(ray_session, smoke_config,
                                                               tmp_path):
    from sweeps.driver import run_experiment
    from umsrep.experiment import load_experiment

    cfg = dict(smoke_config)
    cfg["strategies"] = [{"name": "independent"}, {"name": "joint"}]
    cfg["baseline"] = {"enabled": True}
    cfg["search"] = {"num_samples": 0}
    cfg["resources"] = {**cfg["resources"], "max_concurrent": 1, "pack": True}
    exp = load_experiment(data=cfg)
    marker = tmp_path / "killed.txt"
    # order in the queue: the baseline first (longest expected), then joint, then independent
    fault = {"stage": "f0-joint", "epoch": 1, "marker": str(marker)}
    run_dir = run_experiment(exp, tmp_path / "runs", report=False, fault_injection=fault)

    assert marker.exists(), "the worker was never killed"
    train_runs = sorted(p.name for p in (run_dir / "ray_train").iterdir() if p.is_dir())
    assert train_runs == ["wave0-pack0"]  # one worker group for the whole wave
    stages = pd.read_parquet(run_dir / "stages.parquet").set_index("strategy")
    assert sorted(stages.index) == ["baseline", "independent", "joint"]
    assert (stages["status"] == "done").all()
    joint = json.loads((run_dir / "stages" / "f0-joint" / "result.json").read_text())
    assert joint["history_epochs"] == [0, 1]  # epoch 0 came from the checkpoint, not rerun
    first = run_dir / "stages" / "f0-baseline-abnormal" / "result.json"
    assert first.stat().st_mtime < marker.stat().st_mtime  # done before the crash, not redone
    preds = pd.read_parquet(run_dir / "predictions.parquet")
    test = preds[preds.split == "test"]
    assert test.groupby("strategy").size().to_dict() == {"baseline": 12, "independent": 12,
                                                        "joint": 12}
