"""Grad-CAM (Selvaraju et al. 2017) for any classification head of a ``MultiTaskModel``.

The user passes the multi-task model and a task name; no wrapper is needed. By default the
target layer is the last ``nn.Conv2d`` of the backbone that runs during the forward pass, i.e.
the deepest feature map the classification head pools (decoder convolutions that
``forward_features`` never calls are skipped).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

if TYPE_CHECKING:  # annotations only: umsrep.bundle imports umsrep.derive without the models
    from umsrep.models.multitask import MultiTaskModel


class _ActivationRecorder:
    """Forward hooks that keep, in call order, the outputs of the watched modules."""

    def __init__(self, modules: list[nn.Module]) -> None:
        self.outputs: list[tuple[nn.Module, torch.Tensor]] = []
        self._handles = [m.register_forward_hook(self._hook) for m in modules]

    def _hook(self, module: nn.Module, _inputs: tuple, output: object) -> None:
        if isinstance(output, torch.Tensor):
            self.outputs.append((module, output))

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()


def _forward_recording(
    model: MultiTaskModel, task: str, x: torch.Tensor, layer: nn.Module | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Run one head; return its logits ``[B, C]`` and the target layer's output ``[B, K, h, w]``."""
    watched = (
        [layer]
        if layer is not None
        else [m for m in model.backbone.modules() if isinstance(m, nn.Conv2d)]
    )
    recorder = _ActivationRecorder(watched)
    try:
        logits = model.forward_task(x, task)
    finally:
        recorder.remove()
    if not recorder.outputs:
        where = "the given layer" if layer is not None else "no Conv2d of the backbone"
        raise ValueError(
            f"grad_cam: {where} ran during the forward pass of task {task!r}; pass a layer "
            "that the backbone or the head calls"
        )
    activation = recorder.outputs[-1][1]
    if activation.ndim != 4:
        raise ValueError(
            f"grad_cam: the target layer outputs {tuple(activation.shape)}; a [B, K, h, w] "
            "feature map is needed"
        )
    return logits, activation


def _module_states(model: nn.Module) -> list[tuple[nn.Module, bool]]:
    return [(m, m.training) for m in model.modules()]


def grad_cam(
    model: MultiTaskModel,
    task: str,
    x: torch.Tensor,
    target_class: int | None = None,
    layer: nn.Module | None = None,
) -> torch.Tensor:
    """Grad-CAM heatmaps of one classification head.

    Args:
        model: a ``MultiTaskModel``; ``model.heads[task]`` must return logits ``[B, C]``.
        task: the classification task to explain.
        x: ``[B, 1, H, W]`` grayscale input, normalized as for training.
        target_class: class whose logit is explained; ``None`` explains each image's
            predicted (arg-max) class.
        layer: module whose output feature map is weighted; default the backbone's last
            ``Conv2d`` that runs.

    Returns:
        ``[B, 1, H, W]`` float heatmaps in [0, 1], each divided by its own maximum (an all-zero
        map stays zero), upsampled bilinearly to the input size, detached, on ``x.device``.

    The model is run in eval mode (no dropout, batch-norm running statistics untouched); each
    module's train/eval mode and every ``requires_grad`` flag are left as they were, and no
    parameter ``.grad`` is written (gradients are taken with ``torch.autograd.grad``).
    """
    if task not in model.heads:
        raise KeyError(f"grad_cam: unknown task {task!r}; model has {model.task_names}")
    if x.ndim != 4 or x.shape[1] != 1:
        raise ValueError(f"grad_cam: x must be [B, 1, H, W] grayscale, got {tuple(x.shape)}")
    states = _module_states(model)
    model.eval()
    try:
        with torch.enable_grad():
            # Gradients flow from the input so a fully frozen model still yields them.
            inputs = x.detach().clone().requires_grad_(True)
            logits, activation = _forward_recording(model, task, inputs, layer)
            if logits.ndim != 2:
                raise ValueError(
                    f"grad_cam: task {task!r} outputs {tuple(logits.shape)}; Grad-CAM needs a "
                    "classification head returning logits [B, C]"
                )
            classes = _target_classes(logits, target_class)
            score = logits.gather(1, classes[:, None]).sum()
            (grads,) = torch.autograd.grad(score, activation)
        weights = grads.mean(dim=(2, 3), keepdim=True)
        cam = F.relu((weights * activation.detach()).sum(dim=1, keepdim=True))
        cam = _to_input_size(model, task, x, cam)
        peak = cam.amax(dim=(2, 3), keepdim=True)
        return torch.where(peak > 0, cam / peak.clamp_min(1e-12), torch.zeros_like(cam))
    finally:
        for module, training in states:
            module.training = training


