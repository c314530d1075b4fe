"""Loss weighting schemes of the joint strategy (a registry).

A weighting is an ``nn.Module`` built as ``WEIGHTINGS.get(name)(task_names, **options)`` with:

- ``combine(losses: {task: scalar}) -> scalar``: the joint loss over the tasks present in the
  step (a task with no target in the batch is left out, so it neither moves its head nor its
  weight);
- ``before_backward(losses, shared)``: a hook run with the graph alive (GradNorm measures its
  per-task gradient norms on ``shared``, the last shared parameter);
- ``after_step()``: a hook run after the model's optimizer step (GradNorm updates its weights);
- ``weights() -> {task: float}``: the current weights, for the logs.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence

import torch
from torch import nn

from umsrep.registry import Registry

logger = logging.getLogger(__name__)

WEIGHTINGS: Registry[type[nn.Module]] = Registry(
    "loss weighting",
    "Joint-loss weightings: cls(task_names, **options) -> nn.Module with combine/weights.",
)


class _Weighting(nn.Module):
    #: whether this module's parameters join the model's optimizer (GradNorm has its own)
    joint_params = True

    def __init__(self, task_names: Sequence[str]) -> None:
        super().__init__()
        self.task_names = list(task_names)

    def before_backward(self, losses: Mapping[str, torch.Tensor], shared: torch.Tensor) -> None:
        del losses, shared

    def after_step(self) -> None:
        pass


@WEIGHTINGS.register("fixed")
class FixedWeighting(_Weighting):
    """``sum_i w_i * L_i`` with weights from the config (tasks not named get 1.0)."""

    def __init__(self, task_names: Sequence[str], weights: Mapping[str, float] | None = None):
        super().__init__(task_names)
        weights = dict(weights or {})
        unknown = sorted(set(weights) - set(self.task_names))
        if unknown:
            raise ValueError(f"fixed weights name unknown tasks {unknown}; tasks: {task_names}")
        values = [float(weights.get(n, 1.0)) for n in self.task_names]
        self.register_buffer("w", torch.tensor(values))

    def combine(self, losses: Mapping[str, torch.Tensor]) -> torch.Tensor:
        return sum(self.w[self.task_names.index(n)] * v for n, v in losses.items())

    def weights(self) -> dict[str, float]:
        return {n: float(w) for n, w in zip(self.task_names, self.w, strict=True)}


@WEIGHTINGS.register("uncertainty")
class UncertaintyWeighting(_Weighting):
    """Homoscedastic uncertainty (Kendall, Gal & Cipolla 2018).

    ``sum_i 0.5 * exp(-s_i) * L_i + 0.5 * s_i`` with learned ``s_i = log sigma_i^2`` (start 0);
    the logged weight of task i is ``0.5 * exp(-s_i)``.
    """

    def __init__(self, task_names: Sequence[str]) -> None:
        super().__init__(task_names)
        self.log_vars = nn.Parameter(torch.zeros(len(self.task_names)))

    def combine(self, losses: Mapping[str, torch.Tensor]) -> torch.Tensor:
        total = 0.0
        for name, loss in losses.items():
            s = self.log_vars[self.task_names.index(name)]
            total = total + 0.5 * torch.exp(-s) * loss + 0.5 * s
        return total

    def weights(self) -> dict[str, float]:
        w = 0.5 * torch.exp(-self.log_vars.detach())
        return {n: float(v) for n, v in zip(self.task_names, w, strict=True)}


@WEIGHTINGS.register("gradnorm")
class GradNormWeighting(_Weighting):
    """GradNorm (Chen et al. 2018): balance gradient norms on the last shared layer.

    ``G_i = w_i * ||d L_i / d W||``; target ``mean(G) * r_i ** alpha`` with
    ``r_i = (L_i / L_i(0)) / mean_j (L_j / L_j(0))``; ``w`` takes an Adam step on
    ``sum_i |G_i - target_i|`` and is renormalised to sum to the number of tasks.
    """

    joint_params = False

    def __init__(self, task_names: Sequence[str], alpha: float = 1.5, lr: float = 1e-2) -> None:
        super().__init__(task_names)
        self.alpha = float(alpha)
        self.w = nn.Parameter(torch.ones(len(self.task_names)))
        self.register_buffer("initial", torch.full((len(self.task_names),), float("nan")))
        self.optimizer = torch.optim.Adam([self.w], lr=lr)
        self._pending: tuple[list[int], torch.Tensor, torch.Tensor] | None = None

    def combine(self, losses: Mapping[str, torch.Tensor]) -> torch.Tensor:
        w = self.w.detach()
        return sum(w[self.task_names.index(n)] * v for n, v in losses.items())

    def before_backward(self, losses: Mapping[str, torch.Tensor], shared: torch.Tensor) -> None:
        idx, norms, values = [], [], []
        for name, loss in losses.items():
            (grad,) = torch.autograd.grad(loss, shared, retain_graph=True, allow_unused=True)
            i = self.task_names.index(name)
            idx.append(i)
            norms.append(grad.float().norm() if grad is not None else torch.zeros(()))
            values.append(loss.detach().float())
            if torch.isnan(self.initial[i]):
                self.initial[i] = values[-1].clamp_min(1e-12)
        if len(idx) > 1:  # balancing needs at least two tasks in the step
            self._pending = (idx, torch.stack(norms).to(self.w.device), torch.stack(values))

    def after_step(self) -> None:
        if self._pending is None:
            return
        idx, norms, values = self._pending
        self._pending = None
        g = self.w[idx] * norms
        ratio = values.to(g.device) / self.initial[idx]
        r = ratio / ratio.mean()
        target = (g.mean() * r**self.alpha).detach()
        self.optimizer.zero_grad(set_to_none=True)
        (g - target).abs().sum().backward()
        self.optimizer.step()
        with torch.no_grad():
            self.w.clamp_(min=1e-4)
            self.w.mul_(len(self.task_names) / self.w.sum())

    def weights(self) -> dict[str, float]:
        return {n: float(v) for n, v in zip(self.task_names, self.w.detach(), strict=True)}
