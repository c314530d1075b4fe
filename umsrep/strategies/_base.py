"""What every fine-tuning strategy shares: optimizers, AMP, the noise generator, loader plans.

A strategy turns the step's loss dict (``{"loss/<task>": scalar}``) into optimizer steps.
The loop only drives it::

    strategy.train_mode()
    for batches in strategy.schedule(train_loaders):   # {task: batch}, one item per step
        logs = strategy.step(batches)                   # {"loss/<task>": float, "weight/<task>": ...}
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader

from umsrep.models.multitask import MultiTaskModel
from umsrep.precision import resolve_precision
from umsrep.strategies._step import compute_losses, move_batch
from umsrep.tasks import Task

logger = logging.getLogger(__name__)

Batch = dict[str, Any]

_OPTIMIZERS = {
    "adam": torch.optim.Adam,
    "adamw": torch.optim.AdamW,
    "sgd": torch.optim.SGD,
    "rmsprop": torch.optim.RMSprop,
}


def build_optimizer(
    params: Sequence[nn.Parameter] | Sequence[dict[str, Any]],
    name: str,
    lr: float,
    weight_decay: float = 0.0,
) -> torch.optim.Optimizer:
    """An optimizer by name: adam, adamw, sgd (momentum 0.9), rmsprop."""
    if name not in _OPTIMIZERS:
        raise ValueError(f"optimizer {name!r} is unknown; use one of {', '.join(_OPTIMIZERS)}")
    kwargs: dict[str, Any] = {"lr": lr, "weight_decay": weight_decay}
    if name == "sgd":
        kwargs["momentum"] = 0.9
    return _OPTIMIZERS[name](params, **kwargs)


def loader_groups(loaders: Mapping[str, DataLoader]) -> list[tuple[DataLoader, list[str]]]:
    """Tasks grouped by the DataLoader object they share (one dataset, several label columns)."""
    groups: dict[int, tuple[DataLoader, list[str]]] = {}
    for name, loader in loaders.items():
        groups.setdefault(id(loader), (loader, []))[1].append(name)
    return list(groups.values())


def cycled(loader: DataLoader) -> Iterator[Batch]:
    """Endless batches from ``loader``: a short loader starts again (reshuffled) when spent."""
    while True:
        empty = True
        for batch in loader:
            empty = False
            yield batch
        if empty:
            raise ValueError("a task's DataLoader is empty; check the task's training data")


class Strategy:
    """Base class; subclasses set ``name`` and implement ``schedule``, ``step`` and optimizers.

    ``tasks`` must name heads of ``model``. Optimizer settings are plain keywords so a sweep can
    set them; ``noise_cfg`` (``umsrep.noise.NoiseConfig``) is needed when a task is ``denoise``
    or ``noisy_inputs`` is True. ``precision`` (``umsrep.precision``: auto | fp32 | bf16 |
    fp16) sets autocast and the GradScaler.
    """

    name = ""

    def __init__(
        self,
        model: MultiTaskModel,
        tasks: Sequence[Task] | Mapping[str, Task],
        *,
        optimizer: str = "adam",
        lr: float = 1e-3,
        weight_decay: float = 0.0,
        noise_cfg: Any = None,
        device: str | torch.device = "cpu",
        precision: str = "fp32",
        noise_seed: int = 0,
        noisy_inputs: bool = False,
    ) -> None:
        task_list = list(tasks.values()) if isinstance(tasks, Mapping) else list(tasks)
        self.tasks: dict[str, Task] = {t.name: t for t in task_list}
        missing = [n for n in self.tasks if n not in model.heads]
        if missing:
            raise ValueError(
                f"strategy {self.name!r}: tasks {missing} have no head in the model "
                f"(heads: {model.task_names}); attach one with model.add_head"
            )
        self.model = model
        self.device = torch.device(device)
        self.precision = resolve_precision(precision, self.device)
        self.amp = self.precision.autocast
        self.channels_last = False  # the loop sets it with the model's memory format
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.precision.scaler)
        self.generator = torch.Generator(device=self.device)
        self.generator.manual_seed(noise_seed)
        self.noise_cfg = noise_cfg
        self.noisy_inputs = noisy_inputs
        self.optimizer_name, self.lr, self.weight_decay = optimizer, lr, weight_decay
        self.optimizers: dict[str, torch.optim.Optimizer] = {}
        # tasks whose heads train no more (``umsrep.train.hooks.HeadSelectionHook``)
        self.retired: set[str] = set()

    # -- what subclasses implement ---------------------------------------------------------
    def schedule(self, loaders: Mapping[str, DataLoader]) -> Iterator[dict[str, Batch]]:
        raise NotImplementedError

    def step(self, batches: Mapping[str, Batch]) -> dict[str, float]:
        raise NotImplementedError

    def loss_weights(self) -> dict[str, float]:
        """The weight each task's loss currently gets (logged each epoch)."""
        return {n: 1.0 for n in self.tasks}

    # -- shared machinery ------------------------------------------------------------------
    def train_mode(self) -> None:
        """Put the model in training mode (independent overrides it to freeze BN)."""
        self.model.train()

    def check_loaders(self, loaders: Mapping[str, DataLoader]) -> None:
        missing = [n for n in self.tasks if n not in loaders]
        if missing:
            raise ValueError(
                f"strategy {self.name!r}: no training DataLoader for tasks {missing} "
                f"(given: {sorted(loaders)})"
            )

    def task_losses(
        self, batches: Mapping[str, Batch]
    ) -> tuple[dict[str, torch.Tensor], dict[str, int]]:
        """Per-task losses (``{task: scalar}``) of the tasks with a target, and every task's
        valid-sample count.

        Tasks sharing one batch object share one forward pass; a task without any target in
        its batch is not run at all (its head, BN statistics included, stays as it was).
        """
        groups: dict[int, tuple[Batch, list[str]]] = {}
        for name, batch in batches.items():
            groups.setdefault(id(batch), (batch, []))[1].append(name)
        losses: dict[str, torch.Tensor] = {}
        counts: dict[str, int] = {}
        for batch, names in groups.values():
            batch = move_batch(batch, self.device, self.channels_last)
            counts.update({n: self.tasks[n].num_valid(batch) for n in names})
            present = [n for n in names if counts[n] > 0]
            if not present:
                continue
            with torch.autocast(self.device.type, dtype=self.precision.dtype,
                                enabled=self.amp):
                out = compute_losses(
                    self.model,
                    batch,
                    self.tasks,
                    present,
                    self.noise_cfg,
                    self.generator,
                    noisy_inputs=self.noisy_inputs,
                )
            losses.update({n: out[f"loss/{n}"] for n in present})
        return losses, counts

    def logs(self, losses: Mapping[str, torch.Tensor]) -> dict[str, float]:
        """Step logs: losses of the tasks that had targets, and the current loss weights."""
        out = {f"loss/{n}": float(v.detach()) for n, v in losses.items()}
        out.update({f"weight/{n}": w for n, w in self.loss_weights().items()})
        return out

    def finish(self) -> None:
        """Called by the loop once training ends (release what training alone needed)."""

    def extra_state(self) -> dict[str, Any]:
        return {}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        del state

    def state_dict(self) -> dict[str, Any]:
        """Optimizers, grad scaler, noise RNG and learned weights (tensors/primitives only)."""
        return {
            "optimizers": {k: o.state_dict() for k, o in self.optimizers.items()},
            "scaler": self.scaler.state_dict(),
            "generator": self.generator.get_state(),
            "extra": self.extra_state(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for key, opt in self.optimizers.items():
            opt.load_state_dict(state["optimizers"][key])
        if state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        self.generator.set_state(state["generator"].cpu())
        self.load_extra_state(state.get("extra", {}))
