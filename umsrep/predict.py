"""``umsrep predict``: apply a trained model folder to new images.

A model folder (a stage's ``checkpoint/`` or a backbone store's ``checkpoint/``) holds
``model.pt`` (a ``MultiTaskModel`` state dict; a ``DenoisedInput`` for baselines fed by a
separate denoiser) and ``model.json`` (``umsrep.runner.network.model_meta``: the network's
``umsrep.models.ModelSpec``, built by ``umsrep.models.build_model``, plus rules, threshold,
fit, contrast, ...).

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
  ``<task>_prob``), every class's probability (``<task>_p_<class>``: ROC curves) and a Grad-CAM overlay ``<stem>_<task>_gradcam.png`` at the original size;
- segmentation: a binary (0/255) mask ``<stem>_<task>_mask.png`` at the original size (the
  probability map is mapped back with INTER_LINEAR, undoing the fit, and thresholded at
  ``model.json``'s ``threshold`` (chosen on held-out folds, ``umsrep.runner.threshold``; 0.5 in
  folders without one); with ``evaluation.tta`` the maps of several fits are averaged first,
  ``umsrep.derive.tta``);
- denoise: ``<stem>_denoised.png`` (the reconstruction on the 0-255 scale, original size);
- the experiment's recommendation rules, one CSV column per rule.

``OUT/predictions.csv`` has one row per image; an unreadable image gets an ``error`` message and
empty predictions instead of stopping the run.

The per-image steps after the model (contrast, geometry, thresholds, clean-up, files, rules) are
``umsrep.inference``'s, shared with exported bundles: ``umsrep predict BUNDLE images...`` applies
a folder ``umsrep export`` wrote (``umsrep.bundle``) the same way, without Grad-CAM.
"""

from __future__ import annotations

import argparse
import itertools
import json
import logging
import pickle
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from umsrep.bundle import is_bundle, predict_bundle
from umsrep.config import UserError
from umsrep.data.contrast import model_contrast_problem
from umsrep.derive import grad_cam
from umsrep.derive.tta import normalize_image, segment_original
from umsrep.inference import (
    MASK_THRESHOLD,
    SquareOutputs,
    first_image,
    predict_files,
    predict_pixels,
)

if TYPE_CHECKING:  # annotations only; the models load where they are needed, so that
    # `umsrep predict BUNDLE` (umsrep.bundle) runs without the model code
    from umsrep.models.ensemble import MeanEnsemble
    from umsrep.models.multitask import MultiTaskModel

log = logging.getLogger(__name__)


# ----------------------------------------------------------------------------- loading
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
            raise UserError(
                f"{f}: missing; MODEL_DIR must be a stage's checkpoint folder "
                "(<run>/stages/<stage>/checkpoint) holding model.pt and model.json"
            )
    meta = _read_meta(meta_path)
    if meta.get("members"):
        members = [load_model_dir(path / m, device)[0] for m in meta["members"]]
        return _mean_of(members, meta, device), meta
    from umsrep.models import ModelSpec, build_model  # lazy: a bundle predicts without models

    try:
        model = build_model(ModelSpec.from_json(meta))
    except (KeyError, TypeError, ValueError) as exc:
        raise UserError(f"{meta_path}: {exc}; the folder was written by another umsrep "
                        "version or edited by hand") from None
    try:
        state = torch.load(weights, weights_only=True, map_location="cpu")
        model.load_state_dict(state)
    except (RuntimeError, EOFError, OSError, pickle.UnpicklingError) as exc:
        raise UserError(
            f"{weights}: weights do not fit the model described by {meta_path} "
            f"({str(exc) or type(exc).__name__}); "
            "the folder was written by another umsrep version or edited by hand"
        ) from None
    return model.to(device).eval(), meta


