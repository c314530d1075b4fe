"""``umsrep export``: model folders as one ONNX or TorchScript file plus ``bundle.json``.

``umsrep export MODEL_DIR [MODEL_DIR ...] -o BUNDLE [--format onnx|torchscript]`` loads the
folders as ``umsrep predict`` does (``umsrep.predict.load_models``: one model, several averaged,
or a fold ensemble's folder), wraps the model so it returns probabilities (``TaskProbabilities``)
and writes ``BUNDLE/model.onnx`` or ``BUNDLE/model.ts`` plus ``BUNDLE/bundle.json``
(``umsrep.bundle`` describes both; ``umsrep predict BUNDLE images...`` applies them).

ONNX goes through ``torch.onnx.export``'s default exporter (``torch.export``, which needs
``onnxscript``) with a dynamic batch dimension. A model whose forward has data-dependent Python
control flow (the ``seg_dilated`` head asks whether its reconstructor buffer was loaded) cannot
be captured by ``torch.export``; it is exported with PyTorch's TorchScript-based ONNX exporter
instead (``bundle.json``: ``onnx_exporter``). TorchScript bundles are traced
(``torch.jit.trace``): the models' control flow depends on shapes and flags, never on pixel
values. Either way the written file is checked against the PyTorch model on a random batch of
another size before ``bundle.json`` is written: outputs must agree within ``ATOL``.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import io
import json
import logging
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from umsrep import __version__
from umsrep.bundle import BUNDLE_JSON, EXTRA_HINT, FORMATS, INPUT_NAME, Run, load_onnx
from umsrep.bundle import load_torchscript as load_ts
from umsrep.config import UserError
from umsrep.predict import load_models, task_probabilities

log = logging.getLogger(__name__)

ATOL = 1e-4  # exported vs PyTorch outputs (probabilities, normalized reconstructions)
ONNX_PACKAGES = ("onnx", "onnxscript", "onnxruntime")


class TaskProbabilities(nn.Module):
    """``forward(x: [N, 1, S, S]) -> tuple`` of ``task_probabilities`` in ``tasks`` order."""

    def __init__(self, model: nn.Module, tasks: Sequence[dict[str, Any]]) -> None:
        super().__init__()
        self.model = model
        self.tasks = [dict(t) for t in tasks]

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return task_probabilities(self.model(x), self.tasks)


def require_onnx() -> None:
    """A ``UserError`` naming the ``[export]`` extra when a package of it is missing."""
    missing = []
    for package in ONNX_PACKAGES:
        try:
            importlib.import_module(package)
        except ImportError:
            missing.append(package)
    if missing:
        raise UserError(f"ONNX export needs {', '.join(missing)}; {EXTRA_HINT}")


def export_bundle(model_dirs: Sequence[str | Path], out: str | Path, fmt: str = "onnx") -> Path:
    """Write the bundle of ``model_dirs`` (averaged when several) to folder ``out``; returns
    ``out/bundle.json``."""
    if fmt not in FORMATS:
        raise UserError(f"export format {fmt!r} is unknown; use one of {sorted(FORMATS)}")
    if fmt == "onnx":
        require_onnx()
    model, meta = load_models(list(model_dirs), device="cpu")
    wrapper = TaskProbabilities(model, meta["tasks"]).eval()
    size = int(meta["image_size"])
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / BUNDLE_JSON).unlink(missing_ok=True)  # written last: a failed export leaves none
    file = out / FORMATS[fmt]
    example = torch.randn(2, 1, size, size, generator=torch.Generator().manual_seed(0))
    extra: dict[str, Any] = {}
    if fmt == "onnx":
        extra["onnx_exporter"] = _export_onnx(wrapper, example, file, _names(meta))
        run = load_onnx(file)
    else:
        _export_torchscript(wrapper, example, file)
        run = load_ts(file)
    _check(wrapper, run, size, file)
    bundle = {
        **{k: v for k, v in meta.items() if k != "members"},  # the members are in the file
        "format": fmt,
        "file": file.name,
        "input": {"name": INPUT_NAME, "shape": ["N", 1, size, size], "dtype": "float32"},
        "outputs": _names(meta),
        **extra,
        "exported_from": [str(Path(d)) for d in model_dirs],
        "umsrep_version": __version__,
        "torch_version": torch.__version__,
    }
    path = out / BUNDLE_JSON
    path.write_text(json.dumps(bundle, indent=2))
    log.info("wrote %s and %s", file, path)
    return path


def _names(meta: dict[str, Any]) -> list[str]:
    return [t["name"] for t in meta["tasks"]]


def _export_onnx(wrapper: nn.Module, example: torch.Tensor, file: Path, names: list[str]) -> str:
    """Export with ``torch.export`` (dynamic batch); on a model it cannot capture, with the
    TorchScript-based exporter. Returns which one wrote ``file``."""
    printed = io.StringIO()  # the exporter prints its steps, and a failed capture its graph
    try:
        with contextlib.redirect_stdout(printed), contextlib.redirect_stderr(printed):
            torch.onnx.export(
                wrapper, (example,), file, dynamo=True, input_names=[INPUT_NAME],
                output_names=names, dynamic_shapes=({0: torch.export.Dim("batch", min=1)},),
                verbose=False,
            )
        log.debug("torch.onnx.export printed:\n%s", printed.getvalue())
        return "dynamo"
    except torch.onnx.OnnxExporterError as exc:
        log.debug("torch.onnx.export printed:\n%s", printed.getvalue())
        log.warning("torch.export could not capture the model (%s); exporting %s with the "
                    "TorchScript-based ONNX exporter", _reason(exc), file)
    with warnings.catch_warnings():
        # deprecated, and still the only way for such models; it traces, so it warns as
        # _export_torchscript's trace does (shapes and flags are constants of a bundle)
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        torch.onnx.export(
            wrapper, (example,), file, dynamo=False, input_names=[INPUT_NAME], output_names=names,
            dynamic_axes={n: {0: "N"} for n in [INPUT_NAME, *names]},
        )
    return "torchscript"


def _reason(exc: BaseException) -> str:
    """The first line of what ``torch.export`` refused (the exporter's own message is a guide)."""
    cause = exc.__cause__ or exc
    lines = [line for line in str(cause).splitlines() if line.strip()] or [""]
    return f"{type(cause).__name__}: {lines[0]}"


def _export_torchscript(wrapper: nn.Module, example: torch.Tensor, file: Path) -> None:
    with warnings.catch_warnings():
        # torch.jit is deprecated in favour of torch.export; a TracerWarning flags the input's
        # channel check (1 channel, constant for a bundle)
        warnings.simplefilter("ignore", FutureWarning)
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        with torch.no_grad():
            traced = torch.jit.trace(wrapper, example)
        torch.jit.save(traced, str(file))


def _check(wrapper: nn.Module, run: Run, size: int, file: Path) -> None:
    """``file``'s outputs against PyTorch on a random batch of 3 (not the traced batch of 2)."""
    x = torch.randn(3, 1, size, size, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        want = [t.numpy() for t in wrapper(x)]
    got = run(x.numpy())
    worst = max(float(np.abs(g - w).max()) for g, w in zip(got, want, strict=True))
    if worst > ATOL or any(g.shape != w.shape for g, w in zip(got, want, strict=True)):
        raise RuntimeError(f"{file}: exported outputs differ from PyTorch's by {worst:.2e} "
                           f"(allowed {ATOL}); the model does not export faithfully")
    log.info("%s matches PyTorch within %.1e (max abs difference)", file.name, worst)


# ----------------------------------------------------------------------------- CLI
def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "model_dirs", type=Path, nargs="+", metavar="MODEL_DIR",
        help="trained model folders (model.pt + model.json) or a fold ensemble's folder; "
        "several are averaged as `umsrep predict` averages them",
    )
    parser.add_argument("-o", "--output", type=Path, required=True,
                        help="bundle folder to write (model file + bundle.json)")
    parser.add_argument("--format", choices=sorted(FORMATS), default="onnx",
                        help="onnx (ONNX Runtime; the [export] extra) or torchscript "
                        "(default: onnx)")


def run(args: argparse.Namespace) -> int:
    path = export_bundle(args.model_dirs, args.output, args.format)
    log.info("bundle ready: umsrep predict %s IMAGE... -o OUT", path.parent)
    return 0
