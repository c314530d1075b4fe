"""PNG galleries of a trained stage on a few test images, for the report (issue 5).

``write_samples`` draws, per task of the stage, ``n`` test images:

- denoise: a noisy | denoised | clean triptych (Gaussian noise, sigma 30 on the 0-255 scale);
- segmentation: the image with the predicted mask's contour in red and the ground truth's in green;
- classification: a Grad-CAM overlay, true and predicted class in the file name.

Files go to ``<run>/samples/<stage id>/``; their rows (``umsrep.schema.SAMPLES_COLUMNS``: kind,
fold, strategy, task, sample_id, path relative to the run folder) go to the stage folder's
``samples.parquet``. ``compose_samples`` merges every stage's table into
``<run>/samples/index.parquet``, which ``analysis.load.load_samples`` reads.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pandas as pd
import torch

from umsrep.derive import grad_cam, overlay_heatmap
from umsrep.noise import add_noise
from umsrep.predict import gradcam_layer
from umsrep.runner.context import eval_splits, labelled, make_dataset
from umsrep.runner.store import atomic_write_parquet
from umsrep.schema import SAMPLES_COLUMNS
from umsrep.tasks import Task

log = logging.getLogger(__name__)

NOISE_KIND, NOISE_SIGMA = "gaussian", 30.0
MIN_DISPLAY = 128  # galleries of 32-64 px images are upscaled to this so contours stay visible
GALLERY_KIND = {"denoise": "denoise", "segmentation": "segmentation", "classification": "gradcam"}
RED, GREEN = (0, 0, 255), (0, 255, 0)  # BGR, as cv2.imwrite expects


def _safe(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", str(text)).strip("-") or "x"


def _display_size(size: int) -> int:
    return max(size, MIN_DISPLAY)


def _to_uint8(x01: torch.Tensor, size: int) -> np.ndarray:
    """``[S, S]`` tensor on the 0-1 scale -> ``[D, D]`` uint8 (D = display size)."""
    img = np.round(np.clip(x01.detach().float().cpu().numpy(), 0.0, 1.0) * 255).astype(np.uint8)
    return cv2.resize(img, (_display_size(size),) * 2, interpolation=cv2.INTER_CUBIC)


def _upscale_mask(mask: np.ndarray, size: int) -> np.ndarray:
    return cv2.resize(
        mask.astype(np.uint8), (_display_size(size),) * 2, interpolation=cv2.INTER_NEAREST
    )


def denoise_triptych(model, task: Task, batch: dict[str, Any], seed: int) -> list[np.ndarray]:
    """``[D, 3D + 4]`` uint8 noisy | denoised | clean images, one per batch item."""
    x, mean = batch["image"], batch["image_mean"]
    gen = torch.Generator(device=x.device).manual_seed(seed)
    noisy = add_noise(x, mean, NOISE_KIND, NOISE_SIGMA, generator=gen)
    with torch.no_grad():
        out = model.forward_task(noisy, task.name)
    size, m = x.shape[-1], mean.view(-1, 1, 1, 1)
    pics = []
    for i in range(x.shape[0]):
        parts = [_to_uint8((t + m)[i, 0], size) for t in (noisy, out, x)]
        gap = np.full((parts[0].shape[0], 2), 255, np.uint8)
        pics.append(np.hstack([parts[0], gap, parts[1], gap, parts[2]]))
    return pics


def segmentation_overlays(model, task: Task, batch: dict[str, Any]) -> list[np.ndarray]:
    """``[D, D, 3]`` BGR images: predicted contour red, ground-truth contour green."""
    x, mean = batch["image"], batch["image_mean"].view(-1, 1, 1, 1)
    with torch.no_grad():
        pred = torch.sigmoid(model.forward_task(x, task.name).float()) > 0.5
    size, pics = x.shape[-1], []
    for i in range(x.shape[0]):
        img = cv2.cvtColor(_to_uint8((x + mean)[i, 0], size), cv2.COLOR_GRAY2BGR)
        for mask, color in ((task.target(batch)[0][i, 0] > 0.5, GREEN), (pred[i, 0], RED)):
            up = _upscale_mask(mask.cpu().numpy(), size)
            contours, _ = cv2.findContours(up, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
            cv2.drawContours(img, contours, -1, color, 1)
        pics.append(img)
    return pics


def gradcam_overlays(
    model, task: Task, batch: dict[str, Any]
) -> tuple[list[np.ndarray], list[int]]:
    """``([D, D, 3]`` BGR Grad-CAM overlays, predicted class indices)``."""
    x, mean = batch["image"], batch["image_mean"].view(-1, 1, 1, 1)
    with torch.no_grad():
        pred = model.forward_task(x, task.name).argmax(dim=1).cpu().tolist()
    heat = grad_cam(model, task.name, x, layer=gradcam_layer(model, task.name))
    size, pics = x.shape[-1], []
    for i in range(x.shape[0]):
        gray = _to_uint8((x + mean)[i, 0], size)
        rgb = overlay_heatmap(gray, heat[i, 0].clamp(0, 1).cpu().numpy())
        pics.append(cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    return pics, pred


def _first_batch(ctx, positions: np.ndarray, task: Task, n: int, device) -> dict[str, Any] | None:
    pos = labelled(ctx, np.asarray(positions), task)[:n]
    if len(pos) == 0:
        return None
    ds = make_dataset(ctx, pos, [task], train=False)
    batch = torch.utils.data.default_collate([ds[i] for i in range(len(ds))])
    extra = [task.column] if task.kind == "segmentation" else []  # mask_<name> targets
    for key in ("image", "image_mean", "mask", *extra):
        batch[key] = batch[key].to(device)
    return batch


def write_samples(
    run_dir: Path,
    stage_id: str,
    fold: int,
    strategy: str,
    model,
    tasks: list[Task],
    positions: np.ndarray,
    ctx,
    n: int = 4,
) -> pd.DataFrame:
    """Write the galleries of one stage; returns (and stores in the stage's ``samples.parquet``)
    their rows. ``positions`` are the stage's test positions in the run's cache; ``model`` is the
    trained (unwrapped) ``MultiTaskModel``. Its train/eval mode is restored afterwards."""
    run_dir = Path(run_dir)
    folder = run_dir / "samples" / _safe(stage_id)
    folder.mkdir(parents=True, exist_ok=True)
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    rows = []
    try:
        for task in tasks:
            batch = _first_batch(ctx, positions, task, n, device)
            if batch is None:
                log.info("%s: no test image with a target for %r; no gallery", stage_id, task.name)
                continue
            ids = [_safe(s) for s in batch["sample_id"]]
            if task.kind == "denoise":
                pics = denoise_triptych(model, task, batch, seed=fold)
                names = [f"{task.name}_{s}_{NOISE_KIND}{int(NOISE_SIGMA)}.png" for s in ids]
            elif task.kind == "segmentation":
                pics = segmentation_overlays(model, task, batch)
                names = [f"{task.name}_{s}_overlay.png" for s in ids]
            else:
                pics, pred = gradcam_overlays(model, task, batch)
                truth = batch["labels"][task.name].tolist()
                cls = list(task.classes or [])
                names = [
                    f"{task.name}_{s}_true-{_safe(cls[t])}_pred-{_safe(cls[p])}.png"
                    for s, t, p in zip(ids, truth, pred, strict=True)
                ]
            for sid, name, pic in zip(batch["sample_id"], names, pics, strict=True):
                if not cv2.imwrite(str(folder / name), pic):
                    raise OSError(f"{folder / name}: OpenCV could not write the PNG")
                rows.append(
                    {
                        "kind": GALLERY_KIND[task.kind],
                        "fold": fold,
                        "strategy": strategy,
                        "task": task.name,
                        "sample_id": str(sid),
                        "path": (folder / name).relative_to(run_dir).as_posix(),
                    }
                )
    finally:
        model.train(was_training)
    return _append_stage_table(run_dir / "stages" / stage_id / "samples.parquet", rows)


def _append_stage_table(path: Path, rows: list[dict[str, Any]]) -> pd.DataFrame:
    df = pd.DataFrame(rows, columns=list(SAMPLES_COLUMNS))
    if path.exists():
        df = pd.concat([pd.read_parquet(path), df], ignore_index=True)
    df = df.drop_duplicates(subset="path", keep="last").astype(SAMPLES_COLUMNS)
    atomic_write_parquet(df.reset_index(drop=True), path)
    return df


def compose_samples(run_dir: Path) -> int:
    """Merge ``<run>/stages/*/samples.parquet`` into ``<run>/samples/index.parquet``; rows
    whose file is gone are dropped. Returns the number of rows written (0: no index written)."""
    run_dir = Path(run_dir)
    frames = [pd.read_parquet(p) for p in sorted(run_dir.glob("stages/*/samples.parquet"))]
    frames = [f for f in frames if len(f)]
    if not frames:
        return 0
    df = pd.concat(frames, ignore_index=True).reindex(columns=list(SAMPLES_COLUMNS))
    df = df[[(run_dir / p).is_file() for p in df["path"]]]
    atomic_write_parquet(
        df.astype(SAMPLES_COLUMNS).reset_index(drop=True), run_dir / "samples" / "index.parquet"
    )
    return len(df)


def write_stage_samples(
    ctx, stage, model, tasks: list[Task], strategy: str, out_dir: Path | None = None
) -> None:
    """``write_samples`` on the stage's test images, called by ``umsrep.runner.kinds`` on rank 0
    after the model is saved. Skipped for Tune trials (``out_dir`` outside ``<run>/stages``);
    a failure is logged, never fails the stage (galleries are optional)."""
    stage_dir = Path(ctx.run_dir) / "stages" / stage.id
    if out_dir is not None and Path(out_dir).resolve() != stage_dir.resolve():
        return
    try:
        write_samples(
            ctx.run_dir,
            stage.id,
            stage.fold,
            strategy,
            model,
            tasks,
            eval_splits(ctx, stage)["test"],
            ctx,
        )
    except Exception:  # noqa: BLE001 - a gallery must never cost a trained stage
        log.warning("%s: could not write sample galleries", stage.id, exc_info=True)
