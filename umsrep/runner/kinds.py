"""The kinds of stage and their one dispatch (``execute_stage``): pretrain a backbone (or reuse
the stored one), fine-tune heads under a strategy, train a separate baseline model.

Each kind builds its network (``network``), trains it with the plain loop
(``umsrep.train.loop.fit``), scores it (``scoring``, ``threshold``) and, on rank 0, writes its
model folders (``checkpoints``) and galleries (``samples``); ``umsrep.runner.stage.run_stage``
writes the tables (``outputs``).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pandas as pd

from umsrep.models.multitask import count_trainable_params
from umsrep.runner.checkpoints import save_checkpoints, scored_epochs
from umsrep.runner.context import (
    ReportFn,
    StageContext,
    build_tasks,
    denoise_task,
    labelled,
    loaders_for,
    mask_cleanup,
    noise_config,
    split_pool,
)
from umsrep.runner.network import build_stage_model, model_meta
from umsrep.runner.outputs import stage_result
from umsrep.runner.plan import Stage
from umsrep.runner.samples import write_stage_samples
from umsrep.runner.scoring import evaluate_model
from umsrep.runner.store import atomic_write_json, read_json
from umsrep.runner.threshold import held_out_dice, other_weights_threshold, threshold_record
from umsrep.schema import SHARED
from umsrep.strategies import STRATEGIES
from umsrep.tasks import Task
from umsrep.train.checkpoint import LAST, seed_everything
from umsrep.train.config import TrainConfig
from umsrep.train.loop import FitResult, fit, strategy_options

log = logging.getLogger(__name__)


def execute_stage(ctx: StageContext, stage: Stage, *, report: ReportFn | None,
                  resume_from: Path | None, out_dir: Path, rank: int):
    """Run ``stage`` as ``ctx.exp`` (tuned hyperparameters already applied) describes it:
    (result, metric rows, predictions)."""
    seed_everything(ctx.exp.seed)  # heads start from the same weights in every run and rank
    if stage.store_key:
        done = read_json(ctx.store_dir / stage.store_key / "result.json")
        if done is not None:
            return reuse_backbone(ctx, stage, done)
        if stage.kind != "backbone":
            raise RuntimeError(f"{stage.id}: backbone {stage.store_key} is not in the store yet")
        return pretrain_backbone(ctx, stage, report, resume_from, rank)
    if stage.kind == "head":
        return finetune_heads(ctx, stage, report, resume_from, out_dir, rank)
    return train_baseline(ctx, stage, report, resume_from, out_dir, rank)


# ----------------------------------------------------------------------------- training
def fit_model(ctx: StageContext, model, tasks: list[Task], strategy_name: str, options: dict,
              cfg: TrainConfig, train_pos, val_pos, report, resume_from, noise_cfg, seed: int,
              state_dir: Path) -> FitResult:
    """Train with the loop; its per-epoch state (``last.pt``) lives in ``state_dir``, or in
    ``resume_from`` when Ray hands back a checkpoint, so an interrupted stage continues."""
    model = ctx.prepare_model(model)
    strategy = STRATEGIES.get(strategy_name)(
        model, tasks, noise_cfg=noise_cfg, **strategy_options(cfg, ctx.device, seed), **options)
    train_loaders = loaders_for(ctx, tasks, train_pos, train=True, batch_size=cfg.batch_size,
                                seed=seed, shared=cfg.task_batches == "shared",
                                workers=cfg.loader_workers)
    val_loaders = loaders_for(ctx, tasks, val_pos, train=False, batch_size=cfg.batch_size, seed=0,
                              workers=cfg.loader_workers)
    return fit(model, strategy, train_loaders, val_loaders, cfg, report=report, seed=seed,
               checkpoint_dir=newer_state(resume_from, state_dir), val_metrics=True)


def newer_state(resume_from: Path | None, state_dir: Path) -> Path:
    """Where to continue from: Ray's checkpoint copy or the stage's own ``train_state``.

    The stage folder's ``last.pt`` is written every epoch; a Ray checkpoint can be older (e.g.
    a stage resumed by another packed Train run after a driver restart), so the newer file
    wins (copies keep their modification time).
    """
    if resume_from is None:
        return state_dir
    ours, ray = Path(state_dir) / LAST, Path(resume_from) / LAST
    if ours.is_file() and (not ray.is_file() or ours.stat().st_mtime > ray.stat().st_mtime):
        return state_dir
    return Path(resume_from)


# ----------------------------------------------------------------------------- backbone
def pretrain_backbone(ctx, stage: Stage, report, resume_from, rank):
    """Train the fold's backbone with its pretraining head; the store keeps the network once,
    as a model folder (``<store>/<key>/checkpoint/``)."""
    exp = ctx.exp
    if exp.backbone.pretrain == "denoise":
        task = denoise_task()
    else:
        task = build_tasks(exp, ctx.data.index)[exp.backbone.task]
    model = build_stage_model(ctx, stage, [task])
    noise = noise_config(exp)
    pool = labelled(ctx, ctx.data.pool_for_fold(stage.fold), task)
    tr, va = split_pool(pool, exp.folds.val_fraction, exp.seed + 101)
    params = count_trainable_params(model)
    fit_result = fit_model(ctx, model, [task], "joint", {}, exp.backbone.train, tr, va,
                           report, resume_from, noise, exp.seed,
                           ctx.run_dir / "stages" / stage.id / "train_state")
    metrics, preds = evaluate_model(ctx, stage, model, [task], SHARED, noise)
    store = ctx.store_dir / stage.store_key
    if rank == 0:
        store.mkdir(parents=True, exist_ok=True)
        save_checkpoints(store, model, model_meta(ctx, [task], stage), fit_result,
                         exp.backbone.train)
        pd.DataFrame(metrics).to_parquet(store / "metrics.parquet", index=False)
        write_stage_samples(ctx, stage, model, [task], SHARED)
    result = stage_result(stage, fit_result, params, str(store / "checkpoint"),
                          store_key=stage.store_key, reused=False,
                          **scored_epochs(fit_result, exp.backbone.train))
    if rank == 0:
        atomic_write_json(result, store / "result.json")
    return result, metrics, preds


def reuse_backbone(ctx, stage: Stage, stored: dict[str, Any]):
    """A backbone (or the baseline's identical denoiser) already in the store: no training."""
    strategy = "baseline" if stage.kind == "baseline" else SHARED
    metrics_path = ctx.store_dir / stage.store_key / "metrics.parquet"
    metrics = []
    if metrics_path.exists():
        m = pd.read_parquet(metrics_path)
        # the stored metrics belong to the fold that trained the backbone; other folds that
        # reuse it report none rather than another fold's held-out scores
        if len(m) and int(m["fold"].iloc[0]) == stage.fold:
            metrics = m.assign(strategy=strategy).to_dict("records")
    result = {**stored, "stage": stage.id, "fold": stage.fold, "kind": stage.kind,
              "strategy": stage.strategy, "task": stage.task_label,
              "reused": True, "reused_from": stored.get("stage")}
    return result, metrics, pd.DataFrame()


# ----------------------------------------------------------------------------- heads
def finetune_heads(ctx, stage: Stage, report, resume_from, out_dir: Path, rank):
    exp = ctx.exp
    tasks = [ctx.tasks[n] for n in stage.tasks]
    model = build_stage_model(ctx, stage, tasks)
    fold = ctx.data.folds[stage.fold]
    options = next((s.options for s in exp.strategies if s.name == stage.strategy), {})
    noise = noise_config(exp)
    settings = exp.train_for(stage.strategy)
    fit_result = fit_model(ctx, model, tasks, stage.strategy, options, settings,
                           fold.train, fold.val, report, resume_from, noise, exp.seed,
                           out_dir / "train_state")
    params = getattr(fit_result, "trainable_params", None) or count_trainable_params(model)
    # of those, the shared backbone's (0 when frozen): parameters a backbone stage already
    # counted when the strategy fine-tunes them (analysis.cost counts each parameter once)
    backbone_params = count_trainable_params(model.backbone)
    chosen = threshold_record(held_out_dice(ctx, stage.fold, model, tasks, mask_cleanup(exp)),
                              exp.evaluation.threshold)
    metrics, preds = evaluate_model(ctx, stage, model, tasks, stage.strategy, noise,
                                    chosen["threshold"])
    ckpt = out_dir / "checkpoint"
    # every rank, as the scored weights' choice above (a model under DDP runs on all of them)
    other = other_weights_threshold(ctx, stage.fold, model, tasks, fit_result.other_weights,
                                    mask_cleanup(exp))
    if rank == 0:
        save_checkpoints(out_dir, model, model_meta(ctx, tasks, stage, chosen["threshold"]),
                         fit_result, settings, other)
        write_stage_samples(ctx, stage, model, tasks, stage.strategy, out_dir)
    return stage_result(stage, fit_result, params, str(ckpt), backbone_params=backbone_params,
                        **chosen,
                        **scored_epochs(fit_result, settings)), metrics, preds


# ----------------------------------------------------------------------------- baseline
def train_baseline(ctx, stage: Stage, report, resume_from, out_dir: Path, rank):
    """A separate model from random initialization, fed by the stored denoiser when the plan
    makes it wait for one (``stage_spec``: ``denoised_input``)."""
    exp = ctx.exp
    task = ctx.tasks[stage.tasks[0]]
    model = build_stage_model(ctx, stage, [task])
    params = count_trainable_params(model)  # a frozen denoiser has none
    fold = ctx.data.folds[stage.fold]
    noise = noise_config(exp)
    fit_result = fit_model(ctx, model, [task], "joint", {}, exp.train,
                           fold.train, fold.val, report, resume_from, noise, exp.seed,
                           out_dir / "train_state")
    chosen = threshold_record(held_out_dice(ctx, stage.fold, model, [task], mask_cleanup(exp)),
                              exp.evaluation.threshold)
    metrics, preds = evaluate_model(ctx, stage, model, [task], "baseline", noise,
                                    chosen["threshold"])
    ckpt = out_dir / "checkpoint"
    # every rank, as the scored weights' choice above (a model under DDP runs on all of them)
    other = other_weights_threshold(ctx, stage.fold, model, [task], fit_result.other_weights,
                                    mask_cleanup(exp))
    if rank == 0:
        save_checkpoints(out_dir, model, model_meta(ctx, [task], stage, chosen["threshold"]),
                         fit_result, exp.train, other)
        write_stage_samples(ctx, stage, model, [task], "baseline", out_dir)
    return stage_result(stage, fit_result, params, str(ckpt), **chosen,
                        **scored_epochs(fit_result, exp.train)), metrics, preds