def _read_meta(meta_path: Path) -> dict[str, Any]:
    try:
        meta = json.loads(meta_path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise UserError(f"{meta_path}: not a readable model.json ({exc})") from None
    if not isinstance(meta, dict):
        raise UserError(f"{meta_path}: not a model.json (a JSON object is expected)")
    problem = model_contrast_problem(meta)
    if problem:
        raise UserError(f"{meta_path}: {problem}")
    return meta


def _members(meta_path: Path) -> list[str]:
    """The ``members`` of a fold ensemble's model.json ([] for a model folder)."""
    if not meta_path.is_file():
        return []
    return json.loads(meta_path.read_text()).get("members") or []


def _mean_of(models: list[nn.Module], meta: dict[str, Any], device: str) -> MeanEnsemble:
    from umsrep.models.ensemble import MeanEnsemble  # lazy: a bundle predicts without models

    kinds = {t["name"]: t["kind"] for t in meta["tasks"]}
    return MeanEnsemble(models, kinds).to(device).eval()


def _signature(meta: dict[str, Any]) -> tuple:
    """What models must share to be averaged: input size, fit, contrast normalization (the
    images they were trained on) and tasks (name, kind, classes)."""
    tasks = tuple((t["name"], t["kind"], tuple(t.get("classes") or ())) for t in meta["tasks"])
    return (meta["image_size"], meta.get("fit", "stretch"), meta.get("contrast", "none"),
            meta.get("contrast_key", meta.get("contrast", "none")), tasks)


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
                f"{path}/model.json: image size, fit, contrast or tasks differ from "
                f"{paths[0]}/model.json; "
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


# ----------------------------------------------------------------------------- prediction
def gradcam_layer(model: MultiTaskModel, task: str) -> nn.Module | None:
    """``None`` (the backbone's last conv) unless the backbone has no conv (the paper baseline
    classifier behind an identity backbone), then the head's last conv."""
    if any(isinstance(m, nn.Conv2d) for m in model.backbone.modules()):
        return None
    convs = [m for m in model.heads[task].modules() if isinstance(m, nn.Conv2d)]
    return convs[-1] if convs else None


def task_probabilities(outputs: Mapping[str, torch.Tensor],
                       tasks: Sequence[dict[str, Any]]) -> tuple[torch.Tensor, ...]:
    """A model's outputs -> per task of ``tasks`` (in order): classification softmax ``[B, C]``,
    segmentation sigmoid ``[B, 1, H, W]``, denoise reconstruction ``[B, 1, H, W]`` (float32).

    What ``umsrep predict`` uses, and what an exported bundle returns (``umsrep.export``)."""
    return tuple(_activate(t["kind"], outputs[t["name"]].float()) for t in tasks)


def _activate(kind: str, out: torch.Tensor) -> torch.Tensor:
    if kind == "classification":
        return torch.softmax(out, dim=1)
    if kind == "segmentation":
        return torch.sigmoid(out)
    return out  # denoise: the reconstruction, in the input's normalized space


@dataclass
class TorchImageModel:
    """A PyTorch model (one folder, or several averaged) as ``umsrep.inference`` applies it."""

    model: nn.Module
    meta: dict[str, Any]

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def outputs(self, pixels: np.ndarray) -> SquareOutputs:
        x, mean = normalize_image(pixels, int(self.meta["image_size"]),
                                  self.meta.get("fit", "stretch"))
        x = x.to(self.device)
        with torch.no_grad():
            probs = task_probabilities(self.model(x), self.meta["tasks"])
        arrays = {t["name"]: p.cpu().numpy() for t, p in zip(self.meta["tasks"], probs, strict=True)}
        return SquareOutputs(first_image(arrays), mean, x)

    def segment(self, task: str, pixels: np.ndarray, fits: Sequence[str]) -> np.ndarray:
        return segment_original(self.model, task, pixels, int(self.meta["image_size"]), fits,
                                self.device)

    def explain(self, task: str, x: torch.Tensor, target_class: int) -> np.ndarray:
        return explain(self.model, task, x, target_class)


def predict_one(
    model: nn.Module, meta: dict[str, Any], pixels: np.ndarray, stem: str, out_dir: Path
) -> dict[str, Any]:
    """Predictions of every task for one ``[H, W]`` image; writes its PNGs under ``out_dir``."""
    return predict_pixels(TorchImageModel(model, meta), meta, pixels, stem, out_dir)


def explain(model: nn.Module, task: str, x: torch.Tensor, target_class: int) -> np.ndarray:
    """Grad-CAM ``[S, S]`` (0-1) of one image ``x`` ``[1, 1, S, S]`` for ``target_class``; for
    several models averaged, the mean of their maps for the class the ensemble predicts."""
    from umsrep.models.ensemble import MeanEnsemble  # lazy: a bundle predicts without models

    members = list(model.members) if isinstance(model, MeanEnsemble) else [model]
    maps = [grad_cam(m, task, x, target_class=target_class, layer=gradcam_layer(m, task))[0, 0]
            .cpu().numpy() for m in members]
    return np.mean(maps, axis=0)


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
    dirs = [model_dir] if isinstance(model_dir, (str, Path)) else list(model_dir)
    model, meta = load_models(dirs, device=device)
    return predict_files(TorchImageModel(model, meta), meta, images, out_dir)


# ----------------------------------------------------------------------------- CLI
def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "model_dir",
        type=Path,
        help="a trained stage's checkpoint folder (model.pt + model.json), or a bundle folder "
        "written by `umsrep export` (bundle.json; runs on the CPU, no Grad-CAM)",
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
        help="torch device for model folders (default: cuda when available, else cpu)",
    )


def run(args: argparse.Namespace) -> int:
    more = list(itertools.takewhile(Path.is_dir, args.images))  # MODEL_DIR... IMAGE...
    images = args.images[len(more):]
    if not images:
        raise SystemExit("umsrep predict: no image files after the model folders")
    if any(is_bundle(d) for d in [args.model_dir, *more]):
        if more:
            raise UserError(
                f"{args.model_dir}: a bundle is applied alone; to average several model folders, "
                "export them together: umsrep export MODEL_DIR MODEL_DIR ... -o BUNDLE"
            )
        df = predict_bundle(args.model_dir, images, args.output)
    else:
        df = predict_images([args.model_dir, *more], images, args.output, device=args.device)
    failed = int(df["error"].notna().sum())
    log.info(
        "%d image(s) predicted, %d unreadable; wrote %s",
        len(df) - failed,
        failed,
        Path(args.output) / "predictions.csv",
    )
    return 1 if failed == len(df) else 0
