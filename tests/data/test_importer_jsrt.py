"""The JSRT importer on a tiny synthetic copy of its layout, and its extra mask columns end to end
(manifest -> cache -> dataset -> a segmentation task on ``mask_heart``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from tests.data.conftest import random_image, write_png
from umsrep.config import ConfigError
from umsrep.data.cache import load_cache, prepare_cache
from umsrep.data.dataset import CachedDataset, TaskLabel, build_cxr_augment
from umsrep.data.importers import run_import
from umsrep.data.io import load_mask
from umsrep.tasks import Task

S = 32
ORGANS = ("left lung", "right lung", "heart", "left clavicle", "right clavicle")
# organ -> (rows, cols) of its rectangle on the 32x32 image; lungs and clavicles overlap a little
BOXES = {
    "right lung": (slice(6, 28), slice(3, 14)),
    "left lung": (slice(6, 28), slice(12, 29)),
    "heart": (slice(16, 26), slice(10, 20)),
    "right clavicle": (slice(3, 6), slice(2, 16)),
    "left clavicle": (slice(4, 7), slice(14, 30)),
}


def box(*organs: str, size: int = S) -> np.ndarray:
    """0/1 mask [size, size]: the union of the organs' rectangles, drawn at ``size``."""
    out = np.zeros((size, size), np.uint8)
    k = size / S
    for organ in organs:
        rows, cols = BOXES[organ]
        out[int(rows.start * k) : int(rows.stop * k), int(cols.start * k) : int(cols.stop * k)] = 1
    return out


def write_case(root: Path, name: str, seed: int, organs=ORGANS, mask_size: int = S) -> None:
    write_png(root / "images" / f"{name}.png", random_image(S, seed=seed))
    for organ in organs:
        write_png(root / "masks" / organ / f"{name}.png", box(organ, size=mask_size) * 255)


