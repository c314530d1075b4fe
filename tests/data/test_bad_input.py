"""Every bad-input case is quarantined with a reason while good files import."""

import argparse
import logging

import numpy as np
import pandas as pd

from tests.data.conftest import random_image, write_dicom, write_png
from umsrep.data import cli
from umsrep.data.importers import run_import


def _bad_set(root):
    good = [write_png(root / f"good{i}.png", random_image(32, seed=i)) for i in range(3)]
    write_png(root / "good0_mask.png", (random_image(32) > 128).astype(np.uint8) * 255)
    fuzzy = (random_image(32, seed=9) // 2).astype(np.uint8)  # 0-127: not strictly binary
    write_png(root / "good1_mask.png", fuzzy)
    data = (root / "good0.png").read_bytes()
    (root / "corrupt.png").write_bytes(data[:60] + b"\x13" * (len(data) - 72) + data[-12:])
    (root / "truncated.png").write_bytes(data[: len(data) // 2])
    (root / "empty.png").write_bytes(b"")
    (root / "notes.png").write_text("this is a text file")
    write_png(root / "blank.png", np.full((32, 32), 7, np.uint8))
    write_png(root / "small_mask_img.png", random_image(32, seed=5))
    write_png(root / "small_mask.png", np.zeros((16, 16), np.uint8))
    write_dicom(root / "nopixels.dcm", random_image(32), with_pixels=False)
    dcm = write_dicom(root / "whole.dcm", random_image(32)).read_bytes()
    (root / "garbage.dcm").write_bytes(dcm[: len(dcm) - 600])  # cut inside the pixel data
    rows = [
        ("good0.png", "good0_mask.png", "p0", "1"),
        ("good1.png", "good1_mask.png", "p1", "0"),
        ("good2.png", "", "p2", ""),
        ("corrupt.png", "", "p3", "1"),
        ("truncated.png", "", "p4", "1"),
        ("empty.png", "", "p5", "1"),
        ("notes.png", "", "p6", "1"),
        ("blank.png", "", "p7", "1"),
        ("small_mask_img.png", "small_mask.png", "p8", "1"),
        ("missing.png", "", "p9", "1"),
        ("good2.png", "no_such_mask.png", "p10", "1"),
        ("nopixels.dcm", "", "p11", "1"),
        ("garbage.dcm", "", "p12", "1"),
    ]
    frame = pd.DataFrame(rows, columns=["image_path", "mask_path", "patient_id", "abnormal"])
    frame.insert(0, "sample_id", [f"s{i}" for i in range(len(rows))])
    frame.to_csv(root / "set.csv", index=False)
    return good


EXPECTED = {
    "corrupt.png": "cannot be decoded",
    "truncated.png": "truncated",
    "empty.png": "empty (0 bytes)",
    "notes.png": "cannot be decoded",
    "blank.png": "constant",
    "small_mask.png": "mask is 16x16, image is 32x32",
    "missing.png": "file not found",
    "no_such_mask.png": "file not found",
    "nopixels.dcm": "no pixel data",
    "garbage.dcm": "DICOM pixel data cannot be decoded",
}


def test_generic_import_quarantines_each_bad_file(tmp_path, caplog):
    _bad_set(tmp_path / "src")
    with caplog.at_level(logging.INFO):
        report = run_import("generic", tmp_path / "src" / "set.csv", tmp_path / "out.parquet")
    assert report.manifest["sample_id"].tolist() == ["s0", "s1", "s2"]
    assert report.manifest["abnormal"].tolist()[:2] == [1, 0]
    assert pd.isna(report.manifest["abnormal"][2])  # empty cell = missing label
    by_name = {p.split("/")[-1]: r for p, r in report.quarantine}
    assert set(by_name) == set(EXPECTED)
    for name, fragment in EXPECTED.items():
        assert fragment in by_name[name], (name, by_name[name])
    written = pd.read_csv(report.quarantine_path)
    assert list(written.columns) == ["path", "reason"] and len(written) == len(EXPECTED)
    assert "not strictly binary" in caplog.text  # fuzzy mask imported with a note


def test_folder_importers_quarantine_unknown_labels(tmp_path):
    china = tmp_path / "ChinaSet_AllFiles" / "CXR_png"
    write_png(china / "CHNCXR_0001_0.png", random_image(32))
    write_png(china / "CHNCXR_0002_7.png", random_image(32, seed=1))
    write_png(china / "scan.png", random_image(32, seed=2))
    report = run_import("shenzhen", tmp_path, tmp_path / "sz.parquet")
    assert report.manifest["sample_id"].tolist() == ["CHNCXR_0001_0"]
    reasons = dict(report.quarantine)
    assert "unknown label '7'" in reasons[str(china / "CHNCXR_0002_7.png")]
    assert "does not follow" in reasons[str(china / "scan.png")]

    pneu = tmp_path / "chest_xray" / "train" / "PNEUMONIA"
    write_png(pneu / "person3_bacteria_1.jpeg", random_image(32))
    write_png(pneu / "person4_fungus_2.jpeg", random_image(32, seed=3))
    report = run_import("kermany", tmp_path, tmp_path / "k.parquet")
    assert report.manifest["diagnosis"].tolist() == ["bacterial"]
    assert "unknown label" in report.quarantine[0][1]


def test_rsna_label_row_without_file_and_bad_target(tmp_path):
    images = tmp_path / "stage_2_train_images"
    write_dicom(images / "aaa.dcm", random_image(32))
    write_dicom(images / "bbb.dcm", random_image(32, seed=1))
    (tmp_path / "stage_2_train_labels.csv").write_text(
        "patientId,x,y,width,height,Target\naaa,1,2,3,4,1\naaa,5,6,7,8,1\n"
        "bbb,,,,,2\nccc,,,,,0\n"
    )
    report = run_import("rsna", tmp_path, tmp_path / "r.parquet")
    assert report.manifest["sample_id"].tolist() == ["aaa"]
    assert report.manifest["boxes"][0] == "[[1.0, 2.0, 3.0, 4.0], [5.0, 6.0, 7.0, 8.0]]"
    reasons = {p.split("/")[-1]: r for p, r in report.quarantine}
    assert "unknown label" in reasons["bbb.dcm"]
    assert "DICOM file is missing" in reasons["ccc.dcm"]


def main(argv):
    parser = argparse.ArgumentParser()
    cli.add_arguments(parser)
    return cli.run(parser.parse_args(argv))


def test_cli_exit_code_and_summary(tmp_path, capsys):
    src = tmp_path / "src"
    _bad_set(src)
    assert main(["import", "generic", str(src / "set.csv"), "-o",
                 str(tmp_path / "a.parquet")]) == 0
    assert "imported 3, quarantined 10" in capsys.readouterr().out
    only_bad = pd.read_csv(src / "set.csv").iloc[3:8]
    only_bad.to_csv(src / "bad.csv", index=False)
    assert main(["import", "generic", str(src / "bad.csv"), "-o",
                 str(tmp_path / "b.parquet")]) == 1
    assert "imported 0, quarantined 5" in capsys.readouterr().out
