"""Segmentation scored at each image's original size, not at the cache size.

The cache stores every image resized to ``S x S`` (a 512x421 Montgomery mask becomes 128x128),
so the Dice a head gets on cached masks says little about what a user sees when the mask is
mapped back onto the original radiograph. Here each predicted probability map ``[S, S]`` (0-1)
is mapped back to the original mask's ``H x W`` (OpenCV bilinear, undoing the experiment's
``data.fit``: ``umsrep.data.geometry.from_square``), thresholded (0.5, or the threshold the
stage chose on its held-out fold: ``umsrep.runner.threshold``) and compared with the
original mask read from ``mask_path`` (``mask_<name>_path`` for a task on ``mask_<name>``;
``umsrep.data.io.load_mask``), after the optional
clean-up (``umsrep.derive.postprocess.clean_mask``). With ``tta`` (fits such as
``["pad", "stretch"]``) the original image (``image_path``) is read instead and the maps of
every fit are averaged at the original size (``umsrep.derive.tta.segment_original``).

Metrics emitted for a segmentation task (split ``test``): ``dice_orig`` (mean over images),
``dice_orig_min`` (the worst image) and ``iou_orig`` (mean over images).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader

from umsrep.data import mask_path_column
from umsrep.data.contrast import apply_contrast
from umsrep.data.geometry import from_square
from umsrep.data.io import ImageDecodeError, load_image, load_mask
from umsrep.derive.postprocess import clean_mask
from umsrep.derive.tta import segment_original
from umsrep.metrics.segmentation import compute_dice_per_image, compute_iou_per_image
from umsrep.strategies._step import move_batch
from umsrep.tasks import Task

log = logging.getLogger(__name__)

THRESHOLD = 0.5
SCORE_COLUMNS = ("sample_id", "dice", "iou", "height", "width")


def resize_probabilities(prob: np.ndarray, shape: tuple[int, int],
                         fit: str = "stretch") -> np.ndarray:
    """``prob`` [S, S] probabilities 0-1 -> float32 [H, W] (bilinear, undoing ``fit``)."""
    return from_square(np.asarray(prob, dtype=np.float32), shape, fit)


def score_at_original_size(prob: np.ndarray, mask: np.ndarray, fit: str = "stretch",
                           clean: dict[str, Any] | None = None,
                           image_shape: tuple[int, int] | None = None,
                           threshold: float = THRESHOLD) -> tuple[float, float]:
    """(Dice, IoU) of ``prob`` [S, S] (0-1) mapped back to ``mask`` [H, W] (0/1), cut at
    ``threshold`` (0.5, or the one chosen on held-out folds: ``umsrep.runner.threshold``), then
    ``clean_mask(pred, **clean)`` when ``clean`` is given. ``image_shape``: the original
    image's size when the mask file has another one (the fit is undone at the image's size,
    then the map is resized to the mask's)."""
    if image_shape is not None and tuple(image_shape) != mask.shape[:2]:
        prob = resize_probabilities(prob, image_shape, fit)
        fit = "stretch"
    pred = resize_probabilities(prob, mask.shape, fit) > threshold
    if clean:
        pred = clean_mask(pred, **clean)
    true = np.asarray(mask).astype(bool)
    return (float(compute_dice_per_image(true, pred)[0]),
            float(compute_iou_per_image(true, pred)[0]))


def score_original_size(probs: Mapping[str, np.ndarray],
                        mask_paths: Mapping[str, str | Path],
                        fit: str = "stretch", clean: dict[str, Any] | None = None,
                        image_shapes: Mapping[str, tuple[int, int]] | None = None,
                        threshold: float = THRESHOLD) -> pd.DataFrame:
    """Per image: ``sample_id, dice, iou, height, width`` at the original mask size.

    ``probs`` maps a sample id to its probability map [S, S] on 0-1; ``mask_paths`` maps it to
    its original mask file. A sample without a mask path is left out; a mask that cannot be
    read is logged with its path and left out (it never fails the whole evaluation).
    """
    rows = []
    for sid, prob in probs.items():
        path = mask_paths.get(sid)
        if path is None or pd.isna(path):
            continue
        try:
            mask = load_mask(path)
        except (ImageDecodeError, OSError) as err:
            log.warning("original-size score: %s skipped: %s", path, err)
            continue
        dice, iou = score_at_original_size(prob, mask, fit, clean,
                                           (image_shapes or {}).get(sid), threshold)
        rows.append((str(sid), dice, iou, *mask.shape))
    return pd.DataFrame(rows, columns=list(SCORE_COLUMNS))


