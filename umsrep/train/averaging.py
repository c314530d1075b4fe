"""``WeightAverage``: an exponential moving average of a model's weights over training steps.

Validated, chosen and kept in place of the trained weights when ``TrainConfig.ema`` > 0. An
average of the weights along the last stretch of training sits in a flatter region of the loss
than any one step's weights, which is what carries over to another site's images: Polyak &
Juditsky 1992; SWA, Izmailov et al. 2018; SWAD (domain generalisation by weight averaging), Cha
et al. 2021; timm's ``ModelEmaV3``. The average covers every floating parameter and buffer
(batch-norm statistics included); integer buffers (``num_batches_tracked``) are copied. The
decay warms up as ``min(decay, (1 + t) / (10 + t))`` after ``t`` updates, so the first steps'
weights (the initial head) do not linger in the average.
"""

from __future__ import annotations

from typing import Any

import torch


def _tensors(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {**dict(model.named_parameters()), **dict(model.named_buffers())}


class WeightAverage:
    """``update(model)`` after each optimizer step; ``swap(model)`` exchanges the model's weights
    with the average (twice restores them); ``copy_to(model)`` puts the average in for good."""

    def __init__(self, model: torch.nn.Module, decay: float) -> None:
        if not 0.0 < decay < 1.0:
            raise ValueError(f"the weight average's decay must lie in (0, 1), not {decay}")
        self.decay = decay
        self.updates = 0
        self.shadow = {n: t.detach().clone() for n, t in _tensors(model).items()}

    def current_decay(self) -> float:
        return min(self.decay, (1.0 + self.updates) / (10.0 + self.updates))

    @torch.no_grad()
    def update(self, model: torch.nn.Module) -> None:
        self.updates += 1
        weight = 1.0 - self.current_decay()
        floats, targets = [], []
        for name, tensor in _tensors(model).items():
            avg = self.shadow[name]
            if avg.is_floating_point():
                floats.append(avg)
                targets.append(tensor.detach())
            else:
                avg.copy_(tensor)
        if floats:
            torch._foreach_lerp_(floats, targets, weight)

    @torch.no_grad()
    def swap(self, model: torch.nn.Module) -> None:
        for name, tensor in _tensors(model).items():
            kept = tensor.detach().clone()
            tensor.copy_(self.shadow[name])
            self.shadow[name].copy_(kept)

    @torch.no_grad()
    def copy_to(self, model: torch.nn.Module) -> None:
        for name, tensor in _tensors(model).items():
            tensor.copy_(self.shadow[name])

    def state_dict(self) -> dict[str, Any]:
        return {"decay": self.decay, "updates": self.updates, "shadow": self.shadow}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.decay, self.updates = float(state["decay"]), int(state["updates"])
        for name, tensor in state["shadow"].items():
            self.shadow[name].copy_(tensor)
