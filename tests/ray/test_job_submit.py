"""End to end as on a cluster: ``ray start --head`` on 127.0.0.1, then ``ray job submit`` of the
smoke experiment through ``python -m sweeps.run``, with the project's runtime_env."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

pytestmark = [pytest.mark.ray, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
PORT, DASHBOARD = 6391, 8291


def _ray_pids() -> set[int]:
    """Processes whose command line mentions ray (read from /proc; no psutil needed)."""
    pids = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmd = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="ignore")
        except OSError:
            continue
        if "ray" in cmd and int(entry.name) != os.getpid():
            pids.add(int(entry.name))
    return pids


def _stop_new(before: set[int]) -> None:
    """Stop only the processes of the cluster this test started, not a shared test session
    (``ray stop`` would stop every Ray process on the machine)."""
    new = _ray_pids() - before
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in new:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        time.sleep(3)
        new = {pid for pid in new if Path(f"/proc/{pid}").exists()}
        if not new:
            return


def test_ray_job_submit_smoke_experiment(smoke_config, tmp_path):
    ray_cli = shutil.which("ray") or str(Path(sys.executable).parent / "ray")
    cfg = tmp_path / "smoke.yaml"
    cfg.write_text(yaml.safe_dump(smoke_config))
    out = tmp_path / "runs"
    before = _ray_pids()
    # A local ray.init() leaves a token in ~/.ray and Ray 2.5x+ then turns on token auth for
    # later clusters; this loopback-only test cluster opts out explicitly.
    env = {**os.environ, "RAY_AUTH_MODE": "disabled"}
    start = subprocess.run(
        [ray_cli, "start", "--head", "--node-ip-address=127.0.0.1", f"--port={PORT}",
         f"--dashboard-port={DASHBOARD}", "--dashboard-host=127.0.0.1", "--num-cpus=2",
         "--num-gpus=0", "--disable-usage-stats"],
        capture_output=True, text=True, timeout=180, env=env,
    )
    try:
        assert start.returncode == 0, start.stderr[-2000:]
        for _ in range(12):  # the head's job agent starts after `ray start` returns; on a
            # loaded 2-core machine it took over a minute ("No available agent to submit job")
            job = subprocess.run(
                [ray_cli, "job", "submit", "--address", f"http://127.0.0.1:{DASHBOARD}",
                 "--working-dir", str(REPO), "--runtime-env",
                 str(REPO / "cluster/runtime_env.yaml"), "--", "python", "-m", "sweeps.run",
                 str(cfg), "--smoke-test", "--output", str(out), "--no-report"],
                capture_output=True, text=True, timeout=600, cwd=REPO, env=env,
            )
            if "No available agent" not in job.stdout + job.stderr:
                break
            time.sleep(10)
        assert job.returncode == 0, (job.stdout + job.stderr)[-4000:]
        # the entrypoint's last line names the run folder (the job logs are streamed back)
        named = [ln.strip() for ln in job.stdout.splitlines() if ln.strip().startswith(str(out))]
        assert named, job.stdout[-3000:]
        run_dir = Path(named[-1])
        assert run_dir.parent == out and (run_dir / "stages.parquet").exists()
        assert "succeeded" in job.stdout.lower()
    finally:
        _stop_new(before)
