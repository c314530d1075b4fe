"""The JSRT importer on the public copy in ../shared/data/cxr/JSRT (skipped when it is absent)."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from umsrep.data.importers import run_import

pytestmark = pytest.mark.realdata

JSRT = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "cxr" / "JSRT"


def organ(name: str, sample_id: str) -> np.ndarray:
    """A source SCR mask as bool, read straight with OpenCV (0/255 files)."""
    return cv2.imread(str(JSRT / "masks" / name / f"{sample_id}.png"), cv2.IMREAD_GRAYSCALE) > 127


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    if not JSRT.is_dir():
        pytest.skip(f"JSRT copy not found at {JSRT}")
    return run_import("jsrt", JSRT.resolve(), tmp_path_factory.mktemp("jsrt") / "jsrt.parquet")


def test_every_visible_image_with_its_label(report):
    df = report.manifest
    assert len(df) == 124 and report.quarantine == []  # counts from the data README
    assert df["nodule"].sum() == 77
    assert (df["nodule"] == df["sample_id"].str.startswith("JPCLN").astype(int)).all()
    assert ((df["height"] == 512) & (df["width"] == 512)).all()
    for column in ("mask_path", "mask_heart_path", "mask_clavicle_path"):
        assert df[column].notna().all(), column


@pytest.mark.parametrize("sample_id", ["JPCLN001", "JPCNN001"])
def test_merged_masks_match_the_source_organs(report, sample_id):
    row = report.manifest.set_index("sample_id").loc[sample_id]
    read = lambda path: cv2.imread(path, cv2.IMREAD_GRAYSCALE) > 127  # noqa: E731
    lungs, clavicles = read(row["mask_path"]), read(row["mask_clavicle_path"])
    left, right = organ("left lung", sample_id), organ("right lung", sample_id)
    assert left.any() and right.any()
    assert np.array_equal(lungs, left | right)
    assert np.array_equal(
        clavicles, organ("left clavicle", sample_id) | organ("right clavicle", sample_id)
    )
    assert np.array_equal(read(row["mask_heart_path"]), organ("heart", sample_id))
    assert 0.1 < lungs.mean() < 0.5  # lung fields, not an empty or inverted mask
