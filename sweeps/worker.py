"""The Ray Train per-worker function: runs stages (``umsrep.runner.stage.run_stage``).

The adapter between Ray Train and the runner, above both (``umsrep/`` never imports it): the
only place that talks to Ray Train from inside a worker. Each epoch the loop reports its
validation metrics; rank 0 attaches a checkpoint (tagged with its stage id), so a restarted
worker (``FailureConfig``) or a re-created trainer with the same ``RunConfig(name,
storage_path)`` resumes from the last epoch.

A Train run does one stage (``config["stage"]``: sweep trials, ``resources.pack: false``) or a
*pack*: it asks the wave's ``StageQueue`` actor for its k-th stage, k = 0, 1, ..., until the
queue is empty (``sweeps.driver.StageQueue``), so the worker group starts once for many stages and the fastest run takes the
next stage (dynamic load balancing). Every rank walks the same sequence (the queue remembers
what it gave each pack); after a restart, stages already done are skipped and the one in
flight resumes from the checkpoint that names it.
With several workers, data is sharded by ``prepare_data_loader`` (DistributedSampler) and
gradients are averaged across ranks as they are accumulated (Gloo on CPU, NCCL on GPU).
"""

from __future__ import annotations

import importlib
import json
import logging
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import ray
import ray.train
import ray.train.torch
import torch
import torch.distributed as dist

from umsrep.experiment import load_experiment
from umsrep.runner.context import StageContext, build_tasks, denoise_task
from umsrep.runner.data import load_run_data
from umsrep.runner.outputs import stage_done
from umsrep.runner.plan import Stage
from umsrep.runner.stage import run_stage
from umsrep.runner.store import atomic_write_json
from umsrep.train.hooks import val_score

log = logging.getLogger(__name__)

STAGE_MARKER = "umsrep_stage.txt"  # in a reported checkpoint: the stage it belongs to
# in a stage folder, one JSON line per event of rank 0: "start" (each time a worker group takes
# the stage up: first, after a lost worker or node, after a driver restart) and "epoch" (each
# reported epoch), with the Ray node and the wall time: which node trained which epochs
ATTEMPTS = "attempts.jsonl"
# beside a Train run's checkpoints (``config["last_report"]``): rank 0's last payload to
# ``ray.train.report`` (sweeps/driver.py ``report_lost_final`` hands it to Tune if Train lost it)
LAST_REPORT = "last_report.json"




def sync_gradients(model: torch.nn.Module, world_size: int) -> None:
    """Average each parameter's gradient over ranks as soon as it is accumulated.

    Equivalent to DDP's all-reduce, but works with any strategy (frozen backbones, one active
    head per step) because only parameters that received a gradient take part, and every rank
    runs the same schedule. Weights and buffers are broadcast from rank 0 first; batch-norm
    statistics then follow each rank's shard (as DDP without SyncBatchNorm), and rank 0's model
    is the one saved and evaluated.
    """

    def hook(p: torch.Tensor) -> None:
        if p.grad is not None:
            dist.all_reduce(p.grad, op=dist.ReduceOp.SUM)
            p.grad.div_(world_size)

    for tensor in model.state_dict().values():  # every rank starts from rank 0's weights
        dist.broadcast(tensor, src=0)
    for p in model.parameters():
        if p.requires_grad:
            p.register_post_accumulate_grad_hook(hook)


class _DropPerReportLines(logging.Filter):
    """Drops Ray Train's two INFO lines per report and worker ("Reporting training result
    ...", "Checkpoint successfully created at ..."): hundreds per run, they buried umsrep's
    own progress (one line per epoch and per stage). Warnings and errors pass."""

    PREFIXES = ("Reporting training result", "Checkpoint successfully created")

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno > logging.INFO or not str(record.msg).startswith(self.PREFIXES)


RAY_TRAIN_CHATTY = ("ray.train.v2._internal.execution.context",
                    "ray.train.v2._internal.execution.storage", "ray.train._internal.storage")


def quiet_ray_train_logs() -> None:
    """Install ``_DropPerReportLines`` on the Ray Train loggers that emit them (idempotent).

    Ray 2.60's ``context.py`` names its logger by its file path (``getLogger(__file__)``), the
    storage modules by module name: both names get the filter.
    """

    for name in RAY_TRAIN_CHATTY:
        names = [name]
        try:
            names.append(importlib.import_module(name).__file__ or name)
        except ImportError:  # another Ray version: the module moved
            pass
        for logger in map(logging.getLogger, names):
            if not any(isinstance(f, _DropPerReportLines) for f in logger.filters):
                logger.addFilter(_DropPerReportLines())


def _stage(d: dict[str, Any]):
    return Stage(**{**d, "tasks": tuple(d["tasks"]), "deps": tuple(d["deps"])})


