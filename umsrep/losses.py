"""Task losses with missing-label masking.

Every loss is ``loss_fn(output, target, valid) -> scalar`` where ``valid: bool [B]`` marks the
samples that carry a label for the task. Invalid samples contribute nothing (their outputs get
a zero gradient) and the mean runs over valid samples only; with no valid sample the loss is a
zero still connected to the graph (``output.sum() * 0``), so a step on it is a no-op.

- ``mse`` (denoise): output, target ``[B, 1, H, W]`` in the normalized space; per-image mean of
  squared errors, averaged over valid images.
- ``cross_entropy`` (classification): output logits ``[B, C]``, target int64 ``[B]`` with -1 for
  missing (``target < 0`` is treated as invalid even if ``valid`` says otherwise); option
  ``label_smoothing`` (0 by default).
- ``bce_dice`` (segmentation, paper eq. 1): ``w_bce * BCE + w_dice * (1 - soft Dice)`` on logits
  ``[B, 1, H, W]`` and a float mask target ``[B, 1, H, W]`` in {0, 1}; both terms per image
  (BCE the pixel mean, Dice ``1 - (2 sum(t y) + s) / (sum t + sum y + s)`` with ``y`` the
  sigmoid and smoothing ``s``) then averaged over valid images. ``w_bce = w_dice = 0.5`` as in
  the paper; ``s = 1`` keeps the gradient defined on empty masks.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F

from umsrep.registry import Registry

LossFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]

LOSSES: Registry[LossFn] = Registry(
    "loss",
    doc="Loss functions (output, target, valid: bool [B], **options) -> scalar tensor; "
    "samples with valid False contribute nothing.",
)


def _check(output: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    valid = valid.to(device=output.device, dtype=torch.bool).reshape(-1)
    if valid.shape[0] != output.shape[0]:
        raise ValueError(f"valid has {valid.shape[0]} entries for a batch of {output.shape[0]}")
    return valid


def _disconnected_zero(output: torch.Tensor) -> torch.Tensor:
    return output.sum() * 0.0


@LOSSES.register("mse")
def mse(output: torch.Tensor, target: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Mean squared error over valid images (reconstruction vs clean image)."""
    valid = _check(output, valid)
    if not valid.any():
        return _disconnected_zero(output)
    return F.mse_loss(output[valid], target[valid].to(output.dtype))


@LOSSES.register("cross_entropy")
def cross_entropy(
    output: torch.Tensor,
    target: torch.Tensor,
    valid: torch.Tensor,
    *,
    label_smoothing: float = 0.0,
) -> torch.Tensor:
    """Categorical cross-entropy of logits ``[B, C]`` against class indices ``[B]``;
    ``label_smoothing`` ``e`` scores against ``(1 - e)`` on the class and ``e / C`` spread over
    all classes (Szegedy et al. 2016), as ``torch.nn.functional.cross_entropy`` does."""
    valid = _check(output, valid) & (target.reshape(-1).to(output.device) >= 0)
    if not valid.any():
        return _disconnected_zero(output)
    return F.cross_entropy(output[valid], target[valid].long(), label_smoothing=label_smoothing)


def soft_dice_loss(logits: torch.Tensor, target: torch.Tensor, smooth: float = 1.0) -> torch.Tensor:
    """Per-image ``1 - soft Dice`` of ``sigmoid(logits)`` vs ``target``, shape ``[B]``."""
    probs = torch.sigmoid(logits).flatten(1)
    t = target.flatten(1)
    inter = (probs * t).sum(1)
    return 1.0 - (2.0 * inter + smooth) / (t.sum(1) + probs.sum(1) + smooth)


@LOSSES.register("bce_dice")
def bce_dice(
    output: torch.Tensor,
    target: torch.Tensor,
    valid: torch.Tensor,
    *,
    w_bce: float = 0.5,
    w_dice: float = 0.5,
    smooth: float = 1.0,
) -> torch.Tensor:
    """Paper eq. 1 on logits ``[B, 1, H, W]`` and masks ``[B, 1, H, W]`` in {0, 1}."""
    valid = _check(output, valid)
    if not valid.any():
        return _disconnected_zero(output)
    logits, t = output[valid], target[valid].to(output.dtype)
    bce = F.binary_cross_entropy_with_logits(logits, t, reduction="none").flatten(1).mean(1)
    return (w_bce * bce + w_dice * soft_dice_loss(logits, t, smooth)).mean()


def build_loss(name: str, **options: Any) -> LossFn:
    """The registered loss ``name`` with its options bound (e.g. ``w_bce=0.3``)."""
    fn = LOSSES.get(name)
    return functools.partial(fn, **options) if options else fn
