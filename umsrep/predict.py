"""``umsrep predict``: apply a trained model folder to new images.

A model folder (a stage's ``checkpoint/`` or a backbone store's ``checkpoint/``) holds
``model.pt`` (a ``MultiTaskModel`` state dict; a ``DenoisedInput`` for baselines fed by a
separate denoiser) and ``model.json`` (``umsrep.runner.execute.model_meta``: image_size,
backbone, baseline_arch, denoised_input, tasks, rules, threshold).

Several model folders of the same tasks (e.g. the k fold models of one strategy) are applied
as one: the mean of their probabilities (``umsrep.models.ensemble.MeanEnsemble``), cut at the
mean of their thresholds. A fold ensemble's folder (``<run>/ensembles/<template>/``: a
``model.json`` listing its ``members``) loads the same way, with the threshold chosen for the
ensemble on the k held-out folds.

Each image is loaded with ``umsrep.data.io.load_image`` and normalized as in training
(``umsrep.data.dataset``): made square by the experiment's ``fit`` (stretch, or pad to a
square first: ``umsrep.data.geometry``) with OpenCV INTER_CUBIC to ``image_size``, divided by 255
(65535 for 16-bit), minus its own mean. Outputs, per image (``<stem>`` = file name without suffix):

- classification: predicted class name and its probability (CSV columns ``<task>``,
  ``<task>_prob``) and a Grad-CAM overlay ``<stem>_<task>_gradcam.png`` at the original size;
- segmentation: a binary (0/255) mask ``<stem>_<task>_mask.png`` at the original size (the
  probability map is mapped back with INTER_LINEAR, undoing the fit, and thresholded at
  ``model.json``'s ``threshold`` (chosen on held-out folds, ``umsrep.runner.threshold``; 0.5 in
  folders without one); with ``evaluation.tta`` the maps of several fits are averaged first,
  ``umsrep.derive.tta``);
- denoise: ``<stem>_denoised.png`` (the reconstruction on the 0-255 scale, original size);
- the experiment's recommendation rules, one CSV column per rule.

``OUT/predictions.csv`` has one row per image; an unreadable image gets an ``error`` message and
empty predictions instead of stopping the run.
"""

from __future__ import annotations

import argparse
import itertools
import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pandas as pd
import torch
from torch import nn

from umsrep.data.contrast import apply_contrast
from umsrep.data.geometry import from_square
from umsrep.derive.postprocess import clean_mask
from umsrep.derive.tta import normalize_image, segment_original
from umsrep.models.ensemble import MeanEnsemble
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

    Returns ``(model in eval mode on device, meta dict from model.json)``. A fold ensemble's
    folder (``model.json`` with ``members``: model folders relative to it) gives their
    ``MeanEnsemble``.
    """
    path = Path(path)
    meta_path, weights = path / "model.json", path / "model.pt"
    for f in (meta_path, weights):
        if not f.is_file() and not (f == weights and _members(meta_path)):
            raise FileNotFoundError(
                f"{f}: missing; MODEL_DIR must be a stage's checkpoint folder "
                "(<run>/stages/<stage>/checkpoint) holding model.pt and model.json"
            )
    meta = json.loads(meta_path.read_text())
    if meta.get("members"):
        members = [load_model_dir(path / m, device)[0] for m in meta["members"]]
        return _mean_of(members, meta, device), meta
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


def _members(meta_path: Path) -> list[str]:
    """The ``members`` of a fold ensemble's model.json ([] for a model folder)."""
    if not meta_path.is_file():
        return []
    return json.loads(meta_path.read_text()).get("members") or []


def _mean_of(models: list[nn.Module], meta: dict[str, Any], device: str) -> MeanEnsemble:
    kinds = {t["name"]: t["kind"] for t in meta["tasks"]}
    return MeanEnsemble(models, kinds).to(device).eval()


def _signature(meta: dict[str, Any]) -> tuple:
    """What models must share to be averaged: input size, fit and tasks (name, kind, classes)."""
    tasks = tuple((t["name"], t["kind"], tuple(t.get("classes") or ())) for t in meta["tasks"])
    return meta["image_size"], meta.get("fit", "stretch"), tasks


