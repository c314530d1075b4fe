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
from torch.optim.swa_utils import get_ema_multi_avg_fn


def _tensors(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {**dict(model.named_parameters()), **dict(model.named_buffers())}


class WeightAverage:
    """``update(model)`` after each optimizer step; ``swap(model)`` exchanges the model's weights
    with the average (twice restores them); ``copy_to(model)`` puts the average in for good.

    Parameters frozen when it is built (an independent stage's backbone) are left out: their
    average is themselves. Each step is ``torch.optim.swa_utils.get_ema_multi_avg_fn`` at the
    warmed-up decay; ``AveragedModel`` is not used: it deep-copies the module and has no
    warm-up, and the swap for validation would still be needed.
    """

    def __init__(self, model: torch.nn.Module, decay: float) -> None:
        if not 0.0 < decay < 1.0:
            raise ValueError(f"the weight average's decay must lie in (0, 1), not {decay}")
        self.decay = decay
        self.updates = 0
        frozen = {n for n, p in model.named_parameters() if not p.requires_grad}
        self.shadow = {n: t.detach().clone() for n, t in _tensors(model).items()
                       if n not in frozen}

    def current_decay(self) -> float:
        return min(self.decay, (1.0 + self.updates) / (10.0 + self.updates))

    def _pairs(self, model: torch.nn.Module) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """(average, the model's tensor) for every averaged name."""
        tensors = _tensors(model)
        return [(avg, tensors[name]) for name, avg in self.shadow.items()]

    @torch.no_grad()
    def update(self, model: torch.nn.Module) -> None:
        self.updates += 1
        step = get_ema_multi_avg_fn(self.current_decay())  # torch's EMA step, a foreach lerp
        floats, targets = [], []
        for avg, tensor in self._pairs(model):
            if avg.is_floating_point():
                floats.append(avg)
                targets.append(tensor.detach())
            else:
                avg.copy_(tensor)
        if floats:
            step(floats, targets, None)

    @torch.no_grad()
    def swap(self, model: torch.nn.Module) -> None:
        for avg, tensor in self._pairs(model):
            kept = tensor.detach().clone()
            tensor.copy_(avg)
            avg.copy_(kept)

    @torch.no_grad()
    def copy_to(self, model: torch.nn.Module) -> None:
        for avg, tensor in self._pairs(model):
            tensor.copy_(avg)

    def state_dict(self) -> dict[str, Any]:
        return {"decay": self.decay, "updates": self.updates, "shadow": self.shadow}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue a saved average; refused when it was kept with another decay or over
        other weights (a resumed stage must keep the settings it started with)."""
        if float(state["decay"]) != self.decay:
            raise ValueError(f"the saved weight average has decay {state['decay']}, this stage "
                             f"{self.decay}; resume with the settings it was started with")
        if set(state["shadow"]) != set(self.shadow):
            raise ValueError("the saved weight average covers other weights than this model's")
        self.updates = int(state["updates"])
        for name, tensor in state["shadow"].items():
            self.shadow[name].copy_(tensor)
