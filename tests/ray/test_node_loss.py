"""Losing a node of a real multi-node cluster: a head and two worker nodes started with
``ray start`` on 127.0.0.1 (as three machines would be), one shared run folder, ``ray job
submit`` of a small packed sweep. Once each worker node has taken stages and one stage is done,
the node training another stage is killed (raylet, agents and workers at once, as a lost
machine): the job must still succeed, the lost stage must continue from its last checkpoint on
the other node, no finished stage may be trained again and every stage's results must be there.

Minutes on a 2-core machine, so skipped unless asked: ``python -m pytest -q --cluster -m
cluster``. With ``-s`` it prints the timeline (start, kill, resume, finish), also written to
``test-artifacts/cluster/node_loss_timeline.json``.
"""

from __future__ import annotations

import copy
import datetime
import json
import os
import secrets
import shutil
import subprocess
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pandas as pd
import pytest
import yaml
from _cli_cluster import RAY_CLI, job_submit, kill_node, start_head, start_worker, stop_cluster

pytestmark = [pytest.mark.ray, pytest.mark.slow, pytest.mark.cluster]

REPO = Path(__file__).resolve().parents[2]
TIMELINE = REPO / "test-artifacts" / "cluster" / "node_loss_timeline.json"
PORT, DASHBOARD = 6397, 8297
WORKERS = {"node_a": 52497, "node_b": 52597}  # resource label -> dashboard agent port
EPOCHS = 50  # about a quarter of a second each: time to see a stage under way and kill its node


def node_loss_experiment(smoke: dict) -> dict:
    """Four stages in one packed wave (joint + separate baseline, 2 folds), two Train runs at
    once. The Tune trials (each Train run's driver) ask for ``umsrep_driver``, which only the
    head has; the head's one CPU cannot hold a Train worker beside them, and each worker node's
    one CPU holds exactly one: one Train run per worker node."""
    cfg = copy.deepcopy(smoke)
    cfg["data"] = {**cfg["data"], "image_size": 64,
                   "train": [{"synthetic": "cxr", "n": 240, "seed": 0}]}
    cfg["folds"] = {**cfg["folds"], "run": 2}
    cfg["strategies"] = [{"name": "joint"}]
    cfg["baseline"] = {"enabled": True}
    cfg["search"] = {"num_samples": 0}
    cfg["train"] = {"epochs": EPOCHS, "batch_size": 16, "patience": 0}
    cfg["resources"] = {"num_workers": 1, "cpus_per_worker": 0.75, "cpus_per_trial": 0.25,
                        "max_failures": 2, "max_concurrent": 2, "pack": True,
                        "trial_resources": {"umsrep_driver": 0.01}}
    return cfg


def ray_list(kind: str, env: dict[str, str], *options: str) -> list[dict]:
    """Ray's state API (``ray list <kind> --detail``) of the test cluster, as JSON rows."""
    out = subprocess.run(
        [RAY_CLI, "list", kind, "--address", f"http://127.0.0.1:{DASHBOARD}", "--detail",
         "--format", "json", "--limit", "10000", *options],
        capture_output=True, text=True, timeout=120, env=env,
    )
    assert out.returncode == 0, (out.stdout + out.stderr)[-2000:]
    return json.loads(out.stdout[out.stdout.index("["):])


def stage_events(out: Path) -> dict[str, list[dict]]:
    """Every stage's ``attempts.jsonl`` (written by rank 0 of its Train run), by stage id."""
    events = {}
    for path in out.glob("*/stages/*/attempts.jsonl"):
        rows = []
        for line in path.read_text().splitlines():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:  # a line being written
                break
        events[path.parent.name] = rows
    return events


def done(out: Path) -> dict[str, Path]:
    """Finished stages (their ``result.json`` says done), by stage id."""
    found = {}
    for path in out.glob("*/stages/*/result.json"):
        try:
            if json.loads(path.read_text()).get("status") == "done":
                found[path.parent.name] = path
        except (OSError, json.JSONDecodeError):
            continue  # being written right now (atomic replace): read on the next poll
    return found


def pick_victim(out: Path, workers: set[str]) -> tuple[str, str] | None:
    """``(stage, node)`` once both worker nodes have started stages, one stage is done, and
    another is under way with at least 2 epochs reported and 3 still to go; else None."""
    events, finished = stage_events(out), done(out)
    started = {e["node_id"] for rows in events.values() for e in rows if e["event"] == "start"}
    if not finished or started != workers:
        return None
    for sid, rows in events.items():
        if sid in finished or not rows:
            continue
        last_start = max(i for i, e in enumerate(rows) if e["event"] == "start")
        epochs = [e["epoch"] for e in rows[last_start:] if e["event"] == "epoch"]
        if len(epochs) >= 2 and epochs[-1] <= EPOCHS - 4:
            return sid, rows[last_start]["node_id"]
    return None


