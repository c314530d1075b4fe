"""Sample galleries: files per task kind, the per-stage table and the run's index."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import cv2
import numpy as np
import pandas as pd
import pytest
import torch

from umsrep.data.cache import load_cache, prepare_cache
from umsrep.data.synthetic import synthesize
from umsrep.models import build_backbone, build_head
from umsrep.models.multitask import MultiTaskModel
from umsrep.runner.samples import MIN_DISPLAY, compose_samples, write_samples
from umsrep.schema import SAMPLES_COLUMNS
from umsrep.tasks import Task

SIZE = 32
DENOISE = Task(name="denoise", kind="denoise", head="denoise", loss="mse")
LUNG = Task(name="lung", kind="segmentation", column="mask", head="seg_cdae")
ABNORMAL = Task(name="abnormal", kind="classification", column="abnormal", classes=("0", "1"))


@pytest.fixture(scope="module")
def ctx(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    manifest = synthesize("cxr", 6, SIZE, 0, out_dir=root / "syn")
    cache = prepare_cache(manifest, SIZE, root / "cache", workers=1)
    index = load_cache(cache).index
    # One image without an abnormality label: it must never reach the Grad-CAM gallery.
    index.loc[0, "abnormal"] = None
    return SimpleNamespace(data=SimpleNamespace(index=index, cache_path=cache))


@pytest.fixture(scope="module")
def model() -> MultiTaskModel:
    torch.manual_seed(0)
    bb = build_backbone("cdae", preset="tiny")
    return MultiTaskModel(
        bb,
        {
            "denoise": build_head("denoise", bb, preset="tiny"),
            "lung": build_head("seg_cdae", bb, preset="tiny"),
            "abnormal": build_head("classification", bb, num_classes=2, preset="tiny"),
        },
    )


def test_write_samples_files_and_stage_table(ctx, model, tmp_path):
    model.train()
    rows = write_samples(
        tmp_path, "f0-joint", 0, "joint", model, [DENOISE, LUNG, ABNORMAL], np.arange(6), ctx, n=3
    )
    assert model.training  # mode restored
    assert list(rows.columns) == list(SAMPLES_COLUMNS)
    assert rows.groupby("kind").size().to_dict() == {"denoise": 3, "segmentation": 3, "gradcam": 3}
    assert set(rows["strategy"]) == {"joint"} and set(rows["fold"]) == {0}
    cam = rows[rows["kind"] == "gradcam"]
    assert "cxr-00000" not in set(cam["sample_id"])  # unlabelled image skipped
    labels = ctx.data.index.set_index("sample_id")["abnormal"]
    for r in cam.itertuples():
        assert f"_true-{int(labels[r.sample_id])}_pred-" in r.path
    for r in rows.itertuples():
        assert r.path.startswith("samples/f0-joint/")
        img = cv2.imread(str(tmp_path / r.path), cv2.IMREAD_UNCHANGED)
        if r.kind == "denoise":
            assert img.shape == (MIN_DISPLAY, 3 * MIN_DISPLAY + 4)
        else:
            assert img.shape == (MIN_DISPLAY, MIN_DISPLAY, 3)
    seg = cv2.imread(str(tmp_path / rows[rows["kind"] == "segmentation"]["path"].iloc[0]))
    green = (seg[..., 1] == 255) & (seg[..., 0] == 0) & (seg[..., 2] == 0)
    assert green.any()  # the ground-truth contour is drawn
    stored = pd.read_parquet(tmp_path / "stages" / "f0-joint" / "samples.parquet")
    pd.testing.assert_frame_equal(stored, rows)


def test_denoise_triptych_shows_noisy_denoised_clean(ctx, model, tmp_path):
    rows = write_samples(
        tmp_path, "f0-backbone", 0, "shared", model, [DENOISE], np.arange(2), ctx, n=1
    )
    img = cv2.imread(str(tmp_path / rows["path"].iloc[0]), cv2.IMREAD_UNCHANGED).astype(float)
    d = MIN_DISPLAY
    noisy, clean = img[:, :d], img[:, 2 * d + 4 :]
    # Gaussian sigma 30 (0-255) leaves the noisy panel far from the clean one.
    assert 10 < np.abs(noisy - clean).mean() < 60


def test_denoise_triptych_panels_are_the_noisy_input_the_output_and_the_image():
    """Each panel, to the pixel: the seeded noisy input, the model's output on it, the image."""
    from umsrep.noise import add_noise
    from umsrep.runner.samples import NOISE_KIND, NOISE_SIGMA, _to_uint8, denoise_triptych

    class Halves(torch.nn.Module):  # a "denoiser" whose output differs from its input
        def forward_task(self, x, name):
            assert name == DENOISE.name
            return 0.5 * x

    g = torch.Generator().manual_seed(0)
    x = torch.rand(2, 1, SIZE, SIZE, generator=g) - 0.5
    mean = torch.tensor([0.5, 0.4])
    pics = denoise_triptych(Halves(), DENOISE, {"image": x, "image_mean": mean}, seed=4)
    noisy = add_noise(x, mean, NOISE_KIND, NOISE_SIGMA,
                      generator=torch.Generator().manual_seed(4))
    m, d = mean.view(-1, 1, 1, 1), MIN_DISPLAY
    assert len(pics) == 2
    for i, pic in enumerate(pics):
        assert pic.shape == (d, 3 * d + 4)
        panels = (pic[:, :d], pic[:, d + 2 : 2 * d + 2], pic[:, 2 * d + 4 :])
        for got, t in zip(panels, (noisy, 0.5 * noisy, x), strict=True):
            np.testing.assert_array_equal(got, _to_uint8((t + m)[i, 0], SIZE))


def test_compose_samples_merges_stages_and_is_readable_by_analysis(ctx, model, tmp_path):
    assert compose_samples(tmp_path) == 0 and not (tmp_path / "samples" / "index.parquet").exists()
    write_samples(tmp_path, "f0-joint", 0, "joint", model, [LUNG], np.arange(6), ctx, n=2)
    write_samples(
        tmp_path, "f0-baseline-abnormal", 0, "baseline", model, [ABNORMAL], np.arange(6), ctx, n=2
    )
    # Writing a stage twice does not duplicate its rows.
    write_samples(tmp_path, "f0-joint", 0, "joint", model, [LUNG], np.arange(6), ctx, n=2)
    assert compose_samples(tmp_path) == 4
    index = pd.read_parquet(tmp_path / "samples" / "index.parquet")
    assert sorted(index["strategy"].unique()) == ["baseline", "joint"]
    import analysis.load as analysis
    loaded = analysis.load_samples(tmp_path)
    assert len(loaded) == 4 and all(Path(f).is_file() for f in loaded["file"])
