"""A Ray cluster started the way a user starts one (``ray start --head`` on 127.0.0.1, then
``ray job submit``), and stopped by its own port only, for the tests in this folder."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

RAY_CLI = shutil.which("ray") or str(Path(sys.executable).parent / "ray")


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


def cluster_pids(port: int) -> set[int]:
    """The processes of the cluster a test started: those naming its GCS port (gcs_server,
    raylet, dashboard, agents, log monitor) and all their descendants (workers, job drivers).
    Another Ray session on the machine (a sweep a user is running) is left alone: killing
    every new "ray" process, as a test once did, killed that sweep's Train workers."""
    procs = _processes()
    return _with_descendants({pid for pid, (_, cmd) in procs.items()
                              if "ray" in cmd and f"{port}" in cmd and pid != os.getpid()}, procs)


def _with_descendants(pids: set[int], procs: dict[int, tuple[int, str]]) -> set[int]:
    pids = set(pids)
    grew = True
    while grew:
        children = {pid for pid, (ppid, _) in procs.items() if ppid in pids} - pids
        grew = bool(children)
        pids |= children
    return pids


def stop_cluster(port: int) -> None:
    """Stop only the cluster a test started (``ray stop`` would stop every Ray process on
    the machine, a user's own sessions included)."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in cluster_pids(port):
            with contextlib.suppress(ProcessLookupError):  # exited meanwhile
                os.kill(pid, sig)
        time.sleep(3)
        if not cluster_pids(port):
            return


def start_head(port: int, dashboard: int, env: dict[str, str], *extra: str,
               num_cpus: int = 2) -> subprocess.CompletedProcess:
    """``ray start --head`` bound to 127.0.0.1, its dashboard (the job API) included. The
    dashboard agent gets a port of its own (52300 + the last two digits of ``port``): on the
    default 52365, taken by any other Ray session on the machine, it ran without its HTTP
    server and every job submission failed with "No available agent to submit job"."""
    return subprocess.run(
        [RAY_CLI, "start", "--head", "--node-ip-address=127.0.0.1", f"--port={port}",
         f"--dashboard-port={dashboard}", "--dashboard-host=127.0.0.1",
         f"--dashboard-agent-listen-port={52300 + port % 100}", f"--num-cpus={num_cpus}",
         "--num-gpus=0", "--disable-usage-stats", *extra],
        capture_output=True, text=True, timeout=180, env=env,
    )


def start_worker(port: int, agent_port: int, env: dict[str, str], *extra: str,
                 num_cpus: int = 1) -> subprocess.CompletedProcess:
    """``ray start --address`` of one more node joining the head at ``port``, on 127.0.0.1
    too: every node of the machine needs a dashboard agent port of its own (``agent_port``);
    Ray picks the other ports."""
    return subprocess.run(
        [RAY_CLI, "start", f"--address=127.0.0.1:{port}", "--node-ip-address=127.0.0.1",
         f"--dashboard-agent-listen-port={agent_port}", f"--num-cpus={num_cpus}",
         "--num-gpus=0", "--disable-usage-stats", *extra],
        capture_output=True, text=True, timeout=180, env=env,
    )


def kill_node(node_id: str) -> set[int]:
    """SIGKILL one node of a cluster on this machine, as a lost machine: its raylet and agents
    (they name the node's id) and all their descendants (the node's Ray workers), at once.
    ``ray stop`` would stop every node of the machine."""
    procs = _processes()
    pids = _with_descendants({pid for pid, (_, cmd) in procs.items()
                              if node_id in cmd and pid != os.getpid()}, procs)
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):  # exited meanwhile
            os.kill(pid, signal.SIGKILL)
    return pids


def job_submit(dashboard: int, entrypoint: list[str], env: dict[str, str], *options: str,
               cwd: Path | None = None, timeout: float = 600,
               tries: int = 12) -> subprocess.CompletedProcess:
    """``ray job submit`` to the local dashboard, waiting for the head's job agent: it starts
    after ``ray start`` returns, and on a loaded 2-core machine took over a minute ("No
    available agent to submit job")."""
    for _ in range(tries):
        job = subprocess.run(
            [RAY_CLI, "job", "submit", "--address", f"http://127.0.0.1:{dashboard}", *options,
             "--", *entrypoint],
            capture_output=True, text=True, timeout=timeout, cwd=cwd, env=env,
        )
        if "No available agent" not in job.stdout + job.stderr:
            return job
        time.sleep(10)
    return job