def load_models(paths: Sequence[str | Path], device: str = "cpu") -> tuple[nn.Module, dict[str, Any]]:
    """One model folder (``load_model_dir``), or several applied as one: the ``MeanEnsemble``
    of their models, with the first folder's ``model.json`` and, per segmentation task, the
    mean of the folders' thresholds (each chosen on its own held-out fold; 0.5 where a folder
    records none)."""
    loaded = [load_model_dir(p, device) for p in paths]
    if len(loaded) == 1:
        return loaded[0]
    first = loaded[0][1]
    for (_, meta), path in zip(loaded[1:], paths[1:], strict=True):
        if _signature(meta) != _signature(first):
            raise ValueError(
                f"{path}/model.json: image size, fit or tasks differ from {paths[0]}/model.json; "
                "only models of the same tasks and input can be averaged"
            )
    seg = [t["name"] for t in first["tasks"] if t["kind"] == "segmentation"]
    thresholds = {
        t: float(np.mean([(m.get("threshold") or {}).get(t, MASK_THRESHOLD) for _, m in loaded]))
        for t in seg
    }
    meta = {**first, "members": [str(p) for p in paths], "threshold": thresholds}
    log.info("averaging %d models; thresholds %s", len(loaded), thresholds)
    return _mean_of([m for m, _ in loaded], meta, device), meta


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
    from umsrep.derive import overlay_heatmap

    device = next(model.parameters()).device
    height, width = pixels.shape
    fit = meta.get("fit", "stretch")  # model folders written before the fit existed: stretch
    gray = to_uint8(pixels)  # overlays show the image as read
    pixels = apply_contrast(pixels, meta.get("contrast", "none"))  # as the training cache did
    x, mean = normalize_image(pixels, int(meta["image_size"]), fit)
    x = x.to(device)
    with torch.no_grad():
        outputs = model(x)
    row: dict[str, Any] = {}
    for task in meta["tasks"]:
        name, kind, out = task["name"], task["kind"], outputs[task["name"]]
        if kind == "classification":
            probs = torch.softmax(out.float(), dim=1)[0].cpu()
            k = int(probs.argmax())
            row[name] = str(task["classes"][k])
            row[f"{name}_prob"] = float(probs[k])
            heat = explain(model, name, x, k)
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
            mask = prob > float((meta.get("threshold") or {}).get(name, MASK_THRESHOLD))
            # islands, holes, regions beyond the N largest (umsrep/derive/postprocess.py); a
            # model.json older than keep_largest lacks the key and gets clean_mask's default
            if meta.get("mask_cleanup"):
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


def explain(model: nn.Module, task: str, x: torch.Tensor, target_class: int) -> np.ndarray:
    """Grad-CAM ``[S, S]`` (0-1) of one image ``x`` ``[1, 1, S, S]`` for ``target_class``; for
    several models averaged, the mean of their maps for the class the ensemble predicts."""
    from umsrep.derive import grad_cam

    members = list(model.members) if isinstance(model, MeanEnsemble) else [model]
    maps = [grad_cam(m, task, x, target_class=target_class, layer=gradcam_layer(m, task))[0, 0]
            .cpu().numpy() for m in members]
    return np.mean(maps, axis=0)


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
    model_dir: str | Path | Sequence[str | Path],
    images: list[Path],
    out_dir: str | Path,
    *,
    device: str = "cpu",
) -> pd.DataFrame:
    """Predict every task (and rule) for each image; write PNGs and ``out_dir/predictions.csv``.

    ``model_dir``: one model folder, or several whose probabilities are averaged (``load_models``).

    Returns the table written to the CSV: one row per image, columns ``image``, ``error`` (empty
    when the image was read), per classification task ``<task>``, ``<task>_prob``,
    ``<task>_gradcam``; per segmentation task ``<task>_mask`` and ``<task>_area`` (foreground
    fraction); per denoise task ``<task>_denoised``; then one column per rule. File columns are
    names relative to ``out_dir``.
    """
    from umsrep.data.io import ImageDecodeError, load_image

    dirs = [model_dir] if isinstance(model_dir, (str, Path)) else list(model_dir)
    model, meta = load_models(dirs, device=device)
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
    parser.add_argument(
        "images",
        type=Path,
        nargs="+",
        help="PNG, JPEG or DICOM files; folders given before them are more model folders, "
        "whose probabilities are averaged with the first's (e.g. the k fold models)",
    )
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
    more = list(itertools.takewhile(Path.is_dir, args.images))  # MODEL_DIR... IMAGE...
    images = args.images[len(more):]
    if not images:
        raise SystemExit("umsrep predict: no image files after the model folders")
    df = predict_images([args.model_dir, *more], images, args.output, device=args.device)
    failed = int(df["error"].notna().sum())
    log.info(
        "%d image(s) predicted, %d unreadable; wrote %s",
        len(df) - failed,
        failed,
        Path(args.output) / "predictions.csv",
    )
    return 1 if failed == len(df) else 0
