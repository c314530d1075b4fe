"""``umsrep export`` and ``umsrep predict BUNDLE``: ONNX / TorchScript outputs against the
PyTorch model, a two-folder ensemble, predictions against the model folder's, the missing extra,
and a bundle predicting without the training code."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
import torch

from tests.test_predict import CLS, SEG, SIZE, _meta
from umsrep.cli import main as cli_main
from umsrep.models import build_backbone, build_head
from umsrep.models.multitask import MultiTaskModel
from umsrep.predict import load_models
from umsrep.runner.checkpoints import save_model_dir

DEN = {"name": "denoise", "kind": "denoise", "column": "", "classes": None, "head": "denoise",
       "head_kwargs": {}, "loss": "mse"}
CLEANUP = {"min_fraction": 0.2, "fill_holes": True, "keep_largest": 2}
# what `predict` must honour from the bundle as from model.json: pad + TTA + clean-up + CLAHE
PREDICT_META = {"fit": "pad", "tta": ["pad", "stretch"], "mask_cleanup": CLEANUP,
                "contrast": "clahe"}


def _model(seed: int) -> MultiTaskModel:
    """A tiny three-task model with non-trivial batch-norm statistics."""
    torch.manual_seed(seed)
    bb = build_backbone("cdae", preset="tiny")
    model = MultiTaskModel(bb, {
        "lung": build_head("seg_cdae", bb, preset="tiny", skips=True),
        "abnormal": build_head("classification", bb, num_classes=2, preset="tiny"),
        "denoise": build_head("denoise", bb, preset="tiny"),
    })
    model.train()
    with torch.no_grad():
        model(torch.randn(4, 1, SIZE, SIZE))
    return model.eval()


def _reference(model: torch.nn.Module, x: torch.Tensor) -> dict[str, np.ndarray]:
    """The PyTorch model's probabilities, computed here (not by the code under test)."""
    with torch.no_grad():
        out = model(x)
    return {"lung": torch.sigmoid(out["lung"]).numpy(),
            "abnormal": torch.softmax(out["abnormal"], dim=1).numpy(),
            "denoise": out["denoise"].numpy()}


def _onnx_outputs(bundle: Path, x: torch.Tensor) -> dict[str, np.ndarray]:
    ort = pytest.importorskip("onnxruntime")
    meta = json.loads((bundle / "bundle.json").read_text())
    session = ort.InferenceSession(str(bundle / meta["file"]), providers=["CPUExecutionProvider"])
    return dict(zip(meta["outputs"], session.run(None, {"image": x.numpy()}), strict=True))


def _assert_close(got: dict[str, np.ndarray], want: dict[str, np.ndarray]) -> None:
    assert set(got) == set(want)
    for task, value in want.items():
        assert got[task].shape == value.shape, task
        np.testing.assert_allclose(got[task], value, rtol=0, atol=1e-4, err_msg=task)


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> tuple[Path, MultiTaskModel]:
    """A model folder whose threshold cuts its lung map near the middle (masks have both)."""
    model = _model(0)
    x = torch.randn(8, 1, SIZE, SIZE, generator=torch.Generator().manual_seed(3))
    threshold = float(np.median(_reference(model, x)["lung"]))
    path = tmp_path_factory.mktemp("export") / "checkpoint"
    save_model_dir(path, model, _meta([SEG, CLS, DEN], threshold={"lung": threshold},
                                      **PREDICT_META))
    return path, model


@pytest.fixture(scope="module")
def onnx_bundle(trained, tmp_path_factory) -> Path:
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    out = tmp_path_factory.mktemp("bundles") / "onnx"
    assert cli_main(["export", str(trained[0]), "-o", str(out)]) == 0  # default: onnx
    return out


@pytest.fixture(scope="module")
def ts_bundle(trained, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("bundles") / "ts"
    assert cli_main(["export", str(trained[0]), "-o", str(out), "--format", "torchscript"]) == 0
    return out


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> list[Path]:
    """A non-square PNG and JPEG: the fit, the TTA over fits and CLAHE all matter."""
    folder = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:40, 0:50]
    gray = np.clip(60 + 120 * np.exp(-((yy - 20) ** 2 + (xx - 25) ** 2) / 150)
                   + rng.normal(0, 20, (40, 50)), 0, 255).astype(np.uint8)
    png, jpg = folder / "a.png", folder / "b.jpg"
    cv2.imwrite(str(png), gray)
    cv2.imwrite(str(jpg), gray.T.copy())  # 50 x 40
    return [png, jpg]


@pytest.fixture(scope="module")
def folder_predictions(trained, images, tmp_path_factory) -> tuple[Path, pd.DataFrame]:
    out = tmp_path_factory.mktemp("pred") / "folder"
    assert cli_main(["predict", str(trained[0]), *map(str, images), "-o", str(out)]) == 0
    return out, pd.read_csv(out / "predictions.csv")