def train_loop_per_worker(config: dict[str, Any]) -> None:
    quiet_ray_train_logs()
    logging.getLogger("umsrep").setLevel(logging.INFO)  # epoch summaries reach the driver log
    exp = load_experiment(data=config["experiment"], check_paths=False)
    run_dir = Path(config["run_dir"])
    data = load_run_data(run_dir)
    context = ray.train.get_context()
    rank, world = context.get_world_rank(), context.get_world_size()
    device = str(ray.train.torch.get_device()) if config.get("use_gpu") else "cpu"
    torch.set_num_threads(max(1, int(config.get("threads", 1))))
    # the backbones' store keys as the driver planned them: no worker hashes the pool again
    keys = {int(f): k for f, k in (config.get("backbone_keys") or {}).items()}
    ctx = StageContext(exp=exp, data=data, run_dir=run_dir, store_dir=Path(config["store_dir"]),
                       device=device, tasks=build_tasks(exp, data.index), store_keys=keys)
    if world > 1:
        ctx.prepare_model = lambda m: (sync_gradients(m, world), m)[1]
        ctx.prepare_loader = lambda dl: ray.train.torch.prepare_data_loader(dl, move_to_device=False)

    resume_from, resume_stage = None, None
    checkpoint = ray.train.get_checkpoint()
    tmp = None
    if checkpoint is not None:
        tmp = Path(tempfile.mkdtemp(prefix="umsrep-resume-"))
        with checkpoint.as_directory() as d:
            shutil.copytree(d, tmp, dirs_exist_ok=True)
        resume_from = tmp
        marker = tmp / STAGE_MARKER
        resume_stage = marker.read_text().strip() if marker.exists() else None
        log.info("resuming %s from %s", resume_stage or "the stage", checkpoint.path)
    try:
        if "queue" not in config:  # one stage
            stage = _stage(config["stage"])
            _run_one(ctx, stage, config, rank, Path(config["out_dir"]), resume_from
                     if resume_stage in (None, stage.id) else None)
            return

        queue = ray.get_actor(config["queue"])
        k = 0
        while (sid := ray.get(queue.get.remote(config["pack"], k))) is not None:
            k += 1
            stage = _stage(config["stages"][sid])
            out = run_dir / "stages" / sid
            if stage_done(out):
                continue
            _run_one(ctx, stage, config, rank, out,
                     resume_from if resume_stage == sid else None)
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)


def _run_one(ctx, stage, config: dict[str, Any], rank: int, out_dir: Path,
             resume_from: Path | None) -> None:
    """Train one stage; each epoch's metrics (and rank 0's checkpoint) go to Ray Train."""
    scored = {n: ctx.tasks[n] if n in ctx.tasks else _denoise() for n in stage.tasks}
    fault = config.get("fault_injection") or {}
    node = where_am_i()
    if rank == 0:
        record_attempt(out_dir, {"event": "start", "resumed": resume_from is not None,
                                 "pack": config.get("pack"), **node})

    def report(epoch: int, metrics: dict[str, float], ckpt_dir: Path | None) -> None:
        injected = fault.get("stage") == stage.id and fault.get("epoch") == epoch
        if injected and not fault.get("lose_report"):
            marker = Path(fault["marker"])
            if not marker.exists():  # crash this worker once, as a lost node would
                marker.write_text(f"killed {stage.id} at epoch {epoch}")
                os._exit(1)
        if rank == 0:
            record_attempt(out_dir, {"event": "epoch", "epoch": epoch, **node})
        payload = {k: float(v) for k, v in metrics.items() if _is_number(v)}
        payload |= {"epoch": epoch + 1, "val_score": val_score(payload, scored)}
        payload["stage"] = stage.id  # which stage of a pack reported (MLflow runs per stage)
        ckpt = None
        if rank == 0 and config.get("last_report"):
            atomic_write_json(payload, Path(config["last_report"]))
        if rank == 0 and ckpt_dir is not None:
            (Path(ckpt_dir) / STAGE_MARKER).write_text(stage.id)
            ckpt = ray.train.Checkpoint.from_directory(str(ckpt_dir))
        if injected and fault.get("lose_report"):
            return  # as Ray Train's worker poll can lose a last report (driver.report_lost_final)
        ray.train.report(payload, checkpoint=ckpt)

    hparams = (config.get("hparams") or {}).get(stage.id, {}) if "queue" in config \
        else config.get("hparams") or {}
    run_stage(ctx, stage, hparams, report=report, resume_from=resume_from, out_dir=out_dir,
              rank=rank, record=node)


def where_am_i() -> dict[str, str]:
    """The Ray node this worker runs on: its id (as Ray's state API lists it) and IP."""

    return {"node_id": ray.get_runtime_context().get_node_id(),
            "node_ip": ray.util.get_node_ip_address()}


def record_attempt(out_dir: Path, event: dict[str, Any]) -> None:
    """Append one event to the stage folder's ``attempts.jsonl`` (see ``ATTEMPTS``)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    with open(out_dir / ATTEMPTS, "a") as f:
        f.write(json.dumps({"time": time.time(), **event}) + "\n")


def _denoise():
    return denoise_task()


def _is_number(v: Any) -> bool:
    try:
        float(v)
        return True
    except (TypeError, ValueError):
        return False
