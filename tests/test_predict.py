"""``umsrep predict``: model folder round trip, PNG/JPEG/DICOM/unreadable inputs, outputs."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
import torch

from umsrep.cli import main as cli_main
from umsrep.config import UserError
from umsrep.models import build_backbone, build_head
from umsrep.models.multitask import MultiTaskModel
from umsrep.predict import load_model_dir, normalize_image, predict_images
from umsrep.runner.checkpoints import save_model_dir

REAL = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "real"
SIZE = 32
RULES = [{"name": "action", "when": {"abnormal": "sick"}, "then": "refer", "else": "routine"}]


def _meta(tasks: list[dict], **extra) -> dict:
    return {
        "stage": "f0-joint",
        "kind": "head",
        "strategy": "joint",
        "fold": 0,
        "image_size": SIZE,
        "backbone": {"name": "cdae", "preset": "tiny", "width": None},
        "baseline_arch": None,
        "denoised_input": False,
        "tasks": tasks,
        "rules": RULES,
        **extra,
    }


SEG = {
    "name": "lung",
    "kind": "segmentation",
    "column": "mask",
    "classes": None,
    "head": "seg_cdae",
    "head_kwargs": {"skips": True},
    "loss": "bce_dice",
}
CLS = {
    "name": "abnormal",
    "kind": "classification",
    "column": "abnormal",
    "classes": ["healthy", "sick"],
    "head": "classification",
    "head_kwargs": {},
    "loss": "cross_entropy",
}


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> tuple[Path, MultiTaskModel]:
    torch.manual_seed(0)
    bb = build_backbone("cdae", preset="tiny")
    model = MultiTaskModel(
        bb,
        {
            "lung": build_head("seg_cdae", bb, preset="tiny", skips=True),
            "abnormal": build_head("classification", bb, num_classes=2, preset="tiny"),
        },
    )
    # Non-trivial batch-norm statistics, so a missed buffer would change the outputs.
    model.train()
    with torch.no_grad():
        model(torch.randn(4, 1, SIZE, SIZE))
    model.eval()
    path = tmp_path_factory.mktemp("model") / "checkpoint"
    save_model_dir(path, model, _meta([SEG, CLS]))
    return path, model


def _write_dicom(path: Path, pixels: np.ndarray) -> Path:
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID, ds.SOPInstanceUID = (
        meta.MediaStorageSOPClassUID,
        meta.MediaStorageSOPInstanceUID,
    )
    ds.Modality = "CR"
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.PixelData = pixels.astype(np.uint16).tobytes()
    ds.save_as(path, enforce_file_format=True)
    return path


def _images(folder: Path) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    gray = rng.integers(0, 256, (40, 50), dtype=np.uint8)  # H=40, W=50: not square, not 32
    png, jpg = folder / "a.png", folder / "b.jpg"
    cv2.imwrite(str(png), gray)
    cv2.imwrite(str(jpg), gray)
    dcm = _write_dicom(folder / "c.dcm", rng.integers(0, 4096, (36, 44)))
    bad = folder / "broken.png"
    bad.write_bytes(b"not an image at all")
    return [png, jpg, dcm, bad]


def test_load_model_dir_reproduces_saved_model(model_dir):
    path, model = model_dir
    loaded, meta = load_model_dir(path)
    assert meta["image_size"] == SIZE and [t["name"] for t in meta["tasks"]] == ["lung", "abnormal"]
    assert not loaded.training
    x = torch.randn(2, 1, SIZE, SIZE)
    with torch.no_grad():
        want, got = model(x), loaded(x)
    for task in ("lung", "abnormal"):
        assert torch.equal(want[task], got[task])


def test_load_model_dir_names_missing_file(tmp_path):
    with pytest.raises(UserError, match="model.json"):
        load_model_dir(tmp_path)


@pytest.mark.parametrize("meta, says", [
    ("{}", "no 'backbone', 'tasks', 'image_size' in model.json"),
    ("[1, 2]", "a JSON object is expected"),
    ("{not json", "not a readable model.json"),
    ('{"backbone": {"name": "cdae"}, "tasks": [], "image_size": 64}', "weights do not fit"),
], ids=["keys missing", "not an object", "not JSON", "weights of another model"])
def test_a_broken_model_folder_is_one_error_line(model_dir, tmp_path, capsys, meta, says):
    """A model.json from another version or edited by hand: `umsrep predict` exits 2 with one
    line naming the file, no traceback."""
    path, _ = model_dir
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "model.pt").write_bytes((path / "model.pt").read_bytes())
    (bad / "model.json").write_text(meta)
    image = _images(tmp_path / "in")[0]
    assert cli_main(["predict", str(bad), str(image), "-o", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"error: {bad}") and says in err[0], err


def test_predict_png_jpeg_dicom_and_unreadable(model_dir, tmp_path):
    path, model = model_dir
    images = _images(tmp_path / "in")
    out = tmp_path / "out"
    df = predict_images(path, images, out)
    csv = pd.read_csv(out / "predictions.csv")
    assert list(csv["image"]) == [str(p) for p in images]
    assert csv["error"].iloc[:3].isna().all()
    assert "broken.png" in csv["error"].iloc[3] and csv["abnormal"].isna().iloc[3]
    assert {"lung_mask", "abnormal", "abnormal_prob", "abnormal_gradcam", "action"} <= set(csv)
    assert set(csv["abnormal"].iloc[:3]) <= {"healthy", "sick"}
    assert ((csv["abnormal_prob"].iloc[:3] >= 0.5) & (csv["abnormal_prob"].iloc[:3] <= 1)).all()
    expected_action = csv["abnormal"].iloc[:3].map({"sick": "refer", "healthy": "routine"})
    assert list(csv["action"].iloc[:3]) == list(expected_action)
    assert pd.isna(csv["action"].iloc[3])
    sizes = {"a": (40, 50), "b": (40, 50), "c": (36, 44)}
    for stem, shape in sizes.items():
        mask = cv2.imread(str(out / f"{stem}_lung_mask.png"), cv2.IMREAD_UNCHANGED)
        assert mask.shape == shape and set(np.unique(mask)) <= {0, 255}
        cam = cv2.imread(str(out / f"{stem}_abnormal_gradcam.png"), cv2.IMREAD_UNCHANGED)
        assert cam.shape == (*shape, 3)
    assert not list(out.glob("broken*"))
    # The CSV's class and mask agree with the model run directly on the normalized PNG.
    x, _ = normalize_image(cv2.imread(str(images[0]), cv2.IMREAD_UNCHANGED), SIZE)
    with torch.no_grad():
        direct = model(x)
    assert df["abnormal"].iloc[0] == CLS["classes"][int(direct["abnormal"].argmax())]
    prob = cv2.resize(
        torch.sigmoid(direct["lung"])[0, 0].numpy(), (50, 40), interpolation=cv2.INTER_LINEAR
    )
    mask = cv2.imread(str(out / "a_lung_mask.png"), cv2.IMREAD_UNCHANGED)
    assert np.array_equal(mask > 0, prob > 0.5)


def test_denoised_input_baseline_and_denoise_output(tmp_path):
    from umsrep.strategies import DenoisedInput

    torch.manual_seed(1)
    den_bb = build_backbone("cdae", preset="tiny")
    denoiser = MultiTaskModel(den_bb, {"denoise": build_head("denoise", den_bb, preset="tiny")})
    bb = build_backbone("cdae", preset="tiny")
    clf = MultiTaskModel(
        bb, {"abnormal": build_head("classification", bb, num_classes=2, preset="tiny")}
    )
    base_dir = tmp_path / "baseline"
    save_model_dir(
        base_dir,
        DenoisedInput(denoiser, clf).eval(),
        _meta([CLS], kind="baseline", baseline_arch="same", denoised_input=True),
    )
    den_dir = tmp_path / "backbone"
    den_task = {
        "name": "denoise",
        "kind": "denoise",
        "column": "",
        "classes": None,
        "head": "denoise",
        "head_kwargs": {},
        "loss": "mse",
    }
    save_model_dir(den_dir, denoiser.eval(), _meta([den_task], rules=[]))
    loaded, _ = load_model_dir(base_dir)
    assert isinstance(loaded, DenoisedInput)
    x = torch.randn(1, 1, SIZE, SIZE)
    with torch.no_grad():
        assert torch.equal(
            loaded(x)["abnormal"], DenoisedInput(denoiser, clf).eval()(x)["abnormal"]
        )
    img = tmp_path / "x.png"
    cv2.imwrite(str(img), np.random.default_rng(2).integers(0, 256, (45, 30), dtype=np.uint8))
    df = predict_images(base_dir, [img], tmp_path / "o1")
    assert (tmp_path / "o1" / df["abnormal_gradcam"].iloc[0]).is_file()
    predict_images(den_dir, [img], tmp_path / "o2")
    denoised = cv2.imread(str(tmp_path / "o2" / "x_denoised.png"), cv2.IMREAD_UNCHANGED)
    assert denoised.shape == (45, 30) and denoised.dtype == np.uint8


def test_cli_predict_exit_codes(model_dir, tmp_path):
    path, _ = model_dir
    images = _images(tmp_path / "in")
    assert cli_main(["predict", str(path), *map(str, images), "-o", str(tmp_path / "o")]) == 0
    assert len(pd.read_csv(tmp_path / "o" / "predictions.csv")) == 4
    bad = images[-1]
    assert cli_main(["predict", str(path), str(bad), "-o", str(tmp_path / "o2")]) == 1


def test_predict_real_dicom_and_jpeg(model_dir, tmp_path):
    dcm = sorted((REAL / "rsna-pneumonia").rglob("*.dcm"))[:1]
    jpg = sorted((REAL / "chest_xray").rglob("*.jpeg"))[:1]
    if not dcm or not jpg:
        pytest.skip(f"real sample data not found under {REAL}")
    df = predict_images(model_dir[0], dcm + jpg, tmp_path)
    assert df["error"].isna().all()
    for src, stem in ((dcm[0], dcm[0].stem), (jpg[0], jpg[0].stem)):
        from umsrep.data.io import load_image

        mask = cv2.imread(str(tmp_path / f"{stem}_lung_mask.png"), cv2.IMREAD_UNCHANGED)
        assert mask.shape == load_image(src).shape


def test_predict_undoes_the_fit_and_applies_tta_and_cleanup(model_dir, tmp_path, monkeypatch):
    """A model folder that says fit pad + TTA + clean-up: the mask written for a non-square
    image is the TTA map of that image at its own size, thresholded and cleaned."""
    import umsrep.predict as predict_mod

    _, model = model_dir
    cleanup = {"min_fraction": 0.2, "fill_holes": True}
    path = tmp_path / "pad-model"
    save_model_dir(path, model, _meta([SEG, CLS], fit="pad", tta=["pad", "stretch"],
                                      mask_cleanup=cleanup))
    png = _images(tmp_path / "in")[0]  # 40 x 50
    prob = np.zeros((40, 50), np.float32)
    prob[5:35, 5:20] = 0.9  # a lung with a hole ...
    prob[15:20, 10:14] = 0.1
    prob[1:3, 45:48] = 0.9  # ... and an island
    calls = []

    def fake_tta(model, task, pixels, size, fits, device="cpu"):
        calls.append((task, pixels.shape, size, list(fits)))
        return prob

    monkeypatch.setattr(predict_mod, "segment_original", fake_tta)
    predict_images(path, [png], tmp_path / "out")
    written = cv2.imread(str(tmp_path / "out" / "a_lung_mask.png"), cv2.IMREAD_GRAYSCALE) > 0
    assert calls == [("lung", (40, 50), SIZE, ["pad", "stretch"])]
    want = np.zeros((40, 50), bool)
    want[5:35, 5:20] = True  # hole filled, island gone
    np.testing.assert_array_equal(written, want)
    pixels = cv2.imread(str(png), cv2.IMREAD_GRAYSCALE)
    x_pad, _ = normalize_image(pixels, SIZE, "pad")
    x_stretch, _ = normalize_image(pixels, SIZE, "stretch")
    assert not torch.equal(x_pad, x_stretch)  # the two fits really are different inputs


def test_predict_keeps_the_largest_regions_that_model_json_asks_for(model_dir, tmp_path,
                                                                    monkeypatch):
    """``mask_cleanup.keep_largest: 2`` in model.json: of three regions, the smallest goes."""
    import umsrep.predict as predict_mod

    _, model = model_dir
    path = tmp_path / "largest-model"
    save_model_dir(path, model, _meta([SEG, CLS], fit="pad", tta=["pad", "stretch"],
                                      mask_cleanup={"min_fraction": 0.0, "fill_holes": False,
                                                    "keep_largest": 2}))
    png = _images(tmp_path / "in")[0]  # 40 x 50
    prob = np.zeros((40, 50), np.float32)
    prob[5:30, 3:18] = 0.9  # right lung, 375 px
    prob[5:30, 25:40] = 0.9  # left lung, 375 px
    prob[33:40, 0:50] = 0.9  # "lung" in a bottom band, 350 px: too large for min_component
    monkeypatch.setattr(predict_mod, "segment_original", lambda *a, **k: prob)
    predict_images(path, [png], tmp_path / "out")
    written = cv2.imread(str(tmp_path / "out" / "a_lung_mask.png"), cv2.IMREAD_GRAYSCALE) > 0
    want = prob > 0.5
    want[33:40] = False
    np.testing.assert_array_equal(written, want)


def test_predict_with_two_model_folders_averages_their_probabilities(model_dir, tmp_path):
    """Two folders: the class is the argmax of the mean softmax, its probability that mean's
    maximum, and the mask the mean sigmoid map cut at the mean of the folders' thresholds."""
    first, model_a = model_dir
    torch.manual_seed(7)
    bb = build_backbone("cdae", preset="tiny")
    model_b = MultiTaskModel(
        bb,
        {
            "lung": build_head("seg_cdae", bb, preset="tiny", skips=True),
            "abnormal": build_head("classification", bb, num_classes=2, preset="tiny"),
        },
    ).eval()
    a_dir, b_dir = tmp_path / "a", tmp_path / "b"
    save_model_dir(a_dir, model_a, _meta([SEG, CLS], threshold={"lung": 0.45}))
    save_model_dir(b_dir, model_b, _meta([SEG, CLS], threshold={"lung": 0.55}))
    png = _images(tmp_path / "in")[0]  # 40 x 50
    out = tmp_path / "out"
    assert cli_main(["predict", str(a_dir), str(b_dir), str(png), "-o", str(out)]) == 0
    csv = pd.read_csv(out / "predictions.csv")
    x, _ = normalize_image(cv2.imread(str(png), cv2.IMREAD_UNCHANGED), SIZE)
    with torch.no_grad():
        outs = [model_a(x), model_b(x)]
    probs = np.mean([torch.softmax(o["abnormal"], 1)[0].numpy() for o in outs], axis=0)
    assert csv["abnormal"].iloc[0] == CLS["classes"][int(probs.argmax())]
    assert csv["abnormal_prob"].iloc[0] == pytest.approx(float(probs.max()), abs=1e-6)
    for c, p in zip(CLS["classes"], probs, strict=True):  # every class, for ROC curves
        assert csv[f"abnormal_p_{c}"].iloc[0] == pytest.approx(float(p), abs=1e-6)
    lung = np.mean([torch.sigmoid(o["lung"])[0, 0].numpy() for o in outs], axis=0)
    want = cv2.resize(lung, (50, 40), interpolation=cv2.INTER_LINEAR) > 0.5  # (0.45 + 0.55) / 2
    mask = cv2.imread(str(out / "a_lung_mask.png"), cv2.IMREAD_UNCHANGED) > 0
    np.testing.assert_array_equal(mask, want)
    single = predict_images(a_dir, [png], tmp_path / "one")  # not what one model alone says
    assert single["abnormal_prob"].iloc[0] != pytest.approx(csv["abnormal_prob"].iloc[0])