def test_onnx_matches_pytorch_for_every_task(trained, onnx_bundle):
    path, model = trained
    meta = json.loads((onnx_bundle / "bundle.json").read_text())
    assert meta["format"] == "onnx" and meta["file"] == "model.onnx"
    assert meta["outputs"] == ["lung", "abnormal", "denoise"]
    assert meta["exported_from"] == [str(path)] and meta["torch_version"] == torch.__version__
    saved = json.loads((path / "model.json").read_text())
    for key in ("image_size", "fit", "tta", "contrast", "mask_cleanup", "threshold", "tasks",
                "rules"):
        assert meta[key] == saved[key], key
    x = torch.randn(5, 1, SIZE, SIZE, generator=torch.Generator().manual_seed(11))  # batch 5
    _assert_close(_onnx_outputs(onnx_bundle, x), _reference(model, x))


@pytest.mark.parametrize("crop", [False, True])
def test_a_guided_classification_head_exports_with_its_guide(tmp_path, crop):
    """``guide: lung`` runs the lung head inside the classification's forward: the exported
    graph carries it (batch 3, a size other than the export's example); with ``crop`` the
    backbone's second pass on each image's own lung box too."""
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    model = _model(0)
    with torch.no_grad():  # a lung map far from uniform, so the guide changes the answer
        model.heads["lung"].final.weight.mul_(50)
        for layer in (model.heads["abnormal"].mlp[0], model.heads["abnormal"].mlp[-1]):
            layer.weight.mul_(20)
    x = torch.randn(3, 1, SIZE, SIZE, generator=torch.Generator().manual_seed(5))
    unguided = _reference(model, x)["abnormal"]
    model.heads["abnormal"].guide = "lung"
    model.heads["abnormal"].crop = crop
    assert not np.allclose(_reference(model, x)["abnormal"], unguided, atol=1e-3)
    path = tmp_path / "checkpoint"
    guided = {**CLS, "head_kwargs": {"guide": "lung", "crop": crop}}
    save_model_dir(path, model, _meta([SEG, guided, DEN]))
    loaded = load_models([path])[0].heads["abnormal"]
    assert loaded.guide == "lung" and loaded.crop == crop
    assert cli_main(["export", str(path), "-o", str(tmp_path / "onnx")]) == 0
    _assert_close(_onnx_outputs(tmp_path / "onnx", x), _reference(model, x))


@pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated:FutureWarning")
def test_torchscript_matches_pytorch_for_every_task(trained, ts_bundle):
    meta = json.loads((ts_bundle / "bundle.json").read_text())
    assert meta["format"] == "torchscript" and meta["file"] == "model.ts"
    module = torch.jit.load(str(ts_bundle / "model.ts"))
    x = torch.randn(5, 1, SIZE, SIZE, generator=torch.Generator().manual_seed(12))
    with torch.no_grad():
        got = dict(zip(meta["outputs"], (t.numpy() for t in module(x)), strict=True))
    _assert_close(got, _reference(trained[1], x))


def test_two_folder_ensemble_exports_as_their_mean(trained, tmp_path):
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    from umsrep.export import export_bundle

    a_dir, b_dir = tmp_path / "a", tmp_path / "b"
    save_model_dir(a_dir, trained[1], _meta([SEG, CLS, DEN], threshold={"lung": 0.4}))
    other = _model(7)
    save_model_dir(b_dir, other, _meta([SEG, CLS, DEN], threshold={"lung": 0.6}))
    export_bundle([a_dir, b_dir], tmp_path / "bundle", "onnx")
    meta = json.loads((tmp_path / "bundle" / "bundle.json").read_text())
    assert meta["threshold"] == {"lung": pytest.approx(0.5)}  # the folders' mean
    assert meta["exported_from"] == [str(a_dir), str(b_dir)] and "members" not in meta
    ensemble, _ = load_models([a_dir, b_dir])
    x = torch.randn(3, 1, SIZE, SIZE, generator=torch.Generator().manual_seed(13))
    got = _onnx_outputs(tmp_path / "bundle", x)
    _assert_close(got, _reference(ensemble, x))
    # ... and that is the mean of the two models' probabilities, not one model's
    one, two = _reference(trained[1], x), _reference(other, x)
    _assert_close(got, {k: (one[k] + two[k]) / 2 for k in one})


