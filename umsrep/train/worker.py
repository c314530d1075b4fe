"""The Ray Train per-worker function: runs one stage (``umsrep.runner.stage.run_stage``).

This is the only place in the library that talks to Ray Train. Each epoch the loop reports its
validation metrics; rank 0 attaches a checkpoint, so a restarted worker (``FailureConfig``) or a
re-created trainer with the same ``RunConfig(name, storage_path)`` resumes from the last epoch.
With several workers, data is sharded by ``prepare_data_loader`` (DistributedSampler) and
gradients are averaged across ranks as they are accumulated (Gloo on CPU, NCCL on GPU).
"""

from __future__ import annotations

import logging
import math
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch

log = logging.getLogger(__name__)

MAIN_METRIC = {"classification": "accuracy", "segmentation": "dice", "denoise": "psnr"}


def val_score(metrics: dict[str, float], tasks: dict[str, Any]) -> float:
    """Mean over tasks of each task's main validation metric (PSNR scaled by 1/50)."""
    values = []
    for name, task in tasks.items():
        metric = MAIN_METRIC[task.kind]
        for key in (f"val/{name}/{metric}", f"val_{name}_{metric}", f"{name}/{metric}"):
            if key in metrics and not math.isnan(float(metrics[key])):
                v = float(metrics[key])
                values.append(v / 50.0 if metric == "psnr" else v)
                break
    if values:
        return sum(values) / len(values)
    loss = metrics.get("val_loss", metrics.get("val/loss"))
    return -float(loss) if loss is not None else float("nan")


def sync_gradients(model: torch.nn.Module, world_size: int) -> None:
    """Average each parameter's gradient over ranks as soon as it is accumulated.

    Equivalent to DDP's all-reduce, but works with any strategy (frozen backbones, one active
    head per step) because only parameters that received a gradient take part, and every rank
    runs the same schedule. Weights and buffers are broadcast from rank 0 first; batch-norm
    statistics then follow each rank's shard (as DDP without SyncBatchNorm), and rank 0's model
    is the one saved and evaluated.
    """
    import torch.distributed as dist

    def hook(p: torch.Tensor) -> None:
        if p.grad is not None:
            dist.all_reduce(p.grad, op=dist.ReduceOp.SUM)
            p.grad.div_(world_size)

    for tensor in model.state_dict().values():  # every rank starts from rank 0's weights
        dist.broadcast(tensor, src=0)
    for p in model.parameters():
        if p.requires_grad:
            p.register_post_accumulate_grad_hook(hook)


def train_loop_per_worker(config: dict[str, Any]) -> None:
    import ray.train
    import ray.train.torch

    from umsrep.experiment import load_experiment
    from umsrep.runner.data import load_run_data
    from umsrep.runner.plan import Stage
    from umsrep.runner.stage import StageContext, build_tasks, run_stage

    exp = load_experiment(data=config["experiment"], check_paths=False)
    run_dir = Path(config["run_dir"])
    data = load_run_data(run_dir)
    context = ray.train.get_context()
    rank, world = context.get_world_rank(), context.get_world_size()
    device = str(ray.train.torch.get_device()) if config.get("use_gpu") else "cpu"
    torch.set_num_threads(max(1, int(config.get("threads", 1))))
    stage = Stage(**{**config["stage"], "tasks": tuple(config["stage"]["tasks"]),
                     "deps": tuple(config["stage"]["deps"])})
    ctx = StageContext(exp=exp, data=data, run_dir=run_dir, store_dir=Path(config["store_dir"]),
                       device=device, tasks=build_tasks(exp, data.index))
    if world > 1:
        ctx.prepare_model = lambda m: (sync_gradients(m, world), m)[1]
        ctx.prepare_loader = lambda dl: ray.train.torch.prepare_data_loader(dl, move_to_device=False)
    scored = {n: ctx.tasks[n] if n in ctx.tasks else _denoise() for n in stage.tasks}

    fault = config.get("fault_injection") or {}

    def report(epoch: int, metrics: dict[str, float], ckpt_dir: Path | None) -> None:
        if fault.get("stage") == stage.id and fault.get("epoch") == epoch:
            marker = Path(fault["marker"])
            if not marker.exists():  # crash this worker once, as a lost node would
                marker.write_text(f"killed {stage.id} at epoch {epoch}")
                os._exit(1)
        payload = {k: float(v) for k, v in metrics.items() if _is_number(v)}
        payload |= {"epoch": epoch + 1, "val_score": val_score(payload, scored)}
        ckpt = None
        if rank == 0 and ckpt_dir is not None:
            ckpt = ray.train.Checkpoint.from_directory(str(ckpt_dir))
        ray.train.report(payload, checkpoint=ckpt)

    resume_from = None
    checkpoint = ray.train.get_checkpoint()
    tmp = None
    if checkpoint is not None:
        tmp = Path(tempfile.mkdtemp(prefix="umsrep-resume-"))
        with checkpoint.as_directory() as d:
            shutil.copytree(d, tmp, dirs_exist_ok=True)
        resume_from = tmp
        log.info("%s: resuming from %s", stage.id, checkpoint.path)
    try:
        run_stage(ctx, stage, config.get("hparams") or {}, report=report,
                  resume_from=resume_from, out_dir=Path(config["out_dir"]), rank=rank)
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)


def _denoise():
    from umsrep.runner.stage import denoise_task

    return denoise_task()


def _is_number(v: Any) -> bool:
    try:
        float(v)
        return True
    except (TypeError, ValueError):
        return False
