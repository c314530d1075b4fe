"""Per-image prediction, whatever runs the model: image in, a predictions.csv row and PNGs out.

``umsrep predict`` runs either a PyTorch model folder (``umsrep.predict``) or an exported bundle
(``umsrep.bundle``: ONNX Runtime or TorchScript). Both wrap their model as an ``ImageModel`` and
hand it to ``predict_files``, so contrast, geometry, thresholds, mask clean-up, file names and
rules are the same code for both. This module imports no model code (``umsrep.models``,
strategies, training), so a bundle predicts without it.

Pixel scales: images come in as read (uint8 0-255 or uint16 0-65535); ``ImageModel.outputs``
returns probabilities (0-1) and the denoise reconstruction in the model's normalized space (the
image minus its mean, on the 0-1 scale), all at the model's ``S x S`` square.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import cv2
import numpy as np
import pandas as pd

from umsrep.data.contrast import apply_contrast
from umsrep.data.geometry import from_square
from umsrep.data.io import ImageDecodeError, load_image
from umsrep.derive.gradcam import overlay_heatmap
from umsrep.derive.postprocess import clean_mask
from umsrep.derive.recommend import apply_rules, load_rules

log = logging.getLogger(__name__)

MASK_THRESHOLD = 0.5


@dataclass(frozen=True)
class SquareOutputs:
    """One image's outputs at the model's square.

    ``probs``: per task, classification probabilities ``[C]``, a segmentation probability map
    ``[S, S]`` or a denoise reconstruction ``[S, S]`` (normalized space); ``mean``: the image mean
    that normalization subtracted (0-1 scale); ``x``: the model input, handed back to
    ``ImageModel.explain``.
    """

    probs: dict[str, np.ndarray]
    mean: float
    x: Any = None


class ImageModel(Protocol):
    """A model as ``predict_pixels`` applies it (``umsrep.predict.TorchImageModel``,
    ``umsrep.bundle.BundleModel``)."""

    def outputs(self, pixels: np.ndarray) -> SquareOutputs:
        """Every task's outputs for contrast-normalized ``[H, W]`` pixels (normalized here as in
        training: ``umsrep.derive.tta.normalize_image``)."""
        ...

    def segment(self, task: str, pixels: np.ndarray, fits: Sequence[str]) -> np.ndarray:
        """Probability map ``[H, W]`` of ``task`` averaged over ``fits`` (test-time
        augmentation, ``umsrep.derive.tta``)."""
        ...

    def explain(self, task: str, x: Any, target_class: int) -> np.ndarray | None:
        """Grad-CAM ``[S, S]`` (0-1) of ``x`` for ``target_class``; ``None`` when the model has
        no gradients (an exported bundle)."""
        ...


def first_image(arrays: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Batched outputs (``[B, C]`` or ``[B, 1, S, S]``) -> the first image's (``[C]``, ``[S, S]``)."""
    return {name: a[0, 0] if a.ndim == 4 else a[0] for name, a in arrays.items()}


def to_uint8(pixels: np.ndarray) -> np.ndarray:
    """A uint8/uint16 image on the 0-255 scale, for overlays."""
    if pixels.dtype == np.uint16:
        return np.round(pixels.astype(np.float32) / 257.0).astype(np.uint8)
    return pixels.astype(np.uint8)


def write_png(path: Path, image: np.ndarray) -> None:
    if not cv2.imwrite(str(path), image):
        raise OSError(f"{path}: OpenCV could not write the PNG; check the folder is writable")


# ----------------------------------------------------------------------------- one image
def predict_pixels(
    model: ImageModel, meta: dict[str, Any], pixels: np.ndarray, stem: str, out_dir: Path
) -> dict[str, Any]:
    """Predictions of every task in ``meta["tasks"]`` for one ``[H, W]`` image (as read); writes
    its PNGs under ``out_dir`` and returns its CSV columns."""
    gray = to_uint8(pixels)  # overlays show the image as read
    pixels = apply_contrast(pixels, meta.get("contrast", "none"))  # as the training cache did
    square = model.outputs(pixels)
    row: dict[str, Any] = {}
    for task in meta["tasks"]:
        name, kind = task["name"], task["kind"]
        if kind == "classification":
            row.update(_classification(model, task, square, gray, stem, out_dir, meta))
        elif kind == "segmentation":
            row.update(_segmentation(model, name, square, pixels, stem, out_dir, meta))
        else:
            file = f"{stem}_denoised.png" if name == "denoise" else f"{stem}_{name}_denoised.png"
            write_png(out_dir / file, reconstruction(square.probs[name], square.mean,
                                                     pixels.shape, _fit(meta)))
            row[f"{name}_denoised"] = file
    return row


