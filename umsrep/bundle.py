"""Apply an exported bundle (``umsrep export``) to images, without the training code.

A bundle folder holds ``bundle.json`` and one model file it names (``file``): ``model.onnx``
(run with ONNX Runtime, the ``[export]`` extra) or ``model.ts`` (TorchScript, ``torch.jit.load``).
The model takes ``image`` ``[N, 1, S, S]`` float32 (``umsrep.derive.tta.normalize_image``) and
returns one array per task, in ``bundle.json``'s ``outputs`` order: classification softmax
``[N, C]``, segmentation sigmoid ``[N, 1, S, S]``, denoise reconstruction ``[N, 1, S, S]``.
``bundle.json`` is the model folder's ``model.json`` (image size, fit, contrast, tasks and
classes, threshold, ``tta``, ``mask_cleanup``, rules) plus ``format``, ``file``, ``outputs``,
``exported_from``, ``umsrep_version`` and ``torch_version``.

Predictions are ``umsrep.inference``'s, as for a model folder, except Grad-CAM: it needs
gradients through the network, which an exported file does not give, so a bundle's
predictions.csv has no ``<task>_gradcam`` column and no overlays are written. This module imports
neither ``umsrep.models`` nor strategies, training or the runner.
"""

from __future__ import annotations

import json
import logging
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from umsrep.config import UserError
from umsrep.data.contrast import model_contrast_problem
from umsrep.derive.tta import average_over_fits, normalize_image
from umsrep.inference import SquareOutputs, first_image, predict_files

log = logging.getLogger(__name__)

BUNDLE_JSON = "bundle.json"
FORMATS = {"onnx": "model.onnx", "torchscript": "model.ts"}
INPUT_NAME = "image"
EXTRA_HINT = "install the export extra: pip install -e '.[export]'"

Run = Callable[[np.ndarray], list[np.ndarray]]  # image [N, 1, S, S] -> outputs, bundle order


def is_bundle(path: str | Path) -> bool:
    """True for a folder ``umsrep export`` wrote (it holds ``bundle.json``)."""
    return (Path(path) / BUNDLE_JSON).is_file()


@dataclass
class BundleModel:
    """An exported model as ``umsrep.inference`` applies it (``ImageModel``)."""

    run: Run
    meta: dict[str, Any]

    def _forward(self, x: np.ndarray) -> dict[str, np.ndarray]:
        arrays = self.run(np.ascontiguousarray(x, dtype=np.float32))
        return dict(zip(self.meta["outputs"], arrays, strict=True))

    def outputs(self, pixels: np.ndarray) -> SquareOutputs:
        x, mean = normalize_image(pixels, int(self.meta["image_size"]),
                                  self.meta.get("fit", "stretch"))
        return SquareOutputs(first_image(self._forward(x.numpy())), mean)

    def segment(self, task: str, pixels: np.ndarray, fits: Sequence[str]) -> np.ndarray:
        return average_over_fits(lambda x: first_image(self._forward(x.numpy()))[task],
                                 pixels, int(self.meta["image_size"]), fits)

    def explain(self, task: str, x: Any, target_class: int) -> None:
        return None  # Grad-CAM needs autograd through the network; an exported file has none


def load_bundle(path: str | Path) -> BundleModel:
    """The bundle in folder ``path``, ready to predict on the CPU."""
    path = Path(path)
    meta_path = path / BUNDLE_JSON
    if not meta_path.is_file():
        raise UserError(f"{meta_path}: missing; BUNDLE must be a folder `umsrep export` wrote")
    meta = json.loads(meta_path.read_text())
    problem = model_contrast_problem(meta)
    if problem:
        raise UserError(f"{meta_path}: {problem}")
    fmt = meta.get("format")
    if fmt not in FORMATS:
        raise UserError(f"{meta_path}: format {fmt!r} is unknown; use one of {sorted(FORMATS)}")
    file = path / meta["file"]
    if not file.is_file():
        raise UserError(f"{file}: missing; {meta_path} names it as the exported model")
    run = load_onnx(file) if fmt == "onnx" else load_torchscript(file)
    return BundleModel(run, meta)


def load_onnx(file: Path) -> Run:
    """ONNX Runtime (CPU) session of ``file`` as a function of the input array."""
    try:
        import onnxruntime as ort  # the [export] extra: off the path of PyTorch model folders
    except ImportError:
        raise UserError(f"{file}: running an ONNX bundle needs onnxruntime; {EXTRA_HINT}") from None
    session = ort.InferenceSession(str(file), providers=["CPUExecutionProvider"])
    return lambda x: session.run(None, {INPUT_NAME: x})


def load_torchscript(file: Path) -> Run:
    """The TorchScript module in ``file`` (CPU, no gradients) as a function of the input array."""
    import torch  # lazy: an ONNX bundle runs without torch

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch.jit is deprecated (torch.export)
        module = torch.jit.load(str(file), map_location="cpu").eval()

    def run(x: np.ndarray) -> list[np.ndarray]:
        with torch.no_grad():
            return [t.numpy() for t in module(torch.from_numpy(x))]

    return run


def predict_bundle(bundle: str | Path, images: Sequence[Path], out_dir: str | Path) -> pd.DataFrame:
    """``umsrep predict BUNDLE images...``: predictions.csv and PNGs as for a model folder
    (``umsrep.predict.predict_images``), without the ``<task>_gradcam`` columns."""
    model = load_bundle(bundle)
    return predict_files(model, model.meta, images, out_dir)
