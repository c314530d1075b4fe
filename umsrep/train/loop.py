"""The plain PyTorch training loop: a strategy steps, hooks validate/schedule/stop/checkpoint.

Usage (one stage, one process)::

    seed_everything(seed)
    model = MultiTaskModel(backbone, heads)
    strategy = build_strategy("joint", model, tasks, **strategy_options(cfg, "cpu", seed),
                              noise_cfg=noise)
    result = fit(model, strategy, train_loaders, val_loaders, cfg, seed=seed)

A Ray Train worker passes ``report=lambda epoch, metrics, ckpt_dir: ray.train.report(...)``.
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader

from umsrep.models.multitask import count_trainable_params
from umsrep.strategies import Strategy
from umsrep.train.averaging import WeightAverage
from umsrep.train.checkpoint import (
    LAST,
    capture_rng_state,
    load_checkpoint,
    restore_rng_state,
    save_checkpoint,
    seed_everything,
)
from umsrep.train.config import TrainConfig
from umsrep.train.hooks import (
    BestWeightsHook,
    CosineHook,
    EarlyStoppingHook,
    HeadSelectionHook,
    Hook,
    LoopState,
    PlateauHook,
    ReportHook,
    ValidationHook,
)

logger = logging.getLogger(__name__)


@dataclass
class FitResult:
    epochs_run: int
    wall_s: float
    history: list[dict[str, float]] = field(default_factory=list)
    best_metric: float | None = None
    trainable_params: int = 0
    best_epoch: int = -1  # 0-based epoch of the best monitored value (-1: none validated)
    last_epoch: int = -1  # 0-based epoch the loop ended on
    # the weights fit did not leave in the model: the last epoch's when the best epoch's were
    # restored (restore_best), else the best epoch's; None when no epoch was validated
    other_weights: dict[str, torch.Tensor] | None = None
    # heads chosen each on its own (HeadSelectionHook): the best epoch of each; best_epoch is
    # then the latest of them
    best_epochs: dict[str, int] = field(default_factory=dict)


def strategy_options(cfg: TrainConfig, device: str = "cpu", seed: int = 0) -> dict[str, Any]:
    """The strategy keywords of a stage (optimizer, lr, weight decay, device, AMP, noise seed)."""
    return {
        "optimizer": cfg.optimizer,
        "lr": cfg.lr,
        "weight_decay": cfg.weight_decay,
        "device": device,
        "precision": cfg.precision,
        "noise_seed": seed,
    }


def run_epoch(
    strategy: Strategy, loaders: Mapping[str, DataLoader], max_steps: int | None = None,
    after_step: Callable[[], None] | None = None,
) -> dict[str, float]:
    """One pass of ``strategy.schedule``; returns ``train/<key>`` means over the steps.
    ``after_step`` is called after each step (the weight average's update).

    ``train/task_s/<task>``: the seconds of the steps that trained the task, loading their
    batches included (a step that trains several, as joint's, shared evenly): what each
    task's turns cost an alternating stage (``analysis/cost.py head_costs`` splits a
    multi-task stage's time by them). Timed on the host: on a GPU a step's time lands where the
    host next waits for the device, so the shares are approximate there."""
    strategy.train_mode()
    sums: dict[str, float] = defaultdict(float)
    counts: dict[str, int] = defaultdict(int)
    task_s: dict[str, float] = defaultdict(float)
    images, steps, start = 0, 0, time.perf_counter()
    mark = start
    for batches in strategy.schedule(loaders):
        if max_steps is not None and steps >= max_steps:
            break
        for key, value in strategy.step(batches).items():
            sums[key] += value
            counts[key] += 1
        if after_step is not None:
            after_step()
        now = time.perf_counter()  # since the last step: loading this step's batches included
        for task in batches:
            task_s[task] += (now - mark) / max(1, len(batches))
        mark = now
        images += sum(len(b["image"]) for b in {id(b): b for b in batches.values()}.values())
        steps += 1
    out = {f"train/{k}": sums[k] / counts[k] for k in sums}
    losses = [v for k, v in out.items() if k.startswith("train/loss/")]
    out["train/loss"] = float(sum(losses)) if losses else float("nan")
    out["train/steps"] = float(steps)
    out["train/images"] = float(images)
    out["train/epoch_s"] = time.perf_counter() - start
    out |= {f"train/task_s/{task}": sec for task, sec in task_s.items()}
    return out


def _resume(path: Path, state: LoopState, hooks: Sequence[Hook],
            average: WeightAverage | None = None) -> tuple[int, float, bool]:
    ckpt = load_checkpoint(path, map_location=state.strategy.device)
    state.model.load_state_dict(ckpt["model"])
    if (average is None) != ("average" not in ckpt):
        raise ValueError(f"{path} was written {'with' if average is None else 'without'} a "
                         "weight average (train.ema); resume it with the settings it was "
                         "started with")
    if average is not None:
        average.load_state_dict(ckpt["average"])
    state.strategy.load_state_dict(ckpt["strategy"])
    for hook in hooks:
        if hook.name in ckpt["hooks"]:
            hook.load_state_dict(ckpt["hooks"][hook.name])
    state.history.extend(ckpt["history"])
    state.best_metric = ckpt.get("best_metric")
    restore_rng_state(ckpt["rng"])
    logger.info("resumed from %s after epoch %d", path, ckpt["epoch"] - 1)
    return int(ckpt["epoch"]), float(ckpt["wall_s"]), bool(ckpt["stopped"])


def _save(path: Path, state: LoopState, hooks: Sequence[Hook], wall_s: float,
          average: WeightAverage | None = None) -> None:
    extra = {"average": average.state_dict()} if average is not None else {}
    save_checkpoint(
        path,
        {
            "epoch": state.epoch + 1,
            "stopped": state.stop,
            "wall_s": wall_s,
            "best_metric": state.best_metric,
            "model": state.model.state_dict(),
            "strategy": state.strategy.state_dict(),
            "hooks": {h.name: h.state_dict() for h in hooks},
            "history": state.history,
            "rng": capture_rng_state(),
            **extra,
        },
    )


def _summary(metrics: Mapping[str, float]) -> str:
    """One short line per epoch: losses, main validation metrics, time."""
    keys = [k for k in metrics if k == "train/loss" or k == "val/loss" or k.startswith("val/")
            and k.count("/") == 2 and not k.startswith("val/loss/")]
    parts = [f"{k}={metrics[k]:.4g}" for k in keys]
    parts.append(f"{metrics.get('train/images', 0):.0f} img in {metrics.get('train/epoch_s', 0):.1f} s")
    return " ".join(parts)


def default_hooks(cfg: TrainConfig, val_loaders: Mapping[str, DataLoader], seed: int = 0,
                  val_metrics: bool = False, per_head: Mapping[str, Any] | None = None
                  ) -> list[Hook]:
    """Validation, the plateau schedule, early stopping, best weights; ``per_head`` ({task:
    Task}, heads on a frozen backbone in one stage): the schedule, stopping and best epoch
    per head (``HeadSelectionHook``)."""
    hooks: list[Hook] = []
    if val_loaders:
        hooks.append(ValidationHook(val_loaders, seed=seed, metrics=val_metrics))
    if cfg.schedule == "cosine":
        hooks.append(CosineHook(cfg.epochs))
    elif cfg.plateau_patience > 0:
        hooks.append(PlateauHook(cfg.plateau_factor, cfg.plateau_patience, per_head=per_head))
    if per_head and val_loaders:
        hooks.append(HeadSelectionHook(per_head, cfg.patience, restore=cfg.restore_best))
        return hooks
    if cfg.patience > 0:
        hooks.append(EarlyStoppingHook(cfg.patience))
    hooks.append(BestWeightsHook(restore=cfg.restore_best))
    return hooks


def fit(
    model: torch.nn.Module,
    strategy: Strategy,
    train_loaders: Mapping[str, DataLoader],
    val_loaders: Mapping[str, DataLoader],
    cfg: TrainConfig,
    hooks: Sequence[Hook] = (),
    report: Callable[[int, dict[str, float], Path | None], None] | None = None,
    *,
    seed: int = 0,
    checkpoint_dir: str | Path | None = None,
    resume: bool = True,
    val_metrics: bool = False,
) -> FitResult:
    """Train ``model`` with ``strategy`` (on its device) for up to ``cfg.epochs`` epochs.

    ``checkpoint_dir``: ``last.pt`` is written there after every epoch and, with ``resume``,
    training continues from it; ``val_metrics``: task metrics on validation each epoch, not
    only the losses. Without validation loaders a ``val/...`` monitor falls back to
    ``train/loss``. With ``cfg.ema`` the hooks (validation, schedule, stopping, best epoch)
    see the weight average, training steps the trained weights, and the model ends with the
    average (of the best epoch with ``checkpoint: best``).
    """
    device = strategy.device
    model.to(device)
    if cfg.channels_last:
        model.to(memory_format=torch.channels_last)
    strategy.channels_last = cfg.channels_last
    monitor = cfg.monitor_key
    if not val_loaders and monitor.startswith("val/"):
        logger.info("no validation data: monitoring train/loss instead of %s", monitor)
        monitor = "train/loss"
    ckpt_dir = Path(checkpoint_dir) if checkpoint_dir else None
    state = LoopState(
        model=model, strategy=strategy, monitor=monitor, mode=cfg.monitor_mode,
        checkpoint_dir=ckpt_dir,
        val_every=max(1, cfg.val_every), last_epoch=cfg.epochs - 1,
        score_tasks=tuple(cfg.score_tasks or ()),
    )
    per_head = strategy.tasks if getattr(strategy, "selects_per_head", False) else None
    if per_head and not val_loaders:  # nothing to choose each head's epoch on
        per_head = None
    own = default_hooks(cfg, val_loaders, seed, val_metrics, per_head)
    reporters = [h for h in hooks if isinstance(h, ReportHook)]
    reporters += [ReportHook(report)] if report is not None else []
    all_hooks = own + [h for h in hooks if not isinstance(h, ReportHook)]
    trainable = count_trainable_params(model)
    average = WeightAverage(model, cfg.ema) if cfg.ema > 0 else None
    for hook in all_hooks:
        hook.before_train(state)
    seed_everything(seed)
    start_epoch, wall_before, stopped = 0, 0.0, False
    if ckpt_dir is not None and resume and (ckpt_dir / LAST).is_file():
        start_epoch, wall_before, stopped = _resume(ckpt_dir / LAST, state, all_hooks, average)
    update = (lambda: average.update(model)) if average is not None else None
    t0 = time.perf_counter()
    for epoch in range(start_epoch, 0 if stopped else cfg.epochs):
        state.epoch = epoch
        state.metrics = {
            "epoch": float(epoch),
            **run_epoch(strategy, train_loaders, cfg.max_steps_per_epoch, update),
        }
        state.history.append(state.metrics)
        if average is not None:  # the hooks validate and keep the average
            average.swap(model)
        for hook in all_hooks:
            hook.after_epoch(state)
        if average is not None:  # training goes on from the trained weights
            average.swap(model)
        # training time so far, validation included: the cost tables' time to a given quality
        state.metrics["elapsed_s"] = wall_before + time.perf_counter() - t0
        logger.info("epoch %d: %s", epoch, _summary(state.metrics))
        if ckpt_dir is not None:
            _save(ckpt_dir / LAST, state, all_hooks, wall_before + time.perf_counter() - t0,
                  average)
        if state.validation_epoch() or state.stop:  # Ray/Tune see validated epochs only
            for hook in reporters:
                hook.after_epoch(state)
        if state.stop:
            break
    strategy.finish()
    if average is not None:  # the last epoch's weights are its average's
        average.copy_to(model)
    best = next(h for h in own if isinstance(h, BestWeightsHook))
    last_weights = _other_weights(state.model, best, cfg.restore_best)
    for hook in all_hooks:
        hook.after_train(state)
    return FitResult(
        epochs_run=len(state.history),
        wall_s=wall_before + time.perf_counter() - t0,
        history=state.history,
        best_metric=state.best_metric,
        trainable_params=trainable,
        best_epoch=best.best_epoch,
        last_epoch=len(state.history) - 1,
        other_weights=last_weights if cfg.restore_best else best.weights,
        best_epochs=dict(getattr(best, "best_epochs", {})),
    )


def _other_weights(model: torch.nn.Module, best: BestWeightsHook,
                   restore_best: bool) -> dict[str, torch.Tensor] | None:
    """A copy of the last epoch's weights when the best epoch's are about to replace them."""
    if not restore_best or best.weights is None:
        return None
    return {k: v.detach().clone() for k, v in model.state_dict().items()}
