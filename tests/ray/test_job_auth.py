"""Token authentication as cluster/README.md sets it up: the job API of a ``ray start --head``
cluster refuses a ``ray job submit`` without the cluster's token (or with another one) and runs
the same submission with it. Ray's job API runs arbitrary code for whoever reaches the dashboard
port (ShadowRay, CVE-2023-48022); the token is what stands in the way."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest
from _cli_cluster import RAY_CLI, job_submit, start_head, stop_cluster

pytestmark = [pytest.mark.ray, pytest.mark.slow]

PORT, DASHBOARD = 6393, 8293
AUTH_VARS = ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH")
ENTRYPOINT = ["python", "-c", "print('auth-job-ran')"]


def _env(home: Path, **auth: str) -> dict[str, str]:
    """The environment of a fresh shell whose home is ``home`` (so the token goes to
    ``home/.ray/auth_token``, never the user's), with only the given auth variables set."""
    env = {k: v for k, v in os.environ.items() if k not in AUTH_VARS}
    return {**env, "HOME": str(home), **auth}


def test_job_submit_needs_the_cluster_token(tmp_path):
    real_token = Path.home() / ".ray" / "auth_token"
    real_before = real_token.read_bytes() if real_token.exists() else None
    home = tmp_path / "home"
    home.mkdir()
    shell = _env(home, RAY_AUTH_MODE="token")  # README: `export RAY_AUTH_MODE=token`
    # README: `ray get-auth-token --generate` makes ~/.ray/auth_token once
    gen = subprocess.run([RAY_CLI, "get-auth-token", "--generate"], capture_output=True,
                         text=True, timeout=120, env=shell)
    assert gen.returncode == 0, gen.stderr[-2000:]
    token = (home / ".ray" / "auth_token").read_text().strip()
    assert len(token) >= 32 and gen.stdout.strip() == token
    # a short private temp dir: the session's sockets must fit AF_UNIX paths, and the user's
    # /tmp/ray (and its "latest session" links) stays untouched
    temp_dir = tempfile.mkdtemp(prefix="rayauth", dir="/tmp")
    start = start_head(PORT, DASHBOARD, shell, f"--temp-dir={temp_dir}", num_cpus=1)
    try:
        assert start.returncode == 0, start.stderr[-2000:]

        ok = job_submit(DASHBOARD, ENTRYPOINT, shell, timeout=300)
        assert ok.returncode == 0, (ok.stdout + ok.stderr)[-3000:]
        assert "auth-job-ran" in ok.stdout and "succeeded" in ok.stdout.lower()

        # the symptom: the token is on disk but this shell never turned auth on, so
        # the client sends no token
        no_token = job_submit(DASHBOARD, ENTRYPOINT, _env(home), timeout=120)
        # a token, but not this cluster's
        wrong = job_submit(DASHBOARD, ENTRYPOINT, {**shell, "RAY_AUTH_TOKEN": "0" * 64},
                           timeout=120)
        for refused, status in ((no_token, "Unauthorized"), (wrong, "Forbidden")):
            out = refused.stdout + refused.stderr
            assert refused.returncode != 0, out[-3000:]
            assert status in out, out[-3000:]
            assert "auth-job-ran" not in out
    finally:
        stop_cluster(PORT)
        shutil.rmtree(temp_dir, ignore_errors=True)
    assert (real_token.read_bytes() if real_token.exists() else None) == real_before
