import json
import os

import cv2
import numpy as np
import pandas as pd
import pytest

from tests.data.conftest import random_image, write_png
from umsrep.data.cache import load_cache, prepare_cache
from umsrep.data.importers import run_import


@pytest.fixture
def manifest(tmp_path):
    src = tmp_path / "src"
    rows = []
    for i in range(4):
        write_png(src / f"im{i}.png", random_image(48, seed=i))
        mask = ""
        if i < 2:
            m = np.zeros((48, 48), np.uint8)
            m[10:30, 5 + i : 25] = 255
            write_png(src / f"im{i}_mask.png", m)
            mask = f"im{i}_mask.png"
        rows.append({"image_path": f"im{i}.png", "mask_path": mask, "patient_id": f"p{i}",
                     "grade": i % 2})
    pd.DataFrame(rows).to_csv(src / "toy.csv", index=False)
    return run_import("generic", src / "toy.csv", tmp_path / "toy.parquet").manifest_path


def test_round_trip_matches_opencv_resize(manifest, tmp_path):
    folder = prepare_cache(manifest, size=32, out=tmp_path / "cache", workers=1)
    cache = load_cache(folder)
    assert cache.images.shape == (4, 32, 32) and cache.images.dtype == np.uint8
    assert isinstance(cache.images, np.memmap)
    src = cv2.imread(str(tmp_path / "src" / "im2.png"), cv2.IMREAD_UNCHANGED)
    assert np.array_equal(cache.images[2], cv2.resize(src, (32, 32), interpolation=cv2.INTER_CUBIC))
    assert cache.index["has_mask"].tolist() == [True, True, False, False]
    assert set(np.unique(cache.masks[:2])) == {0, 1} and cache.masks[2:].max() == 0
    assert cache.index["sample_id"].tolist() == ["im0", "im1", "im2", "im3"]
    assert cache.meta["size"] == 32 and folder.name == cache.meta["key"][:16]


def test_warm_rerun_reuses_and_changes_rebuild(manifest, tmp_path):
    first = prepare_cache(manifest, size=32, out=tmp_path / "cache", workers=1)
    stamp = (first / "images.npy").stat().st_mtime_ns
    created = json.loads((first / "meta.json").read_text())["created"]
    again = prepare_cache(manifest, size=32, out=tmp_path / "cache", workers=1)
    assert again == first and (first / "images.npy").stat().st_mtime_ns == stamp
    assert json.loads((first / "meta.json").read_text())["created"] == created
    assert prepare_cache(manifest, size=16, out=tmp_path / "cache", workers=1) != first
    img = tmp_path / "src" / "im0.png"
    write_png(img, random_image(48, seed=42))
    os.utime(img, ns=(stamp + 10**9, stamp + 10**9))
    changed = prepare_cache(manifest, size=32, out=tmp_path / "cache", workers=1)
    assert changed != first


def test_corrected_labels_reach_the_index_without_decoding_again(manifest, tmp_path):
    """Relabelled rows over the same files: a sibling folder with the same arrays (hard links)
    and the new labels; the first folder keeps its own, and each manifest hits its folder."""
    from umsrep.data.manifest import load_manifest, save_manifest

    first = prepare_cache(manifest, size=32, out=tmp_path / "cache", workers=1)
    df = load_manifest(manifest)
    df["grade"] = 1 - df["grade"]
    fixed = save_manifest(df, tmp_path / "fixed.parquet", df.attrs["label_columns"])
    second = prepare_cache(fixed, size=32, out=tmp_path / "cache", workers=1)
    assert second != first and second.name.startswith(first.name + "-")
    old, new = load_cache(first), load_cache(second)
    assert old.index["grade"].tolist() == [0, 1, 0, 1]
    assert new.index["grade"].tolist() == [1, 0, 1, 0]
    assert new.index["has_mask"].tolist() == old.index["has_mask"].tolist()
    assert np.array_equal(new.images, old.images) and np.array_equal(new.masks, old.masks)
    assert (second / "images.npy").stat().st_ino == (first / "images.npy").stat().st_ino
    assert json.loads((second / "meta.json").read_text())["arrays_of"] == first.name
    assert prepare_cache(fixed, size=32, out=tmp_path / "cache", workers=1) == second
    assert prepare_cache(manifest, size=32, out=tmp_path / "cache", workers=1) == first
    assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == [first.name, second.name]


def test_a_label_column_named_like_a_cache_flag_is_a_label(manifest, tmp_path):
    """A manifest's own ``has_*`` column is a label like any other: a warm rerun hits the same
    folder, and a corrected value of it gets the sibling, with the column once."""
    from umsrep.data.manifest import load_manifest, save_manifest

    df = load_manifest(manifest)
    df["has_nodule"] = [0, 1, 1, 0]
    labels = [*df.attrs["label_columns"], "has_nodule"]
    path = save_manifest(df, tmp_path / "flagged.parquet", labels)
    first = prepare_cache(path, size=32, out=tmp_path / "cache", workers=1)
    assert prepare_cache(path, size=32, out=tmp_path / "cache", workers=1) == first
    df["has_nodule"] = [1, 1, 1, 0]
    fixed = save_manifest(df, tmp_path / "fixed.parquet", labels)
    second = prepare_cache(fixed, size=32, out=tmp_path / "cache", workers=1)
    index = load_cache(second).index
    assert second != first and list(index.columns).count("has_nodule") == 1
    assert index["has_nodule"].tolist() == [1, 1, 1, 0]
    assert index["has_mask"].tolist() == [True, True, False, False]


def test_file_broken_after_import_is_quarantined_not_fatal(manifest, tmp_path):
    (tmp_path / "src" / "im1.png").write_bytes(b"broken")
    cache = load_cache(prepare_cache(manifest, size=32, out=tmp_path / "cache", workers=1))
    assert cache.index["sample_id"].tolist() == ["im0", "im2", "im3"]
    assert len(cache.images) == len(cache.masks) == 3
    quarantine = pd.read_csv(cache.path / "quarantine.csv")
    assert quarantine["path"].str.endswith("im1.png").tolist() == [True]


def test_pool_path_matches_serial(manifest, tmp_path):
    serial = load_cache(prepare_cache(manifest, size=32, out=tmp_path / "a", workers=1))
    from umsrep.data import cache as cache_mod

    jobs = [(p, (None,), 32, cv2.INTER_CUBIC, "stretch", "none") for p in serial.index["image_path"]]
    pooled = [img for img, _ in cache_mod._results(jobs * 8, workers=2)]
    assert all(np.array_equal(pooled[i], serial.images[i % 4]) for i in range(len(pooled)))


def test_16bit_sources_give_uint16_cache(tmp_path):
    src = tmp_path / "src"
    write_png(src / "a.png", random_image(32, dtype=np.uint16))
    write_png(src / "b.png", random_image(32, seed=1))
    pd.DataFrame({"image_path": ["a.png", "b.png"], "patient_id": ["p", "q"]}).to_csv(
        src / "w.csv", index=False)
    path = run_import("generic", src / "w.csv", tmp_path / "w.parquet").manifest_path
    cache = load_cache(prepare_cache(path, size=32, out=tmp_path / "c", workers=1))
    assert cache.images.dtype == np.uint16
    b = cv2.imread(str(src / "b.png"), cv2.IMREAD_UNCHANGED)
    assert np.array_equal(cache.images[1], b.astype(np.uint16) * 257)
