"""Ray Train + Tune for real: a two-trial Optuna sweep, a killed driver resumed without redoing
finished work, and a Train worker killed mid-stage that resumes from its epoch checkpoint."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml

pytestmark = [pytest.mark.ray, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]


def _wait_for(predicate, timeout: float, proc: subprocess.Popen) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return
        if proc.poll() is not None:
            raise AssertionError(f"driver exited early with {proc.returncode}")
        time.sleep(0.5)
    raise AssertionError("timed out waiting for the driver")


def test_sweep_killed_driver_resumes_and_worker_recovers(ray_session, smoke_config, tmp_path):
    from sweeps.driver import run_experiment
    from umsrep.experiment import load_experiment

    cfg_path = tmp_path / "smoke.yaml"
    cfg_path.write_text(yaml.safe_dump(smoke_config))
    out = tmp_path / "runs"
    address = ray_session.get_runtime_context().gcs_address
    log = (tmp_path / "driver.log").open("w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "sweeps.run", str(cfg_path), "--output", str(out),
         "--address", address, "--no-report"],
        cwd=REPO, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        env={**os.environ, "RAY_CHDIR_TO_TRIAL_DIR": "0"},
    )
    try:
        # the two-trial sweep finishes (its choice is written), then the driver is killed
        _wait_for(lambda: list(out.glob("*/tune/joint/best.json")), 400, proc)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    run_dir = next(out.glob("raysmoke-*"))
    best = run_dir / "tune" / "joint" / "best.json"
    best_mtime = best.stat().st_mtime_ns
    trials = pd.read_parquet(run_dir / "tune" / "joint" / "trials.parquet")
    assert len(trials) == 2 and "config/lr" in trials.columns
    chosen = json.loads(best.read_text())
    assert chosen["chosen_on"].startswith("validation")
    assert not (run_dir / "stages" / "f0-joint" / "result.json").exists()

    # resume: the sweep is not rerun; the stage's worker is killed once after epoch 0 and
    # Ray Train restarts it from that epoch's checkpoint
    marker = tmp_path / "killed.txt"
    exp = load_experiment(cfg_path)
    fault = {"stage": "f0-joint", "epoch": 1, "marker": str(marker)}
    assert run_experiment(exp, out, resume=run_dir, report=False,
                          fault_injection=fault) == run_dir
    assert marker.exists(), "the worker was never killed"
    assert best.stat().st_mtime_ns == best_mtime
    assert len(list((run_dir / "ray_tune").glob("sweep-joint*"))) == 1
    result = json.loads((run_dir / "stages" / "f0-joint" / "result.json").read_text())
    assert result["status"] == "done"
    assert result["history_epochs"] == [0, 1]  # epoch 0 came from the checkpoint, not rerun
    preds = pd.read_parquet(run_dir / "predictions.parquet")
    test = preds[(preds.split == "test") & (preds.strategy == "joint")]
    assert len(test) == 12 and test.sample_id.is_unique
    stages = pd.read_parquet(run_dir / "stages.parquet")
    assert list(stages.strategy) == ["joint"] and stages.epochs.iloc[0] == 2