def test_worker_node_lost_mid_stage_resumes_on_the_other(smoke_config, tmp_path):
    cfg = tmp_path / "nodeloss.yaml"
    cfg.write_text(yaml.safe_dump(node_loss_experiment(smoke_config)))
    out = tmp_path / "shared" / "runs"  # every node sees it: the "shared storage"
    token = tmp_path / "auth_token"
    token.write_text(secrets.token_hex(32))
    env = {**os.environ, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(token)}
    env.pop("RAY_AUTH_TOKEN", None)
    t0 = time.time()
    timeline: list[tuple[float, str]] = []

    def mark(what: str, at: float | None = None) -> None:
        timeline.append(((at or time.time()) - t0, what))

    pool = ThreadPoolExecutor(max_workers=1)
    # each node its own Ray temp dir, as on separate machines: sharing the head's, the worker
    # nodes' runtime env agents unpacked the job's working dir again over the driver's own
    # (its current directory vanished and the driver failed); short, for socket path limits
    temp_dirs = {label: tempfile.mkdtemp(prefix=f"ray-{label}-", dir="/tmp") for label in WORKERS}
    evidence: dict = {}
    try:
        label_of = start_three_nodes(env, temp_dirs)
        node_of = {label: nid for nid, label in label_of.items()}
        workers = {node_of["node_a"], node_of["node_b"]}
        mark("cluster up: head + node_a + node_b")

        job = pool.submit(
            job_submit, DASHBOARD,
            ["python", "-m", "sweeps.run", str(cfg), "--output", str(out), "--no-report"],
            env, "--working-dir", str(REPO), "--runtime-env",
            str(REPO / "cluster/runtime_env.yaml"), cwd=REPO, timeout=1200, tries=6,
        )
        mark("job submitted")
        victim, deadline = None, time.time() + 900
        while victim is None and not job.done() and time.time() < deadline:
            time.sleep(0.5)
            victim = pick_victim(out, workers)
        assert victim is not None, ("no moment with a stage under way on one node after "
                                    f"another was done: {stage_events(out)}")
        stage, lost = victim
        before = {sid: (p.stat().st_mtime, p.read_text()) for sid, p in done(out).items()}
        epochs_before = [e["epoch"] for e in stage_events(out)[stage] if e["event"] == "epoch"]
        killed = kill_node(lost)
        mark(f"killed {label_of[lost]} ({len(killed)} processes) while it trained {stage} "
             f"({epoch_span(epochs_before)} reported); done: {', '.join(sorted(before))}")
        assert killed

        result = job.result(timeout=1500)
        logs = result.stdout + result.stderr
        mark("job finished")
        assert result.returncode == 0 and "succeeded" in result.stdout.lower(), logs[-6000:]
        run_dir = next(out.iterdir())

        # Ray's state API: which node is dead, which nodes ran the Train workers
        nodes = {n["node_id"]: n for n in ray_list("nodes", env)}
        assert nodes[lost]["state"] == "DEAD"
        if nodes[lost].get("end_time_ms"):  # `ray list` prints it as local time
            dead_at = datetime.datetime.fromisoformat(str(nodes[lost]["end_time_ms"]))
            mark(f"GCS marked {label_of[lost]} dead", dead_at.timestamp())
        actors = ray_list("actors", env)
        evidence["ray list nodes"] = {label_of[n]: nodes[n]["state"] for n in label_of}
        evidence["ray list actors (by node)"] = {
            cls: {label: sum(a["class_name"] == cls and a["node_id"] == nid for a in actors)
                  for nid, label in label_of.items()}
            for cls in ("RayTrainWorker", "TrainController", "ImplicitFunc", "StageQueue")}
        train_nodes = {a["node_id"] for a in actors if a["class_name"] == "RayTrainWorker"}
        assert train_nodes == workers, {label_of.get(n, n) for n in train_nodes}
        trial_nodes = {a["node_id"] for a in actors if a["class_name"] == "ImplicitFunc"}
        assert trial_nodes == {node_of["head"]}  # Train drivers on the head only

        # the run's own records: which node trained which epochs of which stage
        events = stage_events(out)
        assert set(events) == {"f0-joint", "f1-joint", "f0-baseline-abnormal",
                               "f1-baseline-abnormal"}
        for sid, rows in sorted(events.items()):
            for e in rows:
                if e["event"] == "start":
                    mark(f"{sid}: started on {label_of[e['node_id']]}"
                         f"{' (resumed)' if e['resumed'] else ''}", e["time"])
            ends = [e for e in rows if e["event"] == "epoch"]
            mark(f"{sid}: last epoch ({ends[-1]['epoch']}) on {label_of[ends[-1]['node_id']]}",
                 ends[-1]["time"])
        evidence["epochs trained, by stage and node (attempts.jsonl)"] = {
            sid: {label: epoch_span([e["epoch"] for e in rows if e["event"] == "epoch"
                                     and label_of[e["node_id"]] == label]) for label in WORKERS}
            for sid, rows in sorted(events.items())}
        ran_on = {label_of[e["node_id"]] for rows in events.values() for e in rows}
        assert ran_on == set(WORKERS)

        # the lost stage: started on the lost node, continued on the other from its checkpoint
        rows = events[stage]
        starts = [i for i, e in enumerate(rows) if e["event"] == "start"]
        assert len(starts) == 2 and rows[starts[0]]["node_id"] == lost
        assert rows[starts[1]]["node_id"] in workers - {lost}
        first, second = rows[starts[0]:starts[1]], rows[starts[1]:]
        lost_epochs = [e["epoch"] for e in first if e["event"] == "epoch"]
        resumed_epochs = [e["epoch"] for e in second if e["event"] == "epoch"]
        assert lost_epochs[-1] < resumed_epochs[0] <= lost_epochs[-1] + 2, (lost_epochs,
                                                                            resumed_epochs)
        assert resumed_epochs == list(range(resumed_epochs[0], EPOCHS))
        mark(f"{stage}: first epoch after the resume: {resumed_epochs[0]} (epochs "
             f"0-{lost_epochs[-1]} were trained on {label_of[lost]})", second[1]["time"])
        res = json.loads((run_dir / "stages" / stage / "result.json").read_text())
        assert res["history_epochs"] == list(range(EPOCHS))  # each epoch once, none lost
        assert res["node_id"] == rows[starts[1]]["node_id"]

        # stages finished before the kill: not trained again, records untouched
        for sid, (mtime, text) in before.items():
            path = run_dir / "stages" / sid / "result.json"
            assert (path.stat().st_mtime, path.read_text()) == (mtime, text), sid
            assert [e["event"] for e in events[sid]].count("start") == 1, sid

        # every stage's results
        stages = pd.read_parquet(run_dir / "stages.parquet")
        assert len(stages) == 4 and (stages["status"] == "done").all()
        metrics = pd.read_parquet(run_dir / "metrics.parquet")
        have = set(metrics[["fold", "strategy", "split"]].itertuples(index=False, name=None))
        assert {(f, s, split) for f in (0, 1) for s in ("joint", "baseline")
                for split in ("val", "test")} <= have
    finally:
        pool.shutdown(wait=False, cancel_futures=True)
        stop_cluster(PORT)
        for path in temp_dirs.values():
            shutil.rmtree(path, ignore_errors=True)
        if timeline:
            write_timeline(timeline, evidence)