def test_predict_refuses_to_average_models_of_other_tasks(model_dir, tmp_path):
    from umsrep.predict import load_models

    path, model = model_dir
    other = tmp_path / "other"
    save_model_dir(other, model, _meta([SEG, {**CLS, "classes": ["no", "yes"]}]))
    with pytest.raises(ValueError, match="tasks differ"):
        load_models([path, other])


def test_predict_refuses_to_average_models_trained_on_other_contrast(model_dir, tmp_path):
    """Two folders of the same tasks, one trained on CLAHE images: averaging them would feed
    one model images it never saw."""
    from umsrep.predict import load_models

    _, model = model_dir
    plain, clahe = tmp_path / "plain", tmp_path / "clahe"
    save_model_dir(plain, model, _meta([SEG, CLS]))
    save_model_dir(clahe, model, _meta([SEG, CLS], contrast="clahe"))
    with pytest.raises(ValueError, match="contrast or tasks differ"):
        load_models([plain, clahe])
    again = tmp_path / "again"
    save_model_dir(again, model, _meta([SEG, CLS]))
    load_models([plain, again])


def test_a_model_of_another_contrast_version_is_refused(model_dir, tmp_path, capsys):
    """model.json records the contrast method with its version; a model trained under
    another version of the method is refused, not fed other images. Without a recorded
    version (folders written before it), the method is taken at its word."""
    from umsrep.data.contrast import contrast_key

    _, model = model_dir
    png = _images(tmp_path / "in")[0]
    old = tmp_path / "old"
    save_model_dir(old, model, _meta([SEG, CLS], contrast="clahe", contrast_key="clahe-v1"))
    assert contrast_key("clahe") != "clahe-v1"
    with pytest.raises(UserError, match="normalized by clahe-v1"):
        predict_images(old, [png], tmp_path / "out-old")
    legacy = tmp_path / "legacy"
    save_model_dir(legacy, model, _meta([SEG, CLS], contrast="clahe"))
    predict_images(legacy, [png], tmp_path / "out-legacy")
    current = tmp_path / "current"
    save_model_dir(current, model, _meta([SEG, CLS], contrast="clahe",
                                         contrast_key=contrast_key("clahe")))
    predict_images(current, [png], tmp_path / "out-current")


