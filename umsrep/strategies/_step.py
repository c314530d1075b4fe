"""The training step shared by every strategy: a batch in, ``{"loss/<task>": scalar}`` out."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch

from umsrep.losses import build_loss
from umsrep.models.multitask import MultiTaskModel
from umsrep.noise import sample_noise
from umsrep.tasks import Task


def move_batch(batch: dict[str, Any], device: torch.device | str, channels_last: bool = False):
    """Copy of ``batch`` with its tensors (and its ``labels`` dict) on ``device``."""
    out: dict[str, Any] = {}
    for key, value in batch.items():
        if isinstance(value, torch.Tensor):
            value = value.to(device, non_blocking=True)
            if channels_last and value.dim() == 4:
                value = value.contiguous(memory_format=torch.channels_last)
        elif isinstance(value, dict):
            value = {k: v.to(device, non_blocking=True) for k, v in value.items()}
        out[key] = value
    return out


def make_noisy(batch: dict[str, Any], noise_cfg: Any, generator: torch.Generator | None):
    """The noisy version of ``batch["image"]`` (same shape and scale), by ``umsrep.noise``."""

    return sample_noise(batch["image"], batch["image_mean"], noise_cfg, generator)


def compute_losses(
    model: MultiTaskModel,
    batch: dict[str, Any],
    tasks: Mapping[str, Task],
    task_names: Sequence[str],
    noise_cfg: Any,
    generator: torch.Generator | None,
    *,
    noisy_inputs: bool = False,
) -> dict[str, torch.Tensor]:
    """One forward pass per input kind, and each task's loss: ``{"loss/<task>": scalar}``.

    Denoise tasks see the noisy image (``noise_cfg``) and are scored against the clean one;
    other tasks see the clean image, or the same noisy image when ``noisy_inputs`` is True.
    A sample without a target for a task contributes nothing to that task's loss (the loss
    functions of ``umsrep.losses.LOSSES``, with the task's ``loss_kwargs``, take the ``valid`` mask).
    """

    names = list(task_names)
    need_noise = noisy_inputs or any(tasks[n].kind == "denoise" for n in names)
    noisy = make_noisy(batch, noise_cfg, generator) if need_noise else None
    on_noisy = [n for n in names if tasks[n].kind == "denoise" or noisy_inputs]
    on_clean = [n for n in names if n not in on_noisy]
    outputs: dict[str, torch.Tensor] = {}
    if on_noisy:
        outputs.update(model(noisy, on_noisy))
    if on_clean:
        outputs.update(model(batch["image"], on_clean))
    losses = {}
    for name in names:
        task = tasks[name]
        target, valid = task.target(batch)
        loss_fn = build_loss(task.loss, **task.loss_kwargs)
        losses[f"loss/{name}"] = loss_fn(outputs[name].float(), target, valid)
    return losses
