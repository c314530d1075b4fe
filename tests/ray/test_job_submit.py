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


def _processes() -> dict[int, tuple[int, str]]:
    """``{pid: (parent pid, command line)}`` from /proc (no psutil needed)."""
    out = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmd = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="ignore")
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        out[int(entry.name)] = (ppid, cmd)
    return out


def _cluster_pids(port: int) -> set[int]:
    """The processes of the cluster this test started: those naming its GCS port (gcs_server,
    raylet, dashboard, agents, log monitor) and all their descendants (workers, job drivers).
    Another Ray session on the machine (a sweep a user is running) is left alone: killing
    every new "ray" process, as this test once did, killed that sweep's Train workers."""
    procs = _processes()
    pids = {pid for pid, (_, cmd) in procs.items() if "ray" in cmd and f"{port}" in cmd
            and pid != os.getpid()}
    grew = True
    while grew:
        children = {pid for pid, (ppid, _) in procs.items() if ppid in pids} - pids
        grew = bool(children)
        pids |= children
    return pids


def _stop_cluster(port: int) -> None:
    """Stop only the cluster this test started (``ray stop`` would stop every Ray process on
    the machine, a user's own sessions included)."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in _cluster_pids(port):
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        time.sleep(3)
        if not _cluster_pids(port):
            return


def test_ray_job_submit_smoke_experiment(smoke_config, tmp_path):
    ray_cli = shutil.which("ray") or str(Path(sys.executable).parent / "ray")
    cfg = tmp_path / "smoke.yaml"
    cfg.write_text(yaml.safe_dump(smoke_config))
    out = tmp_path / "runs"
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
        _stop_cluster(PORT)