def start_three_nodes(env: dict[str, str], temp_dirs: dict[str, str]) -> dict[str, str]:
    """The head (1 CPU, ``umsrep_driver``) and the worker nodes (1 CPU, their label each);
    returns each node's id -> its label, once all three are alive (Ray's state API)."""
    head = start_head(PORT, DASHBOARD, env, '--resources={"umsrep_driver": 100}', num_cpus=1)
    assert head.returncode == 0, head.stderr[-2000:]
    for label, agent_port in WORKERS.items():
        node = start_worker(PORT, agent_port, env, f'--resources={{"{label}": 1}}',
                            f"--temp-dir={temp_dirs[label]}")
        assert node.returncode == 0, node.stderr[-2000:]
    deadline = time.time() + 120
    while len(nodes := [n for n in ray_list("nodes", env) if n["state"] == "ALIVE"]) < 3:
        assert time.time() < deadline, f"only {len(nodes)} nodes joined"
        time.sleep(3)
    return {n["node_id"]: next((k for k in WORKERS if k in n["resources_total"]), "head")
            for n in nodes}


def epoch_span(epochs: list[int]) -> str:
    """``[3, 4, 5]`` -> ``"epochs 3-5"``, ``[]`` -> ``"none"``."""
    return f"epochs {epochs[0]}-{epochs[-1]}" if epochs else "none"


def write_timeline(timeline: list[tuple[float, str]], evidence: dict) -> None:
    rows = sorted(timeline)
    TIMELINE.parent.mkdir(parents=True, exist_ok=True)
    TIMELINE.write_text(json.dumps(
        {"timeline": [{"t_s": round(t, 1), "event": e} for t, e in rows], **evidence},
        indent=1))
    print("\nnode-loss timeline (seconds from the test's start):")
    for t, e in rows:
        print(f"  {t:7.1f}  {e}")
    for what, value in evidence.items():
        print(f"{what}:")
        for key, item in value.items():
            print(f"  {key}: {item}")
