"""The real-CXR experiment (sweeps/cxr_real_small.yaml), cut down, and original-size scoring.

The slow test runs the experiment file itself with smaller settings (64 px, narrow CDAE, one of
two folds, independent strategy only, few epochs) through ``run_local`` and checks the run
folder and that the lung head segments the external Montgomery images well above chance at
their original size. The unit tests pin ``umsrep.runner.original_size`` on hand-made masks.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest

from umsrep.runner.original_size import (
    resize_probabilities,
    score_at_original_size,
    score_original_size,
    summarize,
)

REPO = Path(__file__).resolve().parents[1]
EXPERIMENT = REPO / "sweeps" / "cxr_real_small.yaml"


# ----------------------------------------------------------------------------- original size
def test_perfect_prediction_scores_one_at_original_size():
    """A 4x4 prediction of a block mask, upsampled to 8x6, reproduces the mask exactly."""
    mask = np.zeros((8, 6), np.uint8)
    mask[2:6, :] = 1  # rows 2-5: cache rows 1-2 of a 4-row map
    prob = np.zeros((4, 4), np.float32)
    prob[1:3, :] = 1.0
    up = resize_probabilities(prob, mask.shape) > 0.5
    assert up.shape == (8, 6)
    np.testing.assert_array_equal(up, mask.astype(bool))
    assert score_at_original_size(prob, mask) == (1.0, 1.0)


def test_one_pixel_off_is_hand_computed():
    """A constant map at the original size is resized unchanged; one extra and one missing
    pixel: true 4 px, predicted 4 px, overlap 3 -> Dice 6/8, IoU 3/5."""
    mask = np.zeros((5, 7), np.uint8)
    mask[1, 1:5] = 1
    prob = np.zeros((5, 7), np.float32)
    prob[1, 2:6] = 0.9  # shifted right by one pixel
    dice, iou = score_at_original_size(prob, mask)
    assert dice == pytest.approx(0.75)
    assert iou == pytest.approx(0.6)


def test_bilinear_threshold_at_half():
    """Bilinear upsampling of [0, 1] to 4 px gives 0, 0.25, 0.75, 1 (OpenCV half-pixel
    centres, edge clamped): the upper half is foreground."""
    prob = np.array([[0.0, 1.0]], np.float32)
    up = resize_probabilities(prob, (1, 4))
    np.testing.assert_allclose(up[0], [0.0, 0.25, 0.75, 1.0])
    assert up.dtype == np.float32


def test_scores_per_image_from_mask_files(tmp_path):
    """Masks are read from their files (0/255 PNG); missing or unreadable ones are skipped."""
    mask = np.zeros((10, 6), np.uint8)
    mask[:, :3] = 255
    cv2.imwrite(str(tmp_path / "a.png"), mask)
    (tmp_path / "bad.png").write_bytes(b"not a png")
    perfect = np.zeros((4, 4), np.float32)
    perfect[:, :2] = 1.0
    empty = np.zeros((4, 4), np.float32)
    probs = {"a": perfect, "b": empty, "c": perfect, "d": perfect}
    paths = {"a": tmp_path / "a.png", "b": tmp_path / "a.png", "c": None,
             "d": tmp_path / "bad.png"}
    scores = score_original_size(probs, paths)
    assert list(scores["sample_id"]) == ["a", "b"]
    assert list(scores["dice"]) == [1.0, 0.0]
    assert list(scores[["height", "width"]].iloc[0]) == [10, 6]
    rows = {r["metric"]: r["value"] for r in summarize("lung", scores)}
    assert rows == {"dice_orig": 0.5, "dice_orig_min": 0.0, "iou_orig": 0.5}
    assert summarize("lung", scores.iloc[:0]) == []


# ----------------------------------------------------------------------------- the experiment
@pytest.mark.slow
@pytest.mark.realdata
def test_cut_down_real_experiment(real_data, tmp_path):
    from umsrep.experiment import load_experiment
    from umsrep.runner.local import run_local

    small_train = {"epochs": 25, "batch_size": 8, "lr": 0.003, "optimizer": "adam",
                   "patience": 6, "plateau_patience": 3}
    exp = load_experiment(EXPERIMENT, data_root=real_data, overrides={
        "data.image_size": 64, "data.cache_dir": str(tmp_path / "cache"),
        "folds.k": 2, "folds.run": 1, "backbone.width": 0.5,
        "backbone.train": {**small_train, "epochs": 6},
        "train": small_train, "strategies": [{"name": "independent"}],
        "baseline": {"enabled": False},
        "search": {"num_samples": 0, "applies_to": ["independent"]},
    })
    run = run_local(exp, tmp_path / "runs")

    for name in ("config.yaml", "stages.parquet", "metrics.parquet", "predictions.parquet"):
        assert (run / name).is_file(), name
    stages = pd.read_parquet(run / "stages.parquet")
    assert set(stages["kind"]) == {"backbone", "head"}
    assert (stages["status"] == "done").all()
    m = pd.read_parquet(run / "metrics.parquet")
    test = m[(m["split"] == "test") & (m["task"] == "lung")].set_index("metric")["value"]
    # Montgomery: 3 masked images (512x421) scored at their original size
    assert {"dice", "dice_orig", "dice_orig_min", "iou_orig"} <= set(test.index)
    assert test["dice_orig"] > 0.7, test.to_dict()
    assert test["dice_orig_min"] <= test["dice_orig"] <= 1.0
    assert "dice_orig" not in set(m.loc[m["split"] == "val", "metric"])
    acc = m[(m["task"] == "abnormal") & (m["metric"] == "accuracy")]["value"]
    assert len(acc) and acc.between(0, 1).all()


def test_mask_file_of_another_size_is_scored_in_the_image_geometry():
    """A 4x8 image letterboxed into an 8x8 square (rows 2-5), its mask stored as 8x8: the fit
    is undone at the image's size first, then the map is resized to the mask's."""
    prob = np.zeros((8, 8), np.float32)
    prob[2:6, :4] = 1.0  # the image's left half
    mask = np.zeros((8, 8), np.uint8)
    mask[:, :4] = 1  # the same left half, drawn on a square resample of the image
    assert score_at_original_size(prob, mask, "pad", image_shape=(4, 8)) == (1.0, 1.0)
    assert score_at_original_size(prob, mask, "pad")[0] < 0.7  # mask's own shape: wrong
