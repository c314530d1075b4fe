"""Segmentation metrics on binary masks: IoU and Dice per image (then averaged), pixel accuracy.

Masks are ``[N, H, W]`` (or one ``[H, W]`` mask) of bools or 0/1 numbers, numpy or torch;
threshold probabilities or logits before calling. An image whose true and predicted masks are
both empty scores 1.0 for IoU and Dice: the prediction is exactly right, and counting it as 0
(or NaN) would punish or hide correct "no lung / no envelope" answers.
"""

from __future__ import annotations

import numpy as np

from umsrep.metrics._inputs import ArrayLike, to_numpy


def _binary_masks(mask: ArrayLike, name: str) -> np.ndarray:
    array = to_numpy(mask)
    if array.ndim == 2:
        array = array[None]
    if array.ndim != 3:
        raise ValueError(f"{name}: expected masks [N, H, W] or [H, W], got shape {array.shape}")
    if array.dtype != bool:
        if not np.isin(array, (0, 1)).all():
            raise ValueError(
                f"{name}: expected binary masks (0/1 or bool), found other values; "
                "threshold probabilities first, e.g. mask = prob > 0.5"
            )
        array = array.astype(bool)
    return array


def _mask_pair(mask_true: ArrayLike, mask_pred: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    true = _binary_masks(mask_true, "mask_true")
    pred = _binary_masks(mask_pred, "mask_pred")
    if true.shape != pred.shape:
        raise ValueError(
            f"mask_true is {true.shape} but mask_pred is {pred.shape}; resize predictions to "
            "the ground-truth size (nearest neighbour) before scoring"
        )
    if true.shape[0] == 0:
        raise ValueError("mask_true is empty; a metric needs at least one image")
    return true, pred


def _overlap_counts(true: np.ndarray, pred: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per image: |true AND pred| and |true| + |pred|, as float arrays ``[N]``."""
    inter = np.logical_and(true, pred).sum(axis=(1, 2), dtype=np.int64).astype(np.float64)
    total = (true.sum(axis=(1, 2), dtype=np.int64) + pred.sum(axis=(1, 2), dtype=np.int64)).astype(
        np.float64
    )
    return inter, total


def compute_iou_per_image(mask_true: ArrayLike, mask_pred: ArrayLike) -> np.ndarray:
    """Intersection over union per image, ``[N]`` floats in [0, 1]; empty vs empty is 1.0."""
    inter, total = _overlap_counts(*_mask_pair(mask_true, mask_pred))
    union = total - inter
    return np.divide(inter, union, out=np.ones_like(inter), where=union > 0)


def compute_dice_per_image(mask_true: ArrayLike, mask_pred: ArrayLike) -> np.ndarray:
    """Dice coefficient 2|A∩B| / (|A| + |B|) per image, ``[N]``; empty vs empty is 1.0."""
    inter, total = _overlap_counts(*_mask_pair(mask_true, mask_pred))
    return np.divide(2.0 * inter, total, out=np.ones_like(inter), where=total > 0)


def compute_iou(mask_true: ArrayLike, mask_pred: ArrayLike) -> float:
    """Mean over images of the per-image IoU (not one IoU over all pixels pooled)."""
    return float(compute_iou_per_image(mask_true, mask_pred).mean())


def compute_dice(mask_true: ArrayLike, mask_pred: ArrayLike) -> float:
    """Mean over images of the per-image Dice coefficient."""
    return float(compute_dice_per_image(mask_true, mask_pred).mean())


def compute_pixel_accuracy(mask_true: ArrayLike, mask_pred: ArrayLike) -> float:
    """Fraction of pixels, over all images, whose predicted class equals the true class."""
    true, pred = _mask_pair(mask_true, mask_pred)
    return float((true == pred).mean())
