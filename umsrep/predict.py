"""``umsrep predict``: apply a trained model folder to new images.

A model folder (a stage's ``checkpoint/`` or a backbone store's ``checkpoint/``) holds
``model.pt`` (a ``MultiTaskModel`` state dict; a ``DenoisedInput`` for baselines fed by a
separate denoiser) and ``model.json`` (``umsrep.runner.execute.model_meta``: image_size,
backbone, baseline_arch, denoised_input, tasks, rules).

Each image is loaded with ``umsrep.data.io.load_image`` and normalized as in training
(``umsrep.data.dataset``): made square by the experiment's ``fit`` (stretch, or pad to a
square first: ``umsrep.data.geometry``) with OpenCV INTER_CUBIC to ``image_size``, divided by 255
(65535 for 16-bit), minus its own mean. Outputs, per image (``<stem>`` = file name without suffix):

- classification: predicted class name and its probability (CSV columns ``<task>``,
  ``<task>_prob``) and a Grad-CAM overlay ``<stem>_<task>_gradcam.png`` at the original size;
- segmentation: a binary (0/255) mask ``<stem>_<task>_mask.png`` at the original size (the
  probability map is mapped back with INTER_LINEAR, undoing the fit, and thresholded at 0.5;
  with ``evaluation.tta`` the maps of several fits are averaged first, ``umsrep.derive.tta``);
- denoise: ``<stem>_denoised.png`` (the reconstruction on the 0-255 scale, original size);
- the experiment's recommendation rules, one CSV column per rule.

``OUT/predictions.csv`` has one row per image; an unreadable image gets an ``error`` message and
empty predictions instead of stopping the run.
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pandas as pd
import torch
from torch import nn

from umsrep.data.geometry import from_square
from umsrep.derive.postprocess import clean_mask
from umsrep.derive.tta import normalize_image, segment_original
from umsrep.models.multitask import MultiTaskModel

log = logging.getLogger(__name__)

MASK_THRESHOLD = 0.5


# ----------------------------------------------------------------------------- loading
def _num_classes(task: dict[str, Any]) -> int | None:
    if task["kind"] != "classification":
        return None
    if not task.get("classes"):
        raise ValueError(f"model.json: classification task {task['name']!r} lists no classes")
    return len(task["classes"])


def build_model_from_meta(meta: dict[str, Any]) -> MultiTaskModel:
    """An untrained model with the architecture ``model.json`` describes."""
    from umsrep.models import build_backbone, build_head, build_separate_model

    bb_cfg = dict(meta["backbone"])
    name, preset = bb_cfg.pop("name"), bb_cfg.pop("preset", "default")
    width = bb_cfg.pop("width", None)
    tasks = meta["tasks"]
    if meta.get("baseline_arch") == "paper":
        task = tasks[0]
        model = build_separate_model(
            task["kind"], arch="paper", preset=preset, width=width, num_classes=_num_classes(task)
        )
        model.heads[task["name"]] = model.heads.pop(next(iter(model.heads)))
    else:
        backbone = build_backbone(name, preset=preset, width=width, **bb_cfg)
        heads = {
            t["name"]: build_head(
                t["head"],
                backbone,
                num_classes=_num_classes(t),
                preset=preset,
                width=width,
                **(t.get("head_kwargs") or {}),
            )
            for t in tasks
        }
        model = MultiTaskModel(backbone, heads)
    if meta.get("denoised_input"):
        from umsrep.strategies import DenoisedInput

        den_bb = build_backbone(name, preset=preset, width=width, **bb_cfg)
        denoiser = MultiTaskModel(
            den_bb, {"denoise": build_head("denoise", den_bb, preset=preset, width=width)}
        )
        model = DenoisedInput(denoiser, model)
    return model


def load_model_dir(path: str | Path, device: str = "cpu") -> tuple[MultiTaskModel, dict[str, Any]]:
    """Rebuild the model of a model folder and load its weights (``weights_only=True``).

    Returns ``(model in eval mode on device, meta dict from model.json)``.
    """
    path = Path(path)
    meta_path, weights = path / "model.json", path / "model.pt"
    for f in (meta_path, weights):
        if not f.is_file():
            raise FileNotFoundError(
                f"{f}: missing; MODEL_DIR must be a stage's checkpoint folder "
                "(<run>/stages/<stage>/checkpoint) holding model.pt and model.json"
            )
    meta = json.loads(meta_path.read_text())
    model = build_model_from_meta(meta)
    state = torch.load(weights, weights_only=True, map_location="cpu")
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        raise RuntimeError(
            f"{weights}: weights do not fit the model described by {meta_path} ({exc}); "
            "the folder was written by another umsrep version or edited by hand"
        ) from None
    return model.to(device).eval(), meta


# ----------------------------------------------------------------------------- images
def to_uint8(pixels: np.ndarray) -> np.ndarray:
    """A uint8/uint16 image on the 0-255 scale, for overlays."""
    if pixels.dtype == np.uint16:
        return np.round(pixels.astype(np.float32) / 257.0).astype(np.uint8)
    return pixels.astype(np.uint8)


def gradcam_layer(model: MultiTaskModel, task: str) -> nn.Module | None:
    """``None`` (the backbone's last conv) unless the backbone has no conv (the paper baseline
    classifier behind an identity backbone), then the head's last conv."""
    if any(isinstance(m, nn.Conv2d) for m in model.backbone.modules()):
        return None
    convs = [m for m in model.heads[task].modules() if isinstance(m, nn.Conv2d)]
    return convs[-1] if convs else None


