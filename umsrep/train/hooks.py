"""Hooks around the plain training loop (detectron2 style).

A hook sees the ``LoopState`` before training, after each epoch (``state.metrics`` holds that
epoch's metrics, e.g. ``train/loss/<task>``, ``val/loss``) and after training. Hooks with state
(early stopping counters, LR schedulers, best weights) give ``state_dict`` so a resumed run
continues exactly where it stopped.
"""

from __future__ import annotations

import copy
import logging
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader

from umsrep.strategies import Strategy, compute_losses, move_batch
from umsrep.train.evaluate import evaluate

logger = logging.getLogger(__name__)


@dataclass
class LoopState:
    """What hooks read and write. ``epoch`` is 0-based; ``stop`` ends training after it."""

    model: torch.nn.Module
    strategy: Strategy
    monitor: str
    mode: str  # "min" | "max"
    epoch: int = -1
    metrics: dict[str, float] = field(default_factory=dict)
    history: list[dict[str, float]] = field(default_factory=list)
    stop: bool = False
    best_metric: float | None = None
    checkpoint_dir: Path | None = None
    val_every: int = 1  # validation runs on every N-th epoch and on the last one
    last_epoch: int | None = None
    score_tasks: tuple[str, ...] = ()  # TrainConfig.score_tasks (see ``stage_score``)

    def validation_epoch(self) -> bool:
        """Whether this epoch is validated (every ``val_every``-th epoch and the last one)."""
        return (self.epoch + 1) % self.val_every == 0 or self.epoch == self.last_epoch

    def has_monitor(self) -> bool:
        """Whether hooks should read the monitored value this epoch: on validated epochs
        always (a misspelt monitor then raises in ``monitored``), between them when present."""
        return self.validation_epoch() or self.monitor in self.metrics

    def monitored(self) -> float:
        if self.monitor not in self.metrics:
            raise KeyError(
                f"monitor {self.monitor!r} is not among this epoch's metrics "
                f"({', '.join(sorted(self.metrics))}); set TrainConfig.monitor to one of them"
            )
        return float(self.metrics[self.monitor])

    def better(self, value: float, best: float | None) -> bool:
        if best is None or math.isnan(best):
            return not math.isnan(value)
        return value < best if self.mode == "min" else value > best


MAIN_METRIC = {"classification": ("auc", "accuracy"), "segmentation": ("dice",),
               "denoise": ("psnr",)}


def val_score(metrics: Mapping[str, float], tasks: Mapping[str, Any]) -> float:
    """Mean over ``tasks`` of each task's main validation metric, all on a 0-1 scale: Dice,
    AUC (accuracy where there is no AUC), PSNR / 50. Falls back to minus the validation loss.

    Keys may be ``val/<task>/<metric>`` (the loop), ``val_<task>_<metric>`` or
    ``<task>/<metric>``; NaN values are skipped.
    """
    values = []
    for name, task in tasks.items():
        for metric in MAIN_METRIC[task.kind]:
            keys = (f"val/{name}/{metric}", f"val_{name}_{metric}", f"{name}/{metric}")
            found = [float(metrics[k]) for k in keys
                     if k in metrics and not math.isnan(float(metrics[k]))]
            if found:
                values.append(found[0] / 50.0 if metric == "psnr" else found[0])
                break
    if values:
        return sum(values) / len(values)
    loss = metrics.get("val_loss", metrics.get("val/loss"))
    return -float(loss) if loss is not None else float("nan")


def stage_score(metrics: Mapping[str, float], tasks: Mapping[str, Any],
                score_tasks: Sequence[str] = ()) -> float:
    """``val/score`` of a stage that trains ``tasks``: ``val_score`` over those of them named in
    ``score_tasks`` (all of them when ``score_tasks`` is empty). A stage that trains none of
    ``score_tasks`` is scored by minus its validation loss: the tasks left out are the ones
    whose metric is too noisy to choose an epoch by (a TB AUC on 45 validation images), and
    their loss is the steadier judge of the same stage.
    """
    if score_tasks:
        tasks = {n: t for n, t in tasks.items() if n in score_tasks}
        if not tasks:
            loss = metrics.get("val/loss", math.nan)
            return -float(loss)
    return val_score(metrics, tasks)


class Hook:
    name = "hook"

    def before_train(self, state: LoopState) -> None:
        pass

    def after_epoch(self, state: LoopState) -> None:
        pass

    def after_train(self, state: LoopState) -> None:
        pass

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        del state