def test_predict_applies_the_contrast_model_json_names(model_dir, tmp_path, monkeypatch):
    """``contrast: clahe`` in model.json: the model and the TTA see the CLAHE image, as the
    training cache did; the overlay still shows the image as read."""
    import umsrep.predict as predict_mod
    from umsrep.data.contrast import apply_contrast

    _, model = model_dir
    path = tmp_path / "clahe-model"
    save_model_dir(path, model, _meta([SEG, CLS], fit="pad", tta=["pad"], contrast="clahe"))
    png = _images(tmp_path / "in")[0]
    seen = {}
    real_normalize = predict_mod.normalize_image

    def spy_normalize(pixels, size, fit="stretch"):
        seen["classify"] = pixels.copy()
        return real_normalize(pixels, size, fit)

    def spy_tta(model, task, pixels, size, fits, device="cpu"):
        seen["segment"] = pixels.copy()
        return np.zeros(pixels.shape, np.float32)

    monkeypatch.setattr(predict_mod, "normalize_image", spy_normalize)
    monkeypatch.setattr(predict_mod, "segment_original", spy_tta)
    predict_images(path, [png], tmp_path / "out")
    raw = cv2.imread(str(png), cv2.IMREAD_UNCHANGED)
    want = apply_contrast(raw, "clahe")
    assert not np.array_equal(want, raw)
    np.testing.assert_array_equal(seen["classify"], want)
    np.testing.assert_array_equal(seen["segment"], want)


