"""Per-sample predictions and per-task metrics of a trained multi-task model.

``predict`` returns one row per sample (columns ``sample_id, y_true, y_pred, score, iou``):

- classification: rows for samples with a label; ``score`` is the positive-class probability
  (binary) or the predicted class's probability (multi-class); ``iou`` is NaN.
- segmentation: rows for samples with a mask; ``y_true`` = 1 (the sample has a mask),
  ``y_pred`` = 1 when the per-image IoU of the thresholded (p > 0.5) mask is at least
  ``umsrep.schema.SEGMENTATION_CORRECT_IOU``, i.e. the segmentation counts as correct for the
  McNemar test; ``score`` = Dice, ``iou`` = IoU.
- denoise: every sample; ``score`` = PSNR (dB, 0-1 pixel scale) of the denoised noisy image;
  ``y_true`` and ``y_pred`` are -1 (not applicable).
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader

from umsrep import metrics as M
from umsrep.schema import SEGMENTATION_CORRECT_IOU
from umsrep.strategies._step import make_noisy, move_batch
from umsrep.tasks import Task

logger = logging.getLogger(__name__)


def _to_unit(x: torch.Tensor, mean: torch.Tensor) -> torch.Tensor:
    """Mean-centred image ``[B,1,H,W]`` back to the 0-1 pixel scale (clamped)."""
    return (x.float() + mean.view(-1, 1, 1, 1).float()).clamp(0.0, 1.0)


@torch.no_grad()
def _collect(model, task: Task, loader: DataLoader, device, noise_cfg, generator):
    """Yield (batch, output) per batch; denoise tasks get the noisy image as input."""
    model.eval()
    for batch in loader:
        batch = move_batch(batch, device)
        x = batch["image"]
        if task.kind == "denoise":
            x = make_noisy(batch, noise_cfg, generator)
        yield batch, model(x, [task.name])[task.name].float()


def predict(
    model,
    task: Task,
    loader: DataLoader,
    device: str | torch.device = "cpu",
    noise_cfg: Any = None,
    generator: torch.Generator | None = None,
    correct_iou: float = SEGMENTATION_CORRECT_IOU,
) -> pd.DataFrame:
    """One row per sample for ``task`` (see the module doc for the columns' meaning)."""
    rows: list[pd.DataFrame] = []
    for batch, out in _collect(model, task, loader, device, noise_cfg, generator):
        target, valid = task.target(batch)
        ids = np.asarray(batch["sample_id"], dtype=object)
        keep = valid.cpu().numpy()
        if task.kind == "classification":
            prob = torch.softmax(out, dim=1)
            pred = prob.argmax(dim=1)
            score = prob[:, 1] if task.num_classes == 2 else prob.gather(1, pred[:, None])[:, 0]
            cols = {
                "y_true": target.cpu().numpy(),
                "y_pred": pred.cpu().numpy(),
                "score": score.cpu().numpy(),
                "iou": np.full(len(ids), np.nan),
            }
        elif task.kind == "segmentation":
            true = (target[:, 0] > 0.5).cpu().numpy()
            pred_mask = (torch.sigmoid(out[:, 0]) > 0.5).cpu().numpy()
            iou = M.compute_iou_per_image(true, pred_mask)
            cols = {
                "y_true": np.ones(len(ids), dtype=np.int64),
                "y_pred": (iou >= correct_iou).astype(np.int64),
                "score": M.compute_dice_per_image(true, pred_mask),
                "iou": iou,
            }
        else:
            clean = _to_unit(target, batch["image_mean"]).cpu()
            den = _to_unit(out, batch["image_mean"]).cpu()
            psnr = [M.compute_psnr(clean[i : i + 1], den[i : i + 1]) for i in range(len(ids))]
            cols = {
                "y_true": np.full(len(ids), -1),
                "y_pred": np.full(len(ids), -1),
                "score": np.asarray(psnr),
                "iou": np.full(len(ids), np.nan),
            }
        frame = pd.DataFrame({"sample_id": ids, **cols})
        rows.append(frame[keep])
    if not rows:
        return pd.DataFrame(columns=["sample_id", "y_true", "y_pred", "score", "iou"])
    df = pd.concat(rows, ignore_index=True)
    return df.astype(
        {
            "sample_id": "string",
            "y_true": "int64",
            "y_pred": "int64",
            "score": "float64",
            "iou": "float64",
        }
    )


def noise_levels(cfg: Any) -> list[tuple[str, Any]]:
    """``[(label, single-level config)]`` for each kind x sigma of a NoiseConfig.

    Labels follow the metrics table: ``"gaussian-20"``, ``"poisson-30"``; with masked blocks
    (``cfg.mask``) ``"gaussian-20+mask0.3"``, every level being scored with them.
    """
    masked = f"+mask{cfg.mask:g}" if cfg.mask else ""
    return [
        (f"{kind}-{sigma:g}{masked}", dataclasses.replace(cfg, kinds=(kind,), sigmas=(sigma,)))
        for kind in cfg.kinds
        for sigma in cfg.sigmas
    ]


def _denoise_metrics(model, task: Task, loader, device, noise_cfg, seed: int) -> list[dict]:
    """PSNR, SSIM, MS-SSIM (when the images are large enough) per noise level in noise_cfg."""
    rows = []
    for label, level in noise_levels(noise_cfg):
        gen = torch.Generator(device=device).manual_seed(seed)
        clean, den = [], []
        for batch, out in _collect(model, task, loader, device, level, gen):
            clean.append(_to_unit(batch["image"], batch["image_mean"]).cpu())
            den.append(_to_unit(out, batch["image_mean"]).cpu())
        if not clean:
            continue
        c, d = torch.cat(clean), torch.cat(den)
        names = M.metrics_for_kind("denoise", image_size=min(c.shape[-2:]))
        for name in names:
            rows.append(
                {
                    "task": task.name,
                    "metric": name,
                    "value": float(M.METRICS.get(name)(c, d)),
                    "noise": label,
                }
            )
    return rows


def _task_metrics(task: Task, df: pd.DataFrame) -> list[dict]:
    if df.empty:
        logger.info("task %s: no samples with a target; no metrics", task.name)
        return []
    if task.kind == "segmentation":
        values = {"iou": df["iou"].mean(), "dice": df["score"].mean()}
    else:
        y_true, y_pred = df["y_true"].to_numpy(), df["y_pred"].to_numpy()
        values = {  # the task's classes, not those this split happens to show
            "accuracy": M.compute_accuracy(y_true, y_pred),
            "f1": M.compute_f1(y_true, y_pred, num_classes=task.num_classes),
            "mcc": M.compute_mcc(y_true, y_pred, num_classes=task.num_classes),
        }
        if task.num_classes == 2 and df["y_true"].nunique() == 2:
            values["auc"] = M.compute_auc(df["y_true"].to_numpy(), df["score"].to_numpy())
        else:
            logger.info(
                "task %s: auc left out (%s)",
                task.name,
                "one class only" if task.num_classes == 2 else "multi-class",
            )
    return [
        {"task": task.name, "metric": k, "value": float(v), "noise": ""} for k, v in values.items()
    ]


def _pixel_accuracy(model, task: Task, loader, device) -> list[dict]:
    trues, preds = [], []
    for batch, out in _collect(model, task, loader, device, None, None):
        target, keep = task.target(batch)
        trues.append((target[keep, 0] > 0.5).cpu())
        preds.append((torch.sigmoid(out[keep, 0]) > 0.5).cpu())
    t, p = torch.cat(trues), torch.cat(preds)
    if len(t) == 0:
        return []
    value = M.compute_pixel_accuracy(t.numpy(), p.numpy())
    return [{"task": task.name, "metric": "pixel_accuracy", "value": float(value), "noise": ""}]


def evaluate(
    model,
    tasks: Sequence[Task],
    loaders: Mapping[str, DataLoader],
    noise_cfg: Any,
    device: str | torch.device = "cpu",
    seed: int = 0,
    correct_iou: float = SEGMENTATION_CORRECT_IOU,
) -> tuple[list[dict[str, Any]], pd.DataFrame]:
    """Metrics (rows of task, metric, value, noise) and per-sample predictions of every task.

    Denoise tasks are scored per noise level (each kind x sigma of ``noise_cfg``); MS-SSIM is skipped, with a logged reason, on images
    below its minimum size. The predictions frame adds a ``task`` column to ``predict``'s.
    """
    metrics: list[dict[str, Any]] = []
    frames = []
    for task in tasks:
        loader = loaders[task.name]
        gen = torch.Generator(device=device).manual_seed(seed)
        df = predict(model, task, loader, device, noise_cfg, gen, correct_iou)
        frames.append(df.assign(task=task.name))
        if task.kind == "denoise":
            metrics += _denoise_metrics(model, task, loader, device, noise_cfg, seed)
        else:
            metrics += _task_metrics(task, df)
        if task.kind == "segmentation":
            metrics += _pixel_accuracy(model, task, loader, device)
    preds = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
    return metrics, preds
