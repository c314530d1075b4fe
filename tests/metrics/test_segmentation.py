"""IoU, Dice and pixel accuracy: hand-computed masks, a set-based reference, degenerate cases."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from umsrep.metrics import (
    compute_dice,
    compute_dice_per_image,
    compute_iou,
    compute_iou_per_image,
    compute_pixel_accuracy,
)


def square(size: int, top: int, left: int, side: int) -> np.ndarray:
    mask = np.zeros((size, size), dtype=bool)
    mask[top : top + side, left : left + side] = True
    return mask


def test_hand_computed_overlap() -> None:
    true = square(8, 0, 0, 4)  # 16 px
    pred = square(8, 2, 2, 4)  # 16 px, overlap 2x2 = 4
    assert compute_iou_per_image(true, pred) == pytest.approx([4 / 28])
    assert compute_dice_per_image(true, pred) == pytest.approx([8 / 32])
    assert compute_pixel_accuracy(true, pred) == pytest.approx((64 - 24) / 64)


def test_empty_vs_empty_is_one_and_empty_vs_object_is_zero() -> None:
    empty = np.zeros((2, 6, 6), dtype=np.uint8)
    full = np.ones((2, 6, 6), dtype=np.uint8)
    assert compute_iou_per_image(empty, empty).tolist() == [1.0, 1.0]
    assert compute_dice_per_image(empty, empty).tolist() == [1.0, 1.0]
    assert compute_iou_per_image(empty, full).tolist() == [0.0, 0.0]
    assert compute_dice(full, empty) == 0.0
    assert compute_pixel_accuracy(empty, full) == 0.0


def test_mean_is_per_image_not_pooled() -> None:
    true = np.stack([square(16, 0, 0, 8), square(16, 0, 0, 2)])  # 64 px and 4 px objects
    pred = np.stack([square(16, 0, 0, 8), np.zeros((16, 16), dtype=bool)])
    assert compute_iou(true, pred) == pytest.approx(0.5)  # (1 + 0) / 2
    assert compute_dice(true, pred) == pytest.approx(0.5)
    pooled = 64 / 68
    assert compute_iou(true, pred) != pytest.approx(pooled)


@pytest.mark.parametrize("seed", [0, 1])
def test_random_masks_match_set_reference(seed: int) -> None:
    rng = np.random.default_rng(seed)
    true = rng.random((5, 12, 12)) < 0.4
    pred = rng.random((5, 12, 12)) < 0.4
    for i in range(5):
        a = set(zip(*np.nonzero(true[i]), strict=True))
        b = set(zip(*np.nonzero(pred[i]), strict=True))
        assert compute_iou_per_image(true, pred)[i] == pytest.approx(len(a & b) / len(a | b))
        assert compute_dice_per_image(true, pred)[i] == pytest.approx(
            2 * len(a & b) / (len(a) + len(b))
        )
    iou = compute_iou_per_image(true, pred)
    assert compute_dice_per_image(true, pred) == pytest.approx(2 * iou / (1 + iou))


def test_perfect_prediction_and_torch_input() -> None:
    mask = torch.from_numpy(square(32, 5, 7, 10)).repeat(3, 1, 1)
    assert compute_iou(mask, mask) == 1.0
    assert compute_dice(mask, mask.int()) == 1.0
    assert compute_pixel_accuracy(mask, mask) == 1.0


def test_bad_masks_are_refused_with_a_fix() -> None:
    with pytest.raises(ValueError, match="threshold probabilities"):
        compute_iou(np.zeros((1, 4, 4)), np.full((1, 4, 4), 0.7))
    with pytest.raises(ValueError, match="resize predictions"):
        compute_dice(np.zeros((1, 4, 4)), np.zeros((1, 4, 5)))
    with pytest.raises(ValueError, match=r"\[N, H, W\]"):
        compute_iou(np.zeros(4), np.zeros(4))