def _write_png(path: Path, image: np.ndarray) -> None:
    if not cv2.imwrite(str(path), image):
        raise OSError(f"{path}: OpenCV could not write the PNG; check the folder is writable")


# ----------------------------------------------------------------------------- prediction
def predict_one(
    model: MultiTaskModel, meta: dict[str, Any], pixels: np.ndarray, stem: str, out_dir: Path
) -> dict[str, Any]:
    """Predictions of every task for one ``[H, W]`` image; writes its PNGs under ``out_dir``."""
    from umsrep.derive import grad_cam, overlay_heatmap

    device = next(model.parameters()).device
    height, width = pixels.shape
    fit = meta.get("fit", "stretch")  # model folders written before the fit existed: stretch
    x, mean = normalize_image(pixels, int(meta["image_size"]), fit)
    x = x.to(device)
    with torch.no_grad():
        outputs = model(x)
    row: dict[str, Any] = {}
    gray = to_uint8(pixels)
    for task in meta["tasks"]:
        name, kind, out = task["name"], task["kind"], outputs[task["name"]]
        if kind == "classification":
            probs = torch.softmax(out.float(), dim=1)[0].cpu()
            k = int(probs.argmax())
            row[name] = str(task["classes"][k])
            row[f"{name}_prob"] = float(probs[k])
            heat = grad_cam(model, name, x, layer=gradcam_layer(model, name))[0, 0].cpu().numpy()
            heat = from_square(np.clip(heat, 0.0, 1.0).astype(np.float32), (height, width), fit)
            overlay = overlay_heatmap(gray, np.clip(heat, 0.0, 1.0))
            file = f"{stem}_{name}_gradcam.png"
            _write_png(out_dir / file, cv2.cvtColor(overlay, cv2.COLOR_RGB2BGR))
            row[f"{name}_gradcam"] = file
        elif kind == "segmentation":
            if meta.get("tta"):  # average over fits of the original image (derive/tta.py)
                prob = segment_original(model, name, pixels, int(meta["image_size"]),
                                        meta["tta"], device)
            else:
                prob = from_square(torch.sigmoid(out.float())[0, 0].cpu().numpy(),
                                   (height, width), fit)
            mask = prob > MASK_THRESHOLD
            if meta.get("mask_cleanup"):  # islands / holes (umsrep/derive/postprocess.py)
                mask = clean_mask(mask, **meta["mask_cleanup"])
            mask = mask.astype(np.uint8)
            file = f"{stem}_{name}_mask.png"
            _write_png(out_dir / file, mask * 255)
            row[f"{name}_mask"] = file
            row[f"{name}_area"] = float(mask.mean())
        else:
            file = f"{stem}_denoised.png" if name == "denoise" else f"{stem}_{name}_denoised.png"
            _write_png(out_dir / file, _reconstruction(out, mean, width, height, fit))
            row[f"{name}_denoised"] = file
    return row


