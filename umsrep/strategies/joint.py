"""Joint fine-tuning: one optimizer over everything, one weighted sum of all task losses."""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping
from typing import Any

import torch
from torch.utils.data import DataLoader

from umsrep.strategies._base import Batch, Strategy, build_optimizer, cycled, loader_groups
from umsrep.strategies.weighting import WEIGHTINGS

logger = logging.getLogger(__name__)


def last_shared_parameter(model: torch.nn.Module, name: str | None = None) -> torch.nn.Parameter:
    """GradNorm's ``W``: the backbone parameter ``name``, or its last trainable weight (dim > 1)."""
    params = dict(model.backbone.named_parameters())
    if name is not None:
        if name not in params:
            raise ValueError(
                f"gradnorm_layer {name!r} is not a backbone parameter; known: {', '.join(params)}"
            )
        return params[name]
    weights = [p for p in params.values() if p.requires_grad and p.dim() > 1]
    if not weights:
        raise ValueError("gradnorm needs a trainable backbone weight; the backbone has none")
    return weights[-1]


class JointStrategy(Strategy):
    """``weighting``: ``fixed`` (``weights``: {task: w}, default each task's ``loss_weight``),
    ``uncertainty`` (Kendall et al. 2018) or ``gradnorm`` (Chen et al. 2018; ``alpha``,
    ``gradnorm_lr``, ``gradnorm_layer``).

    Every step draws one batch per task loader (tasks sharing a loader share the batch); an
    epoch is as long as the longest loader and shorter loaders start again within it.
    """

    name = "joint"

    def __init__(
        self,
        model,
        tasks,
        *,
        weighting: str = "fixed",
        weights: Mapping[str, float] | None = None,
        alpha: float = 1.5,
        gradnorm_lr: float = 1e-2,
        gradnorm_layer: str | None = None,
        **kw: Any,
    ) -> None:
        super().__init__(model, tasks, **kw)
        names = list(self.tasks)
        if weighting == "fixed":
            if weights is None:
                weights = {n: t.loss_weight for n, t in self.tasks.items()}
            self.weighting = WEIGHTINGS.get("fixed")(names, weights=weights)
        elif weighting == "gradnorm":
            self.weighting = WEIGHTINGS.get("gradnorm")(names, alpha=alpha, lr=gradnorm_lr)
        else:
            self.weighting = WEIGHTINGS.get(weighting)(names)
        self.weighting.to(self.device)
        self.shared = (
            last_shared_parameter(model, gradnorm_layer) if weighting == "gradnorm" else None
        )
        groups = [{"params": [p for p in self.model.parameters() if p.requires_grad]}]
        if self.weighting.joint_params:
            extra = list(self.weighting.parameters())
            if extra:  # learned weights are not decayed
                groups.append({"params": extra, "weight_decay": 0.0})
        self.optimizers["all"] = build_optimizer(
            groups, self.optimizer_name, self.lr, self.weight_decay
        )

    def loss_weights(self) -> dict[str, float]:
        return self.weighting.weights()

    def schedule(self, loaders: Mapping[str, DataLoader]) -> Iterator[dict[str, Batch]]:
        self.check_loaders(loaders)
        groups = loader_groups({n: loaders[n] for n in self.tasks})
        steps = max(len(loader) for loader, _ in groups)
        streams = [(cycled(loader), names) for loader, names in groups]
        for _ in range(steps):
            item: dict[str, Batch] = {}
            for stream, names in streams:
                batch = next(stream)
                item.update({n: batch for n in names})
            yield item

    def step(self, batches: Mapping[str, Batch]) -> dict[str, float]:
        opt = self.optimizers["all"]
        opt.zero_grad(set_to_none=True)
        losses, _ = self.task_losses(batches)
        if losses:  # only tasks with a target in their batch
            total = self.weighting.combine(losses)
            if self.shared is not None:
                self.weighting.before_backward(losses, self.shared)
            self.scaler.scale(total).backward()
            self.scaler.step(opt)
            self.scaler.update()
            self.weighting.after_step()
        return self.logs(losses)

    def extra_state(self) -> dict[str, Any]:
        state: dict[str, Any] = {"weighting": self.weighting.state_dict()}
        if hasattr(self.weighting, "optimizer"):
            state["weighting_optimizer"] = self.weighting.optimizer.state_dict()
        return state

    def load_extra_state(self, state: dict[str, Any]) -> None:
        if "weighting" in state:
            self.weighting.load_state_dict(state["weighting"])
        if "weighting_optimizer" in state:
            self.weighting.optimizer.load_state_dict(state["weighting_optimizer"])