def test_predict_with_a_runner_checkpoint_agrees_with_the_runners_own_scores(runner_run_dir,
                                                                            tmp_path):
    """A stage's ``checkpoint/`` as the runner wrote it (``runner_run_dir``, tests/conftest.py):
    ``umsrep predict`` on the external test images' files gives the class probabilities the
    runner recorded for them in ``predictions.parquet`` when it evaluated that stage."""
    from umsrep.runner.data import load_run_data

    stages = pd.read_parquet(runner_run_dir / "stages.parquet")
    checkpoint = Path(stages.query("fold == 0 and strategy == 'joint'")["checkpoint"].item())
    _, meta = load_model_dir(checkpoint)
    assert (meta["stage"], meta["image_size"]) == ("f0-joint", SIZE)
    assert [t["name"] for t in meta["tasks"]] == ["lung", "abnormal"]
    data = load_run_data(runner_run_dir)
    test = data.index.iloc[data.external]
    assert len(test) == 16
    df = predict_images(checkpoint, [Path(p) for p in test["image_path"]], tmp_path)
    assert df["error"].isna().all()
    preds = pd.read_parquet(runner_run_dir / "predictions.parquet").query(
        "fold == 0 and strategy == 'joint' and split == 'test' and task == 'abnormal'"
    ).set_index("sample_id").loc[test["sample_id"]]
    # the runner's score of a binary task is the probability of class 1
    np.testing.assert_allclose(df["abnormal_p_1"], preds["score"], atol=1e-5)
    assert df["abnormal"].astype(str).tolist() == preds["y_pred"].astype(str).tolist()
    for stem, (h, w) in zip(test["image_path"].map(lambda p: Path(p).stem),
                            zip(test["height"], test["width"], strict=True), strict=True):
        mask = cv2.imread(str(tmp_path / f"{stem}_lung_mask.png"), cv2.IMREAD_UNCHANGED)
        assert mask.shape == (h, w)  # back at the file's own size (64 px), not 32