def _reconstruction(out: torch.Tensor, mean: float, width: int, height: int,
                    fit: str = "stretch") -> np.ndarray:
    """Normalized ``[1, 1, S, S]`` output -> uint8 0-255 image at ``(height, width)``."""
    pixels = np.clip(out[0, 0].float().cpu().numpy() + mean, 0.0, 1.0)
    pixels = np.clip(from_square(pixels, (height, width), fit), 0.0, 1.0)
    return np.round(pixels * 255).astype(np.uint8)


def _unique_stem(path: Path, used: set[str]) -> str:
    stem, i = path.stem, 2
    while stem in used:
        stem, i = f"{path.stem}_{i}", i + 1
    used.add(stem)
    return stem


def apply_model_rules(meta: dict[str, Any], df: pd.DataFrame) -> pd.DataFrame:
    """Rule columns for the rows of ``df`` (one column per rule whose inputs exist).

    A rule that needs a task this model does not predict is skipped with a warning; rows with an
    ``error`` get no rule output.
    """
    from umsrep.derive import apply_rules, load_rules

    rules = load_rules(meta.get("rules") or [])
    tasks = [t["name"] for t in meta["tasks"] if t["kind"] == "classification"]
    known, usable = set(tasks), []
    for rule in rules:
        missing = sorted({c.task for c in rule.when} - known)
        if missing:
            log.warning(
                "rule %r needs %s, which this model does not predict; skipped",
                rule.name,
                ", ".join(missing),
            )
            continue
        usable.append(rule)
        known.add(rule.name)
    if not usable:
        return pd.DataFrame(index=df.index)
    values = df.reindex(columns=tasks).astype(object)
    scores = df.reindex(columns=[f"{t}_prob" for t in tasks]).set_axis(tasks, axis=1)
    out = apply_rules(usable, values.where(values.notna(), None), scores)
    if "error" in df:
        out = out.astype(object).where(df["error"].isna(), None)
    return out


def predict_images(
    model_dir: str | Path, images: list[Path], out_dir: str | Path, *, device: str = "cpu"
) -> pd.DataFrame:
    """Predict every task (and rule) for each image; write PNGs and ``out_dir/predictions.csv``.

    Returns the table written to the CSV: one row per image, columns ``image``, ``error`` (empty
    when the image was read), per classification task ``<task>``, ``<task>_prob``,
    ``<task>_gradcam``; per segmentation task ``<task>_mask`` and ``<task>_area`` (foreground
    fraction); per denoise task ``<task>_denoised``; then one column per rule. File columns are
    names relative to ``out_dir``.
    """
    from umsrep.data.io import ImageDecodeError, load_image

    model, meta = load_model_dir(model_dir, device=device)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rows, used = [], set()
    for image in map(Path, images):
        row: dict[str, Any] = {"image": str(image), "error": None}
        try:
            pixels = load_image(image)
        except (ImageDecodeError, OSError) as exc:
            log.warning("%s", exc)
            row["error"] = str(exc)
            rows.append(row)
            continue
        row.update(predict_one(model, meta, pixels, _unique_stem(image, used), out_dir))
        rows.append(row)
    df = pd.DataFrame(rows)
    df = pd.concat([df, apply_model_rules(meta, df)], axis=1)
    df.to_csv(out_dir / "predictions.csv", index=False)
    return df


# ----------------------------------------------------------------------------- CLI
def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "model_dir", type=Path, help="a trained stage's checkpoint folder (model.pt + model.json)"
    )
    parser.add_argument("images", type=Path, nargs="+", help="PNG, JPEG or DICOM files")
    parser.add_argument(
        "-o",
        "--output",
        type=Path,
        required=True,
        help="folder for predictions.csv, masks and Grad-CAM overlays",
    )
    parser.add_argument(
        "--device",
        default="cuda" if torch.cuda.is_available() else "cpu",
        help="torch device (default: cuda when available, else cpu)",
    )


def run(args: argparse.Namespace) -> int:
    df = predict_images(args.model_dir, args.images, args.output, device=args.device)
    failed = int(df["error"].notna().sum())
    log.info(
        "%d image(s) predicted, %d unreadable; wrote %s",
        len(df) - failed,
        failed,
        Path(args.output) / "predictions.csv",
    )
    return 1 if failed == len(df) else 0
