"""End to end as on a cluster: ``ray start --head`` on 127.0.0.1, then ``ray job submit`` of the
smoke experiment through ``python -m sweeps.run``, with the project's runtime_env and token
authentication on: the same job API refuses a submission without the token or with another."""

from __future__ import annotations

import json
import os
import secrets
from pathlib import Path

import pandas as pd
import pytest
import yaml
from _cli_cluster import job_submit, start_head, stop_cluster

from sweeps.pareto import pareto_choice

pytestmark = [pytest.mark.ray, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
PORT, DASHBOARD = 6391, 8291
AUTH_VARS = ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH")


def test_ray_job_submit_smoke_experiment(smoke_config, tmp_path):
    # searched on two objectives: Optuna's multi-objective sampler, and the kept configuration
    # the Pareto trial with the best rank sum (sweeps/pareto.py), what the folds then train with
    objectives, modes = ["val/abnormal/auc", "val/loss"], ["max", "min"]
    smoke_config["search"] |= {"objectives": objectives, "modes": modes}
    cfg = tmp_path / "smoke.yaml"
    cfg.write_text(yaml.safe_dump(smoke_config))
    out = tmp_path / "runs"
    # Token auth on, as cluster/README.md runs it; the token is this test's own (through
    # RAY_AUTH_TOKEN_PATH), so the user's ~/.ray/auth_token is neither read nor written. The
    # job's driver (`python -m sweeps.run`, its ray.init and Train workers) inherits both
    # variables from the cluster's processes.
    token = tmp_path / "auth_token"
    token.write_text(secrets.token_hex(32))
    env = {**os.environ, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(token)}
    env.pop("RAY_AUTH_TOKEN", None)
    start = start_head(PORT, DASHBOARD, env)
    try:
        assert start.returncode == 0, start.stderr[-2000:]
        # ShadowRay (CVE-2023-48022): the job API runs code for whoever reaches it; this
        # cluster refuses a submission without its token (the symptom: a shell that
        # never set RAY_AUTH_MODE sends none) and one with another token
        no_auth = {k: v for k, v in env.items() if k not in AUTH_VARS}
        for refused_env, status in ((no_auth, "Unauthorized"),
                                    ({**env, "RAY_AUTH_TOKEN": "0" * 64}, "Forbidden")):
            refused = job_submit(DASHBOARD, ["python", "-c", "print('refused-job-ran')"],
                                 refused_env, timeout=120)
            said = refused.stdout + refused.stderr
            assert refused.returncode != 0 and status in said, said[-3000:]
            assert "refused-job-ran" not in said
        job = job_submit(
            DASHBOARD,
            ["python", "-m", "sweeps.run", str(cfg), "--smoke-test", "--output", str(out),
             "--no-report"],
            env, "--working-dir", str(REPO), "--runtime-env",
            str(REPO / "cluster/runtime_env.yaml"), cwd=REPO,
        )
        assert job.returncode == 0, (job.stdout + job.stderr)[-4000:]
        # the entrypoint's last line names the run folder (the job logs are streamed back)
        named = [ln.strip() for ln in job.stdout.splitlines() if ln.strip().startswith(str(out))]
        assert named, job.stdout[-3000:]
        run_dir = Path(named[-1])
        assert run_dir.parent == out and (run_dir / "stages.parquet").exists()
        # each Train run keeps its last report beside its checkpoints (what Tune gets should Ray
        # Train lose it: sweeps.driver.report_lost_final): a sweep trial's is its stage's last
        # epoch, with the searched metric
        trials = sorted((run_dir / "tune").glob("*/trials/*"))
        assert len(trials) == smoke_config["search"]["num_samples"]
        for trial in trials:
            last = json.loads(next((run_dir / "ray_train").glob(
                f"sweep-*-{trial.name}/last_report.json")).read_text())
            epochs = json.loads((trial / "result.json").read_text())["epochs"]
            assert last["epoch"] == epochs and "val_score" in last
        best = json.loads((run_dir / "tune" / "joint" / "best.json").read_text())
        assert best["metric"] == objectives and best["mode"] == modes
        table = pd.read_parquet(run_dir / "tune" / "joint" / "trials.parquet")
        lrs = table["config/lr"].astype(float).tolist()
        values = table[objectives].astype(float).reset_index(drop=True)
        chosen, front = pareto_choice(values, modes)
        assert best["config"]["lr"] == pytest.approx(lrs[chosen])
        assert best["value"] == pytest.approx(dict(values.iloc[chosen].items()))
        assert sorted(e["config"]["lr"] for e in best["pareto"]) == pytest.approx(
            sorted(lrs[i] for i in front))
        hparams = json.loads((run_dir / "hparams.json").read_text())
        assert hparams["joint"]["lr"] == pytest.approx(lrs[chosen])
        assert "succeeded" in job.stdout.lower()
    finally:
        stop_cluster(PORT)
