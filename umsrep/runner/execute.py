"""What each kind of stage does: pretrain a backbone, fine-tune heads, train a baseline model."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from umsrep.runner.checkpoints import save_checkpoints, scored_epochs
from umsrep.runner.plan import Stage
from umsrep.runner.samples import write_stage_samples
from umsrep.runner.stage import (
    ReportFn,
    StageContext,
    build_stage_model,
    build_tasks,
    denoise_task,
    labelled,
    make_dataset,
    make_loader,
    noise_config,
    stage_spec,
    train_config,
)
from umsrep.runner.store import atomic_write_json, read_json
from umsrep.runner.threshold import held_out_dice, threshold_record
from umsrep.schema import SHARED
from umsrep.tasks import Task

log = logging.getLogger(__name__)


def execute_stage(ctx: StageContext, stage: Stage, *, report: ReportFn | None,
                  resume_from: Path | None, out_dir: Path, rank: int):
    """Run ``stage`` as ``ctx.exp`` (tuned hyperparameters already applied) describes it."""
    from umsrep.train.checkpoint import seed_everything

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


# ----------------------------------------------------------------------------- helpers
def split_pool(positions: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    perm = rng.permutation(positions)
    n_val = max(1, int(round(len(perm) * fraction)))
    return np.sort(perm[n_val:]), np.sort(perm[:n_val])


def loaders_for(ctx: StageContext, tasks: list[Task], positions: np.ndarray, *, train: bool,
                batch_size: int, seed: int) -> dict[str, Any]:
    """One loader per task over the samples that carry its target (partial labels allowed)."""
    out = {}
    for t in tasks:
        pos = labelled(ctx, positions, t)
        if len(pos) == 0:
            raise ValueError(f"task {t.name!r} has no labelled images in this split")
        ds = make_dataset(ctx, pos, [t], train=train)
        loader = make_loader(ds, batch_size, shuffle=train, seed=seed,
                             workers=ctx.exp.train.loader_workers)
        out[t.name] = ctx.prepare_loader(loader) if train else loader
    return out


def eval_splits(ctx: StageContext, stage: Stage) -> dict[str, np.ndarray]:
    """'val' = the fold's held-out part; 'test' = the external set (or the held-out fold).

    When the external set pools several datasets (e.g. Montgomery and JSRT), each is also
    scored on its own as split ``test:<dataset>`` (the manifest's ``dataset`` column): a
    pooled figure hides which population a model fails on.
    """
    fold = ctx.data.folds[stage.fold]
    ext = ctx.data.external
    splits = {"val": fold.test, "test": ext if len(ext) else fold.test}
    if len(ext) and "dataset" in ctx.data.index.columns:
        names = ctx.data.index["dataset"].iloc[ext].astype(str).to_numpy()
        if len(set(names)) > 1:
            for name in sorted(set(names)):
                splits[f"test:{name}"] = ext[names == name]
    return splits


def evaluate_model(ctx: StageContext, stage: Stage, model, tasks: list[Task], strategy: str,
                   noise_cfg, thresholds: dict[str, float] | None = None
                   ) -> tuple[list[dict[str, Any]], pd.DataFrame]:
    """Metrics and predictions of every split; ``thresholds`` (segmentation task -> threshold
    chosen on the held-out fold, ``umsrep.runner.threshold``) cut the original-size masks."""
    from umsrep.train.evaluate import evaluate

    metrics: list[dict[str, Any]] = []
    preds: list[pd.DataFrame] = []
    bs = max(ctx.exp.train.batch_size, 16)
    for split, positions in eval_splits(ctx, stage).items():
        scored = [t for t in tasks if len(labelled(ctx, positions, t))]  # e.g. no TB label in JSRT
        if not scored:
            continue
        loaders = loaders_for(ctx, scored, positions, train=False, batch_size=bs, seed=0)
        m, p = evaluate(model, scored, loaders, noise_cfg, device=ctx.device,
                        correct_iou=ctx.exp.evaluation.correct_iou)
        if split.startswith("test"):  # segmentation also at the original size (original_size.py)
            m = m + original_size_rows(ctx, model, scored, loaders, thresholds)
        for row in m:
            metrics.append({"fold": stage.fold, "strategy": strategy, "split": split,
                            "noise": row.get("noise", "") or "", "task": row["task"],
                            "metric": row["metric"], "value": float(row["value"])})
        p = p.assign(fold=stage.fold, strategy=strategy, split=split)
        preds.append(p)
    return metrics, pd.concat(preds, ignore_index=True) if preds else pd.DataFrame()


def original_size_rows(ctx: StageContext, model, tasks: list[Task], loaders,
                       thresholds: dict[str, float] | None = None) -> list[dict]:
    """dice_orig / dice_orig_min / iou_orig rows of each segmentation task."""
    from umsrep.runner.original_size import THRESHOLD, evaluate_original_size

    return [row for t in tasks if t.kind == "segmentation" for row in evaluate_original_size(
        model, t, loaders[t.name], ctx.data.index, device=ctx.device,
        fit=ctx.exp.data.fit, tta=ctx.exp.evaluation.tta,
        clean=mask_cleanup(ctx.exp), contrast=ctx.exp.data.contrast,
        threshold=(thresholds or {}).get(t.name, THRESHOLD))[0]]


def mask_cleanup(exp) -> dict[str, Any] | None:
    """``clean_mask`` arguments from ``evaluation`` (None when it would change nothing)."""
    ev = exp.evaluation
    if not ev.min_component and not ev.fill_holes and not ev.keep_largest:
        return None
    clean = {"min_fraction": float(ev.min_component), "fill_holes": bool(ev.fill_holes)}
    if ev.keep_largest:  # only when set: older umsrep predict reads model.json without it
        clean["keep_largest"] = int(ev.keep_largest)
    return clean


def fit_model(ctx: StageContext, model, tasks: list[Task], strategy_name: str, options: dict,
              settings, train_pos, val_pos, report, resume_from, noise_cfg, seed: int,
              state_dir: Path):
    """Train with the loop; its per-epoch state (``last.pt``) lives in ``state_dir``, or in
    ``resume_from`` when Ray hands back a checkpoint, so an interrupted stage continues."""
    from dataclasses import replace

    from umsrep.strategies import STRATEGIES
    from umsrep.train.loop import fit

    cfg = train_config(settings, ctx.device, seed)
    cfg = replace(cfg, checkpoint_dir=str(newer_state(resume_from, state_dir)), val_metrics=True)
    model = ctx.prepare_model(model)
    strategy = STRATEGIES.get(strategy_name)(
        model, tasks, optimizer=cfg.optimizer, lr=cfg.lr, weight_decay=cfg.weight_decay,
        noise_cfg=noise_cfg, device=ctx.device, precision=cfg.precision, noise_seed=seed,
        **options,
    )
    train_loaders = loaders_for(ctx, tasks, train_pos, train=True, batch_size=cfg.batch_size,
                                seed=seed)
    val_loaders = loaders_for(ctx, tasks, val_pos, train=False, batch_size=cfg.batch_size, seed=0)
    return fit(model, strategy, train_loaders, val_loaders, cfg, report=report)


def newer_state(resume_from: Path | None, state_dir: Path) -> Path:
    """Where to continue from: Ray's checkpoint copy or the stage's own ``train_state``.

    The stage folder's ``last.pt`` is written every epoch; a Ray checkpoint can be older (e.g.
    a stage resumed by another packed Train run after a driver restart), so the newer file
    wins (copies keep their modification time).
    """
    from umsrep.train.checkpoint import LAST

    if resume_from is None:
        return state_dir
    ours, ray = Path(state_dir) / LAST, Path(resume_from) / LAST
    if ours.is_file() and (not ray.is_file() or ours.stat().st_mtime > ray.stat().st_mtime):
        return state_dir
    return Path(resume_from)


def _result(stage: Stage, fit_result, params: int, checkpoint: str, **extra) -> dict[str, Any]:
    return {"stage": stage.id, "fold": stage.fold, "kind": stage.kind,
            "strategy": stage.strategy, "task": stage.task_label, "status": "done",
            "wall_s": float(fit_result.wall_s), "epochs": int(fit_result.epochs_run),
            "trainable_params": int(params), "checkpoint": checkpoint,
            # the best value of the loop's monitored metric (validation loss by default)
            "best_monitored": float(fit_result.best_metric
                                    if fit_result.best_metric is not None else float("nan")),
            "history_epochs": [int(h.get("epoch", -1)) for h in fit_result.history],
            "epoch_s": [float(h.get("train/epoch_s", float("nan"))) for h in fit_result.history],
            "train_images": int(sum(h.get("train/images", 0) for h in fit_result.history)),
            "curve": validation_curve(fit_result.history),
            **extra}


def validation_curve(history: list[dict[str, float]]) -> list[dict[str, float]]:
    """The validated epochs of a loop's history: ``epoch``, ``elapsed_s`` (training time so
    far, validation included) and every ``val/<task>/<metric>`` (the run's ``curves.parquet``)."""
    out = []
    for h in history:
        vals = {k: float(v) for k, v in h.items()
                if k.startswith("val/") and k.count("/") == 2 and not k.startswith("val/loss")}
        if vals:
            out.append({"epoch": int(h.get("epoch", -1)),
                        "elapsed_s": float(h.get("elapsed_s", float("nan"))), **vals})
    return out


# ----------------------------------------------------------------------------- backbone
def pretrain_backbone(ctx, stage: Stage, report, resume_from, rank):
    """Train the fold's backbone with its pretraining head; the store keeps the network once,
    as a model folder (``<store>/<key>/checkpoint/``)."""
    from umsrep.models.multitask import count_trainable_params

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
    result = _result(stage, fit_result, params, str(store / "checkpoint"),
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
    fit_result = fit_model(ctx, model, tasks, stage.strategy, options, exp.train,
                           fold.train, fold.val, report, resume_from, noise, exp.seed,
                           out_dir / "train_state")
    params = getattr(fit_result, "trainable_params", None) or _trainable(model)
    chosen = threshold_record(held_out_dice(ctx, stage.fold, model, tasks, mask_cleanup(exp)))
    metrics, preds = evaluate_model(ctx, stage, model, tasks, stage.strategy, noise,
                                    chosen["threshold"])
    ckpt = out_dir / "checkpoint"
    if rank == 0:
        save_checkpoints(out_dir, model, model_meta(ctx, tasks, stage, chosen["threshold"]),
                         fit_result, exp.train)
        write_stage_samples(ctx, stage, model, tasks, stage.strategy, out_dir)
    return _result(stage, fit_result, params, str(ckpt), **chosen,
                   **scored_epochs(fit_result, exp.train)), metrics, preds


def _trainable(model) -> int:
    from umsrep.models.multitask import count_trainable_params

    return count_trainable_params(model)


# ----------------------------------------------------------------------------- baseline
def train_baseline(ctx, stage: Stage, report, resume_from, out_dir: Path, rank):
    """A separate model from random initialization, fed by the stored denoiser when the plan
    makes it wait for one (``stage_spec``: ``denoised_input``)."""
    from umsrep.models.multitask import count_trainable_params

    exp = ctx.exp
    task = ctx.tasks[stage.tasks[0]]
    model = build_stage_model(ctx, stage, [task])
    params = count_trainable_params(model)  # a frozen denoiser has none
    fold = ctx.data.folds[stage.fold]
    noise = noise_config(exp)
    fit_result = fit_model(ctx, model, [task], "joint", {}, exp.train,
                           fold.train, fold.val, report, resume_from, noise, exp.seed,
                           out_dir / "train_state")
    chosen = threshold_record(held_out_dice(ctx, stage.fold, model, [task], mask_cleanup(exp)))
    metrics, preds = evaluate_model(ctx, stage, model, [task], "baseline", noise,
                                    chosen["threshold"])
    ckpt = out_dir / "checkpoint"
    if rank == 0:
        save_checkpoints(out_dir, model, model_meta(ctx, [task], stage, chosen["threshold"]),
                         fit_result, exp.train)
        write_stage_samples(ctx, stage, model, [task], "baseline", out_dir)
    return _result(stage, fit_result, params, str(ckpt), **chosen,
                   **scored_epochs(fit_result, exp.train)), metrics, preds


def model_meta(ctx: StageContext, tasks: list[Task], stage: Stage,
               thresholds: dict[str, float] | None = None) -> dict[str, Any]:
    """Everything ``umsrep predict`` needs to rebuild the model without the experiment file:
    the network's ``ModelSpec`` (``stage_spec``) and how to apply it; ``threshold``: per
    segmentation task, the one chosen on the held-out fold."""
    exp = ctx.exp
    return {
        **stage_spec(exp, stage, tasks).to_json(),
        "threshold": dict(thresholds or {}),
        "stage": stage.id, "kind": stage.kind, "strategy": stage.strategy, "fold": stage.fold,
        "fit": exp.data.fit, "tta": list(exp.evaluation.tta),
        "contrast": exp.data.contrast,
        "mask_cleanup": mask_cleanup(exp),
        "rules": exp.rules,
    }