class ValidationHook(Hook):
    """Mean validation loss per task (``val/loss/<task>``) and their sum (``val/loss``).

    The noise of denoise tasks comes from a generator re-seeded each epoch with ``seed``, so
    validation numbers are comparable across epochs and use none of the training RNG. With
    ``metrics=True`` it also adds ``val/<task>/<metric>`` from ``umsrep.train.evaluate``.
    """

    name = "validation"

    def __init__(self, loaders: Mapping[str, DataLoader], seed: int = 0, metrics: bool = False):
        self.loaders = dict(loaders)
        self.seed = seed
        self.with_metrics = metrics

    @torch.no_grad()
    def after_epoch(self, state: LoopState) -> None:
        if not state.validation_epoch():
            return
        strategy = state.strategy
        state.model.eval()
        gen = torch.Generator(device=strategy.device)
        total = 0.0
        for name, loader in self.loaders.items():
            gen.manual_seed(self.seed)
            weighted, count = 0.0, 0
            for batch in loader:
                batch = move_batch(batch, strategy.device, strategy.channels_last)
                n = strategy.tasks[name].num_valid(batch)
                if n == 0:
                    continue
                losses = compute_losses(
                    state.model,
                    batch,
                    strategy.tasks,
                    [name],
                    strategy.noise_cfg,
                    gen,
                    noisy_inputs=strategy.noisy_inputs,
                )
                weighted += float(losses[f"loss/{name}"]) * n
                count += n
            value = weighted / count if count else float("nan")
            state.metrics[f"val/loss/{name}"] = value
            total += value
        state.metrics["val/loss"] = total
        if self.with_metrics:

            tasks = [strategy.tasks[n] for n in self.loaders]
            rows, _ = evaluate(
                state.model,
                tasks,
                self.loaders,
                strategy.noise_cfg,
                device=strategy.device,
                seed=self.seed,
            )
            for row in rows:
                suffix = f"/{row['noise']}" if row["noise"] else ""
                state.metrics[f"val/{row['task']}/{row['metric']}{suffix}"] = row["value"]
            state.metrics["val/score"] = stage_score(state.metrics, strategy.tasks,
                                                     state.score_tasks)


class _SchedulerHook(Hook):
    """A hook that holds one LR scheduler per optimizer (``schedulers``, keyed like
    ``strategy.optimizers``) and saves them for resume."""

    schedulers: dict[str, Any]

    def state_dict(self) -> dict[str, Any]:
        return {k: s.state_dict() for k, s in self.schedulers.items()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for key, sched in self.schedulers.items():
            sched.load_state_dict(state[key])


class PlateauHook(_SchedulerHook):
    """Reduce every optimizer's LR by ``factor`` after ``patience`` epochs without progress."""

    name = "plateau"

    def __init__(self, factor: float = 0.5, patience: int = 5,
                 per_head: Mapping[str, Any] | None = None) -> None:
        """``per_head`` ({task: Task}): each optimizer (keyed by its task, as independent heads'
        are) watches its own task's value (``head_value``) instead of the loop's monitor."""
        self.factor, self.patience = factor, patience
        self.per_head = dict(per_head or {})
        self.schedulers: dict[str, torch.optim.lr_scheduler.ReduceLROnPlateau] = {}

    def before_train(self, state: LoopState) -> None:
        if not self.schedulers:
            self.schedulers = {
                k: torch.optim.lr_scheduler.ReduceLROnPlateau(
                    # patience in epochs; the scheduler counts validations
                    opt, mode=state.mode, factor=self.factor,
                    patience=max(1, math.ceil(self.patience / state.val_every)),
                )
                for k, opt in state.strategy.optimizers.items()
            }

    def after_epoch(self, state: LoopState) -> None:
        if not state.has_monitor():
            return
        value = None if self.per_head else state.monitored()
        for key, sched in self.schedulers.items():
            if self.per_head:
                if key in getattr(state.strategy, "retired", ()):
                    continue
                value = head_value(state, key, self.per_head[key])
            sched.step(value)
            state.metrics[f"lr/{key}"] = float(sched.optimizer.param_groups[0]["lr"])


class CosineHook(_SchedulerHook):
    """Cosine-anneal every optimizer's LR from its start to 0 over ``epochs`` (one step per
    epoch, ``torch.optim.lr_scheduler.CosineAnnealingLR``)."""

    name = "cosine"

    def __init__(self, epochs: int) -> None:
        self.epochs = epochs
        self.schedulers: dict[str, torch.optim.lr_scheduler.CosineAnnealingLR] = {}

    def before_train(self, state: LoopState) -> None:
        if not self.schedulers:
            self.schedulers = {
                k: torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(1, self.epochs))
                for k, opt in state.strategy.optimizers.items()
            }

    def after_epoch(self, state: LoopState) -> None:
        for key, sched in self.schedulers.items():
            sched.step()
            state.metrics[f"lr/{key}"] = float(sched.optimizer.param_groups[0]["lr"])


class EarlyStoppingHook(Hook):
    """Stop after ``patience`` epochs without improvement of the monitored value."""

    name = "early_stopping"

    def __init__(self, patience: int) -> None:
        self.patience = patience
        self.best: float | None = None
        self.bad_epochs = 0

    def after_epoch(self, state: LoopState) -> None:
        if not state.has_monitor():
            return
        value = state.monitored()
        if state.better(value, self.best):
            self.best, self.bad_epochs = value, 0
        else:  # epochs since the last validation (val_every), so patience stays in epochs
            self.bad_epochs += state.val_every
        if self.bad_epochs >= self.patience:
            logger.info(
                "early stopping at epoch %d: %s has not improved for %d epochs",
                state.epoch,
                state.monitor,
                self.bad_epochs,
            )
            state.stop = True

    def state_dict(self) -> dict[str, Any]:
        return {"best": self.best, "bad_epochs": self.bad_epochs}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.best, self.bad_epochs = state["best"], state["bad_epochs"]