def _fit(meta: dict[str, Any]) -> str:
    return meta.get("fit", "stretch")  # model folders written before the fit existed: stretch


def _classification(model: ImageModel, task: dict[str, Any], square: SquareOutputs,
                    gray: np.ndarray, stem: str, out_dir: Path,
                    meta: dict[str, Any]) -> dict[str, Any]:
    name, probs = task["name"], square.probs[task["name"]]
    k = int(probs.argmax())
    row: dict[str, Any] = {name: str(task["classes"][k]), f"{name}_prob": float(probs[k])}
    # every class's probability, for ROC / precision-recall curves over a set of images
    row.update({f"{name}_p_{c}": float(p) for c, p in zip(task["classes"], probs, strict=True)})
    heat = model.explain(name, square.x, k)
    if heat is not None:
        heat = from_square(np.clip(heat, 0.0, 1.0).astype(np.float32), gray.shape, _fit(meta))
        overlay = overlay_heatmap(gray, np.clip(heat, 0.0, 1.0))
        file = f"{stem}_{name}_gradcam.png"
        write_png(out_dir / file, cv2.cvtColor(overlay, cv2.COLOR_RGB2BGR))
        row[f"{name}_gradcam"] = file
    return row


def _segmentation(model: ImageModel, name: str, square: SquareOutputs, pixels: np.ndarray,
                  stem: str, out_dir: Path, meta: dict[str, Any]) -> dict[str, Any]:
    if meta.get("tta"):  # average over fits of the original image (derive/tta.py)
        prob = model.segment(name, pixels, meta["tta"])
    else:
        prob = from_square(square.probs[name], pixels.shape, _fit(meta))
    mask = prob > float((meta.get("threshold") or {}).get(name, MASK_THRESHOLD))
    # islands, holes, regions beyond the N largest (umsrep/derive/postprocess.py); a
    # model.json older than keep_largest lacks the key and gets clean_mask's default
    if meta.get("mask_cleanup"):
        mask = clean_mask(mask, **meta["mask_cleanup"])
    mask = mask.astype(np.uint8)
    file = f"{stem}_{name}_mask.png"
    write_png(out_dir / file, mask * 255)
    return {f"{name}_mask": file, f"{name}_area": float(mask.mean())}


def reconstruction(out: np.ndarray, mean: float, shape: tuple[int, int],
                   fit: str = "stretch") -> np.ndarray:
    """Normalized ``[S, S]`` reconstruction -> uint8 0-255 image of ``shape`` ``(H, W)``."""
    pixels = np.clip(out.astype(np.float32) + mean, 0.0, 1.0)
    pixels = np.clip(from_square(pixels, shape, fit), 0.0, 1.0)
    return np.round(pixels * 255).astype(np.uint8)


# ----------------------------------------------------------------------------- many images
def _unique_stem(path: Path, used: set[str]) -> str:
    stem, i = path.stem, 2
    while stem in used:
        stem, i = f"{path.stem}_{i}", i + 1
    used.add(stem)
    return stem


def predict_files(
    model: ImageModel,
    meta: dict[str, Any],
    images: Sequence[Path],
    out_dir: str | Path,
) -> pd.DataFrame:
    """``predict_pixels`` for each readable image, rule columns (``apply_model_rules``), and
    ``out_dir/predictions.csv``; returns the CSV's table (one row per image, unreadable ones
    with an ``error`` message and empty predictions)."""

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
        row.update(predict_pixels(model, meta, pixels, _unique_stem(image, used), out_dir))
        rows.append(row)
    df = pd.DataFrame(rows)
    df = pd.concat([df, apply_model_rules(meta, df)], axis=1)
    df.to_csv(out_dir / "predictions.csv", index=False)
    return df


def apply_model_rules(meta: dict[str, Any], df: pd.DataFrame) -> pd.DataFrame:
    """Rule columns for the rows of ``df`` (one column per rule whose inputs exist).

    A rule that needs a task this model does not predict is skipped with a warning; rows with an
    ``error`` get no rule output.
    """

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
