"""Metrics as pure functions (numpy or torch in, float out) and the registry that names them.

Every registered metric is called ``fn(truth, prediction) -> float``. What the arguments are
depends on the metric's input kind (``metric_input(name)``):

- ``labels``: ``[N]`` true and predicted class indices (accuracy, f1, mcc);
- ``scores``: ``[N]`` true labels and ``[N]`` positive-class or ``[N, C]`` class probabilities (auc);
- ``masks``: ``[N, H, W]`` binary true and predicted masks (iou, dice, pixel_accuracy);
- ``images``: ``[N, 1, H, W]`` clean and denoised images on the 0-1 scale (psnr, ssim, ms_ssim).

Accumulate per-sample predictions and call a metric once on all of them: the McNemar tests need
the predictions, and averaging per-batch metrics is wrong for F1, MCC and AUC.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from umsrep.metrics.classification import (
    compute_accuracy,
    compute_auc,
    compute_f1,
    compute_mcc,
    compute_roc,
)
from umsrep.metrics.image_quality import (
    MS_SSIM_BETAS,
    compute_ms_ssim,
    compute_psnr,
    compute_ssim,
    ms_ssim_min_size,
)
from umsrep.metrics.segmentation import (
    compute_dice,
    compute_dice_per_image,
    compute_iou,
    compute_iou_per_image,
    compute_pixel_accuracy,
)
from umsrep.registry import Registry
from umsrep.tasks import KIND_METRICS as _KIND_METRICS

logger = logging.getLogger(__name__)
_MS_SSIM_SAID: set[int] = set()  # image sizes already logged by metrics_for_kind

MetricFn = Callable[..., float]

METRICS: Registry[MetricFn] = Registry(
    "metric",
    doc="Metric name -> pure function ``fn(truth, prediction) -> float``; "
    "see ``metric_input`` for what truth and prediction are.",
)

_INPUTS: dict[str, str] = {
    "accuracy": "labels",
    "f1": "labels",
    "mcc": "labels",
    "auc": "scores",
    "iou": "masks",
    "dice": "masks",
    "pixel_accuracy": "masks",
    "psnr": "images",
    "ssim": "images",
    "ms_ssim": "images",
}

_FUNCTIONS: dict[str, MetricFn] = {
    "accuracy": compute_accuracy,
    "f1": compute_f1,
    "mcc": compute_mcc,
    "auc": compute_auc,
    "iou": compute_iou,
    "dice": compute_dice,
    "pixel_accuracy": compute_pixel_accuracy,
    "psnr": compute_psnr,
    "ssim": compute_ssim,
    "ms_ssim": compute_ms_ssim,
}
for _name, _fn in _FUNCTIONS.items():
    METRICS.register(_name)(_fn)

#: Task kind -> metric names, in report order (kept in ``umsrep.tasks``: the experiment file
#: check reads it without importing torch).
KIND_METRICS = _KIND_METRICS


def metric_input(name: str) -> str:
    """What a metric takes: ``labels``, ``scores``, ``masks`` or ``images`` (see module doc)."""
    METRICS.get(name)  # raises KeyError naming the known metrics
    return _INPUTS[name]


def metrics_for_kind(kind: str, image_size: int | None = None) -> list[str]:
    """Metric names computed for a task kind (classification, segmentation, denoise).

    With ``image_size`` (px, the smaller side), ``ms_ssim`` is left out when the images are too
    small for its default 5 scales (below 176 px), and an info line says so (once per process
    and size: it is asked every validated epoch).
    """
    if kind not in KIND_METRICS:
        known = ", ".join(sorted(KIND_METRICS))
        raise KeyError(f"unknown task kind {kind!r}; known: {known}")
    names = list(KIND_METRICS[kind])
    min_size = ms_ssim_min_size()
    if "ms_ssim" in names and image_size is not None and image_size < min_size:
        if image_size not in _MS_SSIM_SAID:
            _MS_SSIM_SAID.add(image_size)
            logger.info(
                "ms_ssim left out: %d px images are below its %d px minimum", image_size, min_size
            )
        names.remove("ms_ssim")
    return names


__all__ = [
    "KIND_METRICS",
    "METRICS",
    "MS_SSIM_BETAS",
    "compute_accuracy",
    "compute_auc",
    "compute_roc",
    "compute_dice",
    "compute_dice_per_image",
    "compute_f1",
    "compute_iou",
    "compute_iou_per_image",
    "compute_mcc",
    "compute_ms_ssim",
    "compute_pixel_accuracy",
    "compute_psnr",
    "compute_ssim",
    "metric_input",
    "metrics_for_kind",
    "ms_ssim_min_size",
]