def test_a_model_torch_export_cannot_capture_goes_through_the_torchscript_exporter(tmp_path,
                                                                                     caplog):
    """``seg_dilated`` branches on a buffer's value (was its reconstructor loaded?), which
    ``torch.export`` refuses; the bundle is written by the TorchScript-based ONNX exporter."""
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    from umsrep.export import export_bundle

    torch.manual_seed(5)
    bb = build_backbone("cdae", preset="tiny")
    head = build_head("seg_dilated", bb, preset="tiny")
    head.init_from_denoise(build_head("denoise", bb, preset="tiny"))
    model = MultiTaskModel(bb, {"lung": head}).eval()
    save_model_dir(tmp_path / "m", model, _meta([{**SEG, "head": "seg_dilated", "head_kwargs": {}}],
                                                rules=[]))
    export_bundle([tmp_path / "m"], tmp_path / "bundle", "onnx")
    meta = json.loads((tmp_path / "bundle" / "bundle.json").read_text())
    assert meta["onnx_exporter"] == "torchscript"
    assert "TorchScript-based ONNX exporter" in caplog.text
    x = torch.randn(3, 1, SIZE, SIZE, generator=torch.Generator().manual_seed(14))
    with torch.no_grad():
        want = torch.sigmoid(model(x)["lung"]).numpy()
    _assert_close(_onnx_outputs(tmp_path / "bundle", x), {"lung": want})


@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
def test_predict_from_bundle_writes_what_the_model_folder_does(fmt, request, images,
                                                                folder_predictions, tmp_path):
    bundle = request.getfixturevalue("onnx_bundle" if fmt == "onnx" else "ts_bundle")
    want_dir, want = folder_predictions
    out = tmp_path / "out"
    assert cli_main(["predict", str(bundle), *map(str, images), "-o", str(out)]) == 0
    got = pd.read_csv(out / "predictions.csv")
    assert "abnormal_gradcam" in want and "abnormal_gradcam" not in got  # no autograd in a bundle
    assert list(got.columns) == [c for c in want.columns if c != "abnormal_gradcam"]
    assert list(got["abnormal"]) == list(want["abnormal"])
    assert list(got["action"]) == list(want["action"])
    np.testing.assert_allclose(got["abnormal_prob"], want["abnormal_prob"], rtol=0, atol=1e-4)
    for stem, shape in (("a", (40, 50)), ("b", (50, 40))):
        mask = cv2.imread(str(out / f"{stem}_lung_mask.png"), cv2.IMREAD_UNCHANGED)
        assert mask.shape == shape and 0 < mask.mean() < 255  # the threshold cuts the map
        np.testing.assert_array_equal(
            mask, cv2.imread(str(want_dir / f"{stem}_lung_mask.png"), cv2.IMREAD_UNCHANGED))
        den = cv2.imread(str(out / f"{stem}_denoised.png"), cv2.IMREAD_UNCHANGED).astype(int)
        ref = cv2.imread(str(want_dir / f"{stem}_denoised.png"), cv2.IMREAD_UNCHANGED)
        assert np.abs(den - ref).max() <= 1  # 0-255 rounding of outputs equal within 1e-4


def test_export_without_the_extra_says_how_to_install_it(trained, onnx_bundle, images,
                                                         tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "onnxscript", None)  # `import onnxscript` now fails
    assert cli_main(["export", str(trained[0]), "-o", str(tmp_path / "b")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "onnxscript" in err
    assert "install the export extra: pip install -e '.[export]'" in err
    assert not (tmp_path / "b" / "bundle.json").exists()
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    assert cli_main(["predict", str(onnx_bundle), str(images[0]), "-o", str(tmp_path / "p")]) == 2
    assert "pip install -e '.[export]'" in capsys.readouterr().err


def test_a_bundle_is_not_averaged_with_model_folders(trained, onnx_bundle, images, tmp_path,
                                                     capsys):
    args = ["predict", str(onnx_bundle), str(trained[0]), str(images[0]), "-o", str(tmp_path)]
    assert cli_main(args) == 2
    assert "umsrep export MODEL_DIR MODEL_DIR" in capsys.readouterr().err


def test_bundle_predicts_without_the_training_code(onnx_bundle, images, tmp_path):
    """`umsrep predict BUNDLE` in a Python that refuses to import models, strategies, training
    and the runner."""
    script = textwrap.dedent(f"""
        import sys
        from importlib.abc import MetaPathFinder

        class Refuse(MetaPathFinder):
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[:2] in (["umsrep", "models"], ["umsrep", "strategies"],
                                           ["umsrep", "train"], ["umsrep", "runner"]):
                    raise ImportError(f"{{name}} imported")

        sys.meta_path.insert(0, Refuse())
        from umsrep.cli import main
        sys.exit(main(["predict", {str(onnx_bundle)!r}, {str(images[0])!r},
                       "-o", {str(tmp_path)!r}]))
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          cwd=Path(__file__).resolve().parents[1], timeout=300)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "a_lung_mask.png").is_file()