def _to_input_size(model: MultiTaskModel, task: str, x: torch.Tensor,
                   cam: torch.Tensor) -> torch.Tensor:
    """``cam`` upsampled to ``x``'s size; a cropping head's (``crop=True``) put back where its
    lung box was cut from ``x``."""
    size = tuple(x.shape[-2:])
    if not getattr(model.heads[task], "crop", False):
        return F.interpolate(cam, size=size, mode="bilinear", align_corners=False)
    from umsrep.models.heads import classification as cls  # lazy: bundles run without models

    with torch.no_grad():
        weights = torch.sigmoid(model.forward_task(x, model.guide_of(task)).float())
    return cls.uncrop(cam, cls.crop_boxes(weights), size)


def _target_classes(logits: torch.Tensor, target_class: int | None) -> torch.Tensor:
    if target_class is None:
        return logits.argmax(dim=1)
    if not 0 <= target_class < logits.shape[1]:
        raise ValueError(
            f"grad_cam: target_class={target_class} but the head has {logits.shape[1]} classes"
        )
    return torch.full((logits.shape[0],), target_class, dtype=torch.long, device=logits.device)


def overlay_heatmap(image_uint8: np.ndarray, heat: np.ndarray, alpha: float = 0.4) -> np.ndarray:
    """Blend a [0, 1] heatmap, colored with the JET colormap, over a grayscale image.

    Args:
        image_uint8: ``[H, W]`` uint8 image on the 0-255 scale.
        heat: ``[h, w]`` floats in [0, 1] (e.g. ``grad_cam(...)[i, 0].numpy()``); resized
            bilinearly to ``[H, W]`` when the sizes differ.
        alpha: weight of the heatmap in the blend, in [0, 1].

    Returns:
        ``[H, W, 3]`` uint8 **RGB** image (use ``cv2.cvtColor(out, cv2.COLOR_RGB2BGR)`` before
        ``cv2.imwrite``).
    """
    image = np.asarray(image_uint8)
    heat = np.asarray(heat, dtype=np.float32)
    if image.ndim != 2 or image.dtype != np.uint8:
        raise ValueError(
            f"overlay_heatmap: image must be [H, W] uint8, got {image.shape} {image.dtype}"
        )
    if heat.ndim != 2:
        raise ValueError(f"overlay_heatmap: heat must be [H, W], got {heat.shape}")
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"overlay_heatmap: alpha={alpha} must lie in [0, 1]")
    if heat.size and (np.nanmin(heat) < 0.0 or np.nanmax(heat) > 1.0):
        raise ValueError("overlay_heatmap: heat must lie in [0, 1]; normalize it first")
    if heat.shape != image.shape:
        heat = cv2.resize(heat, (image.shape[1], image.shape[0]), interpolation=cv2.INTER_LINEAR)
    colored = cv2.applyColorMap(np.round(heat * 255).astype(np.uint8), cv2.COLORMAP_JET)
    colored = cv2.cvtColor(colored, cv2.COLOR_BGR2RGB)
    gray = cv2.cvtColor(image, cv2.COLOR_GRAY2RGB)
    return cv2.addWeighted(gray, 1.0 - alpha, colored, alpha, 0.0)