def summarize(task: str, scores: pd.DataFrame) -> list[dict[str, Any]]:
    """Metric rows (``task, metric, value, noise``): dice_orig, dice_orig_min, iou_orig."""
    if scores.empty:
        return []
    values = {"dice_orig": scores["dice"].mean(), "dice_orig_min": scores["dice"].min(),
              "iou_orig": scores["iou"].mean()}
    return [{"task": task, "metric": k, "value": float(v), "noise": ""} for k, v in values.items()]


@torch.no_grad()
def predict_probabilities(model, task: Task, loader: DataLoader,
                          device: str | torch.device = "cpu") -> dict[str, np.ndarray]:
    """``{sample_id: sigmoid probabilities [S, S] float32}`` for the samples with a mask."""
    model.eval()
    out: dict[str, np.ndarray] = {}
    for batch in loader:
        batch = move_batch(batch, device)
        logits = model(batch["image"], [task.name])[task.name].float()
        prob = torch.sigmoid(logits[:, 0]).cpu().numpy()
        for sid, has, p in zip(batch["sample_id"], task.target(batch)[1].cpu().numpy(), prob,
                               strict=True):
            if has:
                out[str(sid)] = p
    return out


def tta_probabilities(model, task: Task, sample_ids: list[str], index: pd.DataFrame,
                      size: int, fits: list[str], device: str | torch.device = "cpu",
                      contrast: str = "none") -> dict[str, np.ndarray]:
    """``{sample_id: probabilities [H, W]}`` at the original size, averaged over ``fits``;
    each original normalized by ``contrast`` first, as the cache did (umsrep/data/contrast.py)."""

    paths = dict(zip(index["sample_id"].astype(str), index["image_path"], strict=True))
    out = {}
    for sid in sample_ids:
        try:
            pixels = apply_contrast(load_image(paths[sid]), contrast)
        except (ImageDecodeError, OSError) as err:
            log.warning("original-size score: %s skipped: %s", paths[sid], err)
            continue
        out[sid] = segment_original(model, task.name, pixels, size, fits, device)
    return out


def evaluate_original_size(model, task: Task, loader: DataLoader, index: pd.DataFrame,
                           device: str | torch.device = "cpu", fit: str = "stretch",
                           tta: list[str] | None = None, clean: dict[str, Any] | None = None,
                           threshold: float = THRESHOLD, contrast: str = "none"
                           ) -> tuple[list[dict[str, Any]], pd.DataFrame]:
    """Metric rows and per-image scores of a segmentation ``task`` at the original size.

    ``index`` is the cache index (``sample_id``, ``mask_path``, ``image_path``) of the loader's
    samples; ``tta`` averages those fits of the original image (else ``fit`` on the cache);
    ``clean`` (``min_fraction``, ``fill_holes``, ``keep_largest``) post-processes each
    thresholded mask.
    """
    probs = predict_probabilities(model, task, loader, device)
    if tta:
        size = next(iter(probs.values())).shape[-1] if probs else 0
        probs = tta_probabilities(model, task, list(probs), index, size, list(tta), device,
                                  contrast)
        fit = "stretch"  # already at the original size: from_square is then a no-op resize
    paths = dict(zip(index["sample_id"].astype(str), index[mask_path_column(task.column)],
                     strict=True))
    shapes = None
    if {"height", "width"} <= set(index.columns) and not tta:  # TTA maps are at image size
        hw = index[["height", "width"]].apply(pd.to_numeric, errors="coerce")
        shapes = {str(s): (int(h), int(w)) for s, h, w in zip(
            index["sample_id"], hw["height"], hw["width"], strict=True)
            if pd.notna(h) and pd.notna(w)}
    scores = score_original_size(probs, paths, fit, clean, shapes, threshold)
    for row in scores.itertuples(index=False):  # per image with -v; one summary line by default
        log.debug("%s %s at %dx%d: dice %.4f iou %.4f", task.name, row.sample_id, row.height,
                  row.width, row.dice, row.iou)
    if len(scores):
        log.info("%s at the original size: %d images, dice mean %.4f, worst %.4f (%s)",
                 task.name, len(scores), scores["dice"].mean(), scores["dice"].min(),
                 scores.loc[scores["dice"].idxmin(), "sample_id"])
    return summarize(task.name, scores), scores
