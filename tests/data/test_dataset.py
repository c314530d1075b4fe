import numpy as np
import pandas as pd
import pytest
import torch
from torch.utils.data import DataLoader

from tests.data.conftest import random_image, write_png
from umsrep.data.cache import load_cache, prepare_cache
from umsrep.data.dataset import CachedDataset, TaskLabel, build_cxr_augment
from umsrep.data.importers import run_import


@pytest.fixture
def cache(tmp_path):
    src = tmp_path / "src"
    for i in range(4):
        write_png(src / f"im{i}.png", random_image(32, seed=i))
    m = np.zeros((32, 32), np.uint8)
    m[8:24, 4:12] = 255
    write_png(src / "m0.png", m)
    pd.DataFrame({
        "image_path": [f"im{i}.png" for i in range(4)],
        "mask_path": ["m0.png", "", "", ""],
        "patient_id": list("abcd"),
        "diagnosis": ["normal", "viral", "bacterial", ""],
        "abnormal": ["0", "1", "1", ""],
    }).to_csv(src / "t.csv", index=False)
    path = run_import("generic", src / "t.csv", tmp_path / "t.parquet").manifest_path
    return load_cache(prepare_cache(path, size=32, out=tmp_path / "c", workers=1))


def test_item_is_mean_normalized_and_reversible(cache):
    item = CachedDataset(cache)[1]
    assert item["image"].shape == (1, 32, 32) and item["image"].dtype == torch.float32
    assert abs(float(item["image"].mean())) < 1e-6
    restored = (item["image"] + item["image_mean"]) * 255
    assert torch.allclose(restored[0], torch.from_numpy(cache.images[1].astype(np.float32)),
                          atol=1e-3)
    assert item["sample_id"] == "im1" and not item["has_mask"] and item["mask"].max() == 0


def test_labels_by_classes_integer_and_mask(cache):
    tasks = {
        "viral_vs_normal": TaskLabel("diagnosis", ("normal", "viral")),
        "abnormal": TaskLabel("abnormal"),
        "lungs": TaskLabel("mask"),
    }
    ds = CachedDataset(cache, indices=[0, 1, 2, 3], tasks=tasks)
    got = [{k: int(v) for k, v in ds[i]["labels"].items()} for i in range(4)]
    assert [g["viral_vs_normal"] for g in got] == [0, 1, -1, -1]  # bacterial not a class
    assert [g["abnormal"] for g in got] == [0, 1, 1, -1]
    assert [g["lungs"] for g in got] == [1, -1, -1, -1]
    assert ds[0]["mask"].sum() == 16 * 8


def test_unknown_column_is_an_error(cache):
    with pytest.raises(KeyError, match="nope"):
        CachedDataset(cache, tasks={"t": TaskLabel("nope")})


def test_identity_augment_changes_nothing_and_random_keeps_mask_aligned(cache):
    plain = CachedDataset(cache, indices=[0])[0]
    ident = build_cxr_augment(rotation=0, translate=0, scale=(1, 1), brightness=0, contrast=0,
                              aspect=None)
    same = CachedDataset(cache, indices=[0], augment=ident)[0]
    assert torch.allclose(plain["image"], same["image"]) and torch.equal(plain["mask"], same["mask"])
    torch.manual_seed(0)
    moved = CachedDataset(cache, indices=[0], augment=build_cxr_augment(
        rotation=0, translate=0.2, brightness=0, contrast=0, aspect=None, geometry=1.0))
    out = moved[0]
    assert set(out["mask"].unique().tolist()) <= {0.0, 1.0}
    # image and mask move together: the mask's bright box should still cover the same pixels
    src_vals = torch.from_numpy(cache.images[0].astype(np.float32)) / 255
    box = src_vals[8:24, 4:12]
    masked = (out["image"] + out["image_mean"])[0][out["mask"][0] > 0]
    assert masked.numel() > 0
    assert np.isin(np.round(masked.numpy() * 255), np.round(box.numpy().ravel() * 255)).mean() > 0.9


def test_default_collate_batches(cache):
    batch = next(iter(DataLoader(CachedDataset(cache, tasks={"a": TaskLabel("abnormal")}),
                                 batch_size=4)))
    assert batch["image"].shape == (4, 1, 32, 32) and batch["labels"]["a"].tolist() == [0, 1, 1, -1]
    assert batch["sample_id"] == ["im0", "im1", "im2", "im3"]


def test_robust_augment_runs_on_0_1_pixels_before_normalization_and_repeats(cache):
    from umsrep.data.augment import build_augment

    ds = CachedDataset(cache, indices=[0], tasks={"lungs": TaskLabel("mask")},
                       augment=build_augment("cxr_robust"))
    items = []
    for seed in (3, 3):
        torch.manual_seed(seed)
        items.append([ds[0] for _ in range(4)])
    for a, b in zip(*items, strict=True):
        assert torch.equal(a["image"], b["image"]) and torch.equal(a["mask"], b["mask"])
        restored = a["image"] + a["image_mean"]  # back on 0-1: the transforms worked there
        assert float(restored.min()) >= -1e-6 and float(restored.max()) <= 1 + 1e-6
        assert abs(float(a["image"].mean())) < 1e-5
        assert set(a["mask"].unique().tolist()) <= {0.0, 1.0}
