"""Importers on the real public sample folder (skipped when ../shared/data/real is absent)."""

import json

import numpy as np
import pydicom
import pytest

from umsrep.data.importers import run_import
from umsrep.data.io import load_image, load_mask

pytestmark = pytest.mark.realdata


def test_shenzhen_counts_labels_and_optional_masks(real_data, tmp_path):
    report = run_import("shenzhen", real_data, tmp_path / "sz.parquet", workers=1)
    df = report.manifest
    assert len(df) == 62 and report.quarantine == []
    assert df["abnormal"].sum() == 48  # files named _1
    assert df["mask_path"].notna().sum() == 55
    assert df.loc[df.sample_id == "CHNCXR_0185_0", "mask_path"].isna().all()
    assert (df["patient_id"] == df["sample_id"].str[:11]).all()


def test_montgomery_merges_left_and_right_masks(real_data, tmp_path):
    report = run_import("montgomery", real_data, tmp_path / "mc.parquet", workers=1)
    df = report.manifest.set_index("sample_id")
    assert len(df) == 5 and df["abnormal"].tolist() == [0, 0, 1, 1, 1]
    assert df["mask_path"].notna().sum() == 3
    merged = load_mask(df.loc["MCUCXR_0196_1", "mask_path"])
    masks = real_data / "MontgomerySet" / "ManualMask"
    left = load_mask(masks / "leftMask" / "MCUCXR_0196_1.png")
    right = load_mask(masks / "rightMask" / "MCUCXR_0196_1.png")
    assert np.array_equal(merged, left | right)
    assert left.sum() > 0 and right.sum() > 0 and merged.sum() == left.sum() + right.sum()
    assert merged.shape == (512, 421) == (df.loc["MCUCXR_0196_1", "height"], 421)


def test_kermany_diagnosis_patient_and_split(real_data, tmp_path):
    df = run_import("kermany", real_data, tmp_path / "k.parquet", workers=1).manifest
    assert len(df) == 8 and set(df["split"]) == {"val"}
    assert df["diagnosis"].value_counts().to_dict() == {"normal": 4, "bacterial": 4}
    row = df.set_index("sample_id").loc["person1946_bacteria_4874"]
    assert row["patient_id"] == "person1946" and row["abnormal"] == 1
    # non-square JPEGs keep their orientation: rows = height
    assert (row["height"], row["width"]) == (313, 512)


def test_rsna_dicom_decode_labels_and_boxes(real_data, tmp_path):
    df = run_import("rsna", real_data, tmp_path / "r.parquet", workers=1).manifest
    assert len(df) == 11 and df["abnormal"].sum() == 2
    row = df.set_index("sample_id").loc["00aecb01-a116-45a2-956c-08d2fa55433f"]
    assert json.loads(row["boxes"]) == [[288, 322, 94, 135], [547, 299, 119, 165]]
    assert row["rsna_class"] == "Lung Opacity" and row["view_position"] in ("PA", "AP")
    image = load_image(row["image_path"])
    ds = pydicom.dcmread(row["image_path"])
    assert ds.file_meta.TransferSyntaxUID.name.startswith("JPEG Baseline")
    assert image.dtype == np.uint8 and image.shape == (1024, 1024)
    assert np.array_equal(image, ds.pixel_array)  # MONOCHROME2: no flip, no transpose
    # orientation sanity: a CXR's lung fields (centre rows) are darker than the mediastinum
    assert image[300:700, 200:350].mean() < image[300:700, 462:562].mean()