@pytest.fixture
def jsrt(tmp_path) -> Path:
    """JPCLN001 complete; JPCNN002 masks at half size; JPCLN003 without heart; JPCNN004 a
    truncated image; JPCLN005 a heart mask of the wrong aspect ratio; a misnamed file."""
    root = tmp_path / "JSRT"
    write_case(root, "JPCLN001", 1)
    write_case(root, "JPCNN002", 2, mask_size=S // 2)
    write_case(root, "JPCLN003", 3, organs=[o for o in ORGANS if o != "heart"])
    write_case(root, "JPCNN004", 4)
    data = (root / "images" / "JPCNN004.png").read_bytes()
    (root / "images" / "JPCNN004.png").write_bytes(data[:-30])
    write_case(root, "JPCLN005", 5)
    write_png(root / "masks" / "heart" / "JPCLN005.png", np.zeros((S, S // 2), np.uint8))
    write_png(root / "images" / "scan_07.png", random_image(S, seed=7))
    return root


@pytest.fixture
def imported(jsrt, tmp_path):
    return run_import("jsrt", jsrt.parent, tmp_path / "out" / "jsrt.parquet", workers=1)


def test_rows_and_nodule_label_from_file_name(imported):
    df = imported.manifest
    assert df["sample_id"].tolist() == ["JPCLN001", "JPCLN003", "JPCNN002"]
    assert df["nodule"].tolist() == [1, 1, 0]
    assert "abnormal" not in df.columns  # a TB task on `abnormal` never scores JSRT nodules
    assert imported.manifest.attrs["label_columns"] == ["nodule"]
    assert set(df["dataset"]) == {"jsrt"} and (df["patient_id"] == df["sample_id"]).all()


def test_lung_mask_is_the_union_of_left_and_right(imported, tmp_path):
    df = imported.manifest.set_index("sample_id")
    path = Path(df.loc["JPCLN001", "mask_path"])
    assert path == (tmp_path / "out" / "jsrt.masks" / "JPCLN001_mask.png").resolve()
    lungs = load_mask(path)
    assert np.array_equal(lungs, box("left lung", "right lung"))
    assert lungs.sum() < box("left lung").sum() + box("right lung").sum()  # overlap counted once
    # masks stored at half size are merged at their own size, not stretched to the image
    assert np.array_equal(
        load_mask(df.loc["JPCNN002", "mask_path"]), box("left lung", "right lung", size=S // 2)
    )


def test_heart_file_as_is_and_clavicles_merged(imported, jsrt):
    df = imported.manifest.set_index("sample_id")
    assert df.loc["JPCLN001", "mask_heart_path"] == str(
        (jsrt / "masks" / "heart" / "JPCLN001.png").resolve()
    )
    clav = load_mask(df.loc["JPCLN001", "mask_clavicle_path"])
    assert np.array_equal(clav, box("left clavicle", "right clavicle"))
    assert df.loc["JPCLN001", "mask_clavicle_path"].endswith("JPCLN001_mask_clavicle.png")


def test_missing_heart_leaves_only_that_column_empty(imported):
    df = imported.manifest.set_index("sample_id")
    assert pd.isna(df.loc["JPCLN003", "mask_heart_path"])
    assert df.loc["JPCLN003", ["mask_path", "mask_clavicle_path"]].notna().all()


def test_quarantine_lists_each_bad_file_with_its_reason(imported, jsrt):
    q = pd.read_csv(imported.quarantine_path)
    reasons = dict(zip(q["path"], q["reason"], strict=True))
    assert len(reasons) == 4
    assert "heart mask missing" in reasons[str(jsrt / "masks" / "heart" / "JPCLN003.png")]
    assert "truncated" in reasons[str(jsrt / "images" / "JPCNN004.png")]
    aspect = reasons[str(jsrt / "masks" / "heart" / "JPCLN005.png")]
    assert "mask is 16x32, image is 32x32" in aspect and "aspect ratio" in aspect
    assert "JPCLN###.png" in reasons[str(jsrt / "images" / "scan_07.png")]


def test_cache_keeps_every_mask_column_at_the_image_geometry(imported, tmp_path):
    cache = load_cache(prepare_cache(imported.manifest_path, size=S, out=tmp_path / "c", workers=1))
    assert sorted(cache.extra_masks) == ["mask_clavicle", "mask_heart"]
    idx = cache.index.set_index("sample_id")
    assert idx["has_mask_heart"].tolist() == [True, False, True]
    assert idx["has_mask"].all() and idx["has_mask_clavicle"].all()
    heart = cache.mask_array("mask_heart")
    assert np.array_equal(heart[0], box("heart")) and heart[1].max() == 0

    # the half-size masks of JPCNN002 come back at the image's size: each pixel doubled
    def doubled(mask: np.ndarray) -> np.ndarray:
        return mask.repeat(2, axis=0).repeat(2, axis=1)

    assert np.array_equal(cache.masks[2], doubled(box("left lung", "right lung", size=S // 2)))
    assert np.array_equal(heart[2], doubled(box("heart", size=S // 2)))
    with pytest.raises(KeyError, match="mask_liver"):
        cache.mask_array("mask_liver")


def test_segmentation_task_on_mask_heart_reads_the_heart(imported, tmp_path):
    cache = load_cache(prepare_cache(imported.manifest_path, size=S, out=tmp_path / "c", workers=1))
    heart = Task(name="heart", kind="segmentation", column="mask_heart")
    lung = Task(name="lung", kind="segmentation")
    ds = CachedDataset(cache, tasks={t.name: TaskLabel(t.column) for t in (heart, lung)})
    batch = torch.utils.data.default_collate([ds[i] for i in range(3)])
    target, valid = heart.target(batch)
    assert valid.tolist() == [True, False, True]
    assert torch.equal(target[0, 0], torch.from_numpy(box("heart")).float())
    assert torch.equal(
        lung.target(batch)[0][0, 0], torch.from_numpy(box("left lung", "right lung")).float()
    )
    assert [int(v) for v in batch["labels"]["heart"]] == [1, -1, 1]


def test_augmentation_moves_every_mask_with_the_image(imported, tmp_path):
    cache = load_cache(prepare_cache(imported.manifest_path, size=S, out=tmp_path / "c", workers=1))
    labels = {"heart": TaskLabel("mask_heart")}
    plain = CachedDataset(cache, indices=[0], tasks=labels)[0]
    shift = build_cxr_augment(
        rotation=0, translate=0.2, scale=(1, 1), brightness=0, contrast=0, aspect=None,
        geometry=1.0,
    )
    torch.manual_seed(3)
    moved = CachedDataset(cache, indices=[0], tasks=labels, augment=shift)[0]

    # the heart lies well inside the image: its top-left corner gives the (integer) shift
    corner = [
        torch.nonzero(m[0]).min(dim=0).values for m in (plain["mask_heart"], moved["mask_heart"])
    ]
    dy, dx = (corner[1] - corner[0]).tolist()
    assert (dy, dx) != (0, 0)  # the seed gives a real shift
    lungs = np.zeros((S + 2 * S, S + 2 * S), np.float32)  # shift with zero fill, by hand
    lungs[S + dy : 2 * S + dy, S + dx : 2 * S + dx] = plain["mask"][0].numpy()
    assert np.array_equal(moved["mask"][0].numpy(), lungs[S : 2 * S, S : 2 * S])


def test_segmentation_column_names_a_mask():
    assert Task(name="h", kind="segmentation", column="mask_heart").column == "mask_heart"
    assert Task(name="l", kind="segmentation").column == "mask"
    with pytest.raises(ValueError, match="mask_<name>"):
        Task(name="h", kind="segmentation", column="heart")
    with pytest.raises(ConfigError, match=r"^t.column: .*mask_<name>"):
        Task.from_dict({"name": "h", "kind": "segmentation", "column": "heart"}, "t")