class BestWeightsHook(Hook):
    """Keep the weights of the best epoch; put them back into the model when training ends."""

    name = "best_weights"

    def __init__(self, restore: bool = True) -> None:
        self.restore = restore
        self.best: float | None = None
        self.best_epoch = -1
        self.weights: dict[str, torch.Tensor] | None = None

    def after_epoch(self, state: LoopState) -> None:
        if not state.has_monitor():
            return
        value = state.monitored()
        if state.better(value, self.best):
            self.best, self.best_epoch = value, state.epoch
            self.weights = copy.deepcopy(state.model.state_dict())
        state.best_metric = self.best

    def after_train(self, state: LoopState) -> None:
        state.best_metric = self.best
        if self.restore and self.weights is not None:
            state.model.load_state_dict(self.weights)
            logger.info(
                "restored the weights of epoch %d (%s = %.6g)",
                self.best_epoch,
                state.monitor,
                self.best,
            )

    def state_dict(self) -> dict[str, Any]:
        return {"best": self.best, "best_epoch": self.best_epoch, "weights": self.weights}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.best, self.best_epoch = state["best"], state["best_epoch"]
        self.weights = state["weights"]


def head_value(state: LoopState, name: str, task: Any) -> float:
    """Task ``name``'s own validation value under the loop's monitor: for ``score`` its main
    metric, or minus its loss when ``score_tasks`` leaves it out (``stage_score`` of that task
    alone); for ``loss`` its loss."""
    loss = float(state.metrics.get(f"val/loss/{name}", math.nan))
    if state.mode == "max":  # without metrics val_score falls back to minus this task's loss
        return stage_score({**state.metrics, "val/loss": loss}, {name: task}, state.score_tasks)
    return loss


class HeadSelectionHook(BestWeightsHook):
    """Early stopping and best-epoch selection per head, for heads trained side by side on a
    frozen backbone (the independent strategy with several tasks in one stage).

    Each head is watched on its own validation value (``head_value``); a head that has not
    improved for ``patience`` epochs is retired (``strategy.retired``: no more steps, its
    optimizer untouched) and training stops when every head is. ``weights`` is the model with
    each head at its own best epoch (the frozen backbone is the same in every epoch), which
    ``after_train`` restores; ``best_epochs`` says which epoch each head came from.
    """

    name = "head_selection"

    def __init__(self, tasks: Mapping[str, Any], patience: int = 0, restore: bool = True):
        super().__init__(restore=restore)
        self.tasks = dict(tasks)
        self.patience = patience
        self.best_values: dict[str, float] = {}
        self.best_epochs: dict[str, int] = {}
        self.bad_epochs: dict[str, int] = {n: 0 for n in self.tasks}

    def after_epoch(self, state: LoopState) -> None:
        if not state.validation_epoch():
            return
        retired = state.strategy.retired
        model_state = state.model.state_dict()
        if self.weights is None:
            self.weights = copy.deepcopy(model_state)
        for name, task in self.tasks.items():
            if name in retired:
                continue
            value = head_value(state, name, task)
            if state.better(value, self.best_values.get(name)):
                self.best_values[name], self.best_epochs[name] = value, state.epoch
                self.bad_epochs[name] = 0
                prefixes = (f"heads.{name}.", f"module.heads.{name}.")  # DDP wraps it
                self.weights.update({k: v.detach().clone() for k, v in model_state.items()
                                     if k.startswith(prefixes)})
            else:
                self.bad_epochs[name] += state.val_every
            if self.patience > 0 and self.bad_epochs[name] >= self.patience:
                logger.info("head %s: no better for %d epochs, best epoch %s; retired",
                            name, self.bad_epochs[name], self.best_epochs.get(name))
                retired.add(name)
        if self.best_epochs:
            self.best_epoch = max(self.best_epochs.values())
            self.best = sum(self.best_values.values()) / len(self.best_values)
        state.best_metric = self.best
        if retired >= set(self.tasks):
            state.stop = True

    def after_train(self, state: LoopState) -> None:
        state.best_metric = self.best
        if self.restore and self.weights is not None:
            state.model.load_state_dict(self.weights)
            logger.info("restored each head's best epoch: %s", self.best_epochs)

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "best_values": self.best_values,
                "best_epochs": self.best_epochs, "bad_epochs": self.bad_epochs}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.best_values = dict(state["best_values"])
        self.best_epochs = dict(state["best_epochs"])
        self.bad_epochs = dict(state["bad_epochs"])


class ReportHook(Hook):
    """Calls ``report(epoch, metrics, checkpoint_dir)`` after each epoch's checkpoint.

    A Ray Train worker passes a function that wraps ``ray.train.report``; this module never
    imports ray.
    """

    name = "report"

    def __init__(self, report: Callable[[int, dict[str, float], Path | None], None]) -> None:
        self.report = report

    def after_epoch(self, state: LoopState) -> None:
        self.report(state.epoch, dict(state.metrics), state.checkpoint_dir)
