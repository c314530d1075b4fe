"""Fine-tuning strategies (a registry): independent, alternating, joint.

``STRATEGIES.get(name)(model, tasks, **options)`` returns a ``Strategy`` (see
``umsrep/strategies/_base.py``): ``schedule(loaders) -> iterator of {task: batch}``,
``step(batches) -> {"loss/<task>": float, "weight/<task>": float}``, ``optimizers``,
``state_dict``/``load_state_dict``, ``loss_weights()``.

Options common to all: optimizer, lr, weight_decay, noise_cfg, device, precision, noise_seed,
noisy_inputs. alternating: ratios. joint: weighting (fixed | uncertainty | gradnorm), weights,
alpha, gradnorm_lr, gradnorm_layer.
"""

from __future__ import annotations

from umsrep.registry import Registry
from umsrep.strategies._base import Strategy, build_optimizer
from umsrep.strategies._step import compute_losses, move_batch
from umsrep.strategies.alternating import AlternatingStrategy
from umsrep.strategies.baseline import DenoisedInput
from umsrep.strategies.independent import IndependentStrategy
from umsrep.strategies.joint import JointStrategy
from umsrep.strategies.weighting import WEIGHTINGS

STRATEGIES: Registry[type[Strategy]] = Registry(
    "strategy",
    "Fine-tuning strategies: cls(model: MultiTaskModel, tasks: list[Task], **options) -> Strategy.",
)
for _cls in (IndependentStrategy, AlternatingStrategy, JointStrategy):
    STRATEGIES.register(_cls.name)(_cls)


def build_strategy(name: str, model, tasks, **options) -> Strategy:
    """``STRATEGIES.get(name)(model, tasks, **options)``; an unknown option names itself."""
    cls = STRATEGIES.get(name)
    try:
        return cls(model, tasks, **options)
    except TypeError as exc:
        raise TypeError(f"strategy {name!r}: {exc}") from exc


__all__ = [
    "STRATEGIES",
    "WEIGHTINGS",
    "AlternatingStrategy",
    "DenoisedInput",
    "IndependentStrategy",
    "JointStrategy",
    "Strategy",
    "build_optimizer",
    "build_strategy",
    "compute_losses",
    "move_batch",
]
