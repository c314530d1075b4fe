"""Losses against hand-computed values, and masking of missing labels."""

from __future__ import annotations

import math

import pytest
import torch

from umsrep.losses import LOSSES, bce_dice, build_loss, cross_entropy, mse


def test_registry_names():
    assert {"mse", "cross_entropy", "bce_dice"} <= set(LOSSES)


def test_mse_by_hand():
    out = torch.tensor([[[[1.0, 2.0]]], [[[0.0, 0.0]]]])
    target = torch.tensor([[[[0.0, 0.0]]], [[[3.0, 3.0]]]])
    assert mse(out, target, torch.tensor([True, False])).item() == pytest.approx(2.5)
    assert mse(out, target, torch.tensor([True, True])).item() == pytest.approx((2.5 + 9) / 2)


def test_cross_entropy_by_hand_ignores_missing_labels():
    logits = torch.tensor([[2.0, 0.0], [0.0, 0.0], [5.0, -5.0]])
    target = torch.tensor([0, -1, 1])
    expected = (math.log(1 + math.exp(-2.0)) + math.log(1 + math.exp(10.0))) / 2
    loss = cross_entropy(logits, target, target >= 0)
    assert loss.item() == pytest.approx(expected, rel=1e-6)
    # a -1 label is invalid even if the caller's mask says otherwise
    assert cross_entropy(logits, target, torch.ones(3, dtype=torch.bool)).item() == pytest.approx(
        expected, rel=1e-6
    )


def test_label_smoothing_by_hand():
    logits = torch.tensor([[2.0, 0.0], [0.0, 0.0], [0.5, -0.5]])
    target = torch.tensor([0, -1, 1])
    e = 0.2
    logp = torch.log_softmax(logits, dim=1)
    # (1 - e) on the true class, e / C on every class; the -1 row stays out
    expected = -((1 - e) * logp[[0, 2], [0, 1]] + e / 2 * logp[[0, 2]].sum(1)).mean()
    smoothed = build_loss("cross_entropy", label_smoothing=e)(logits, target, target >= 0)
    assert smoothed.item() == pytest.approx(expected.item(), rel=1e-6)
    plain = cross_entropy(logits, target, target >= 0).item()
    assert plain != pytest.approx(smoothed.item())
    assert build_loss("cross_entropy", label_smoothing=0.0)(logits, target, target >= 0).item() == (
        pytest.approx(plain))


def test_bce_dice_by_hand():
    logits = torch.tensor([0.0, 0.0, 2.0, -2.0]).view(1, 1, 2, 2)
    target = torch.tensor([1.0, 0.0, 1.0, 0.0]).view(1, 1, 2, 2)
    p = torch.sigmoid(logits).flatten()
    t = target.flatten()
    bce = -(t * p.log() + (1 - t) * (1 - p).log()).mean()
    dice = 1 - (2 * (p * t).sum() + 1) / (t.sum() + p.sum() + 1)
    valid = torch.tensor([True])
    assert bce_dice(logits, target, valid).item() == pytest.approx((0.5 * bce + 0.5 * dice).item())
    weighted = build_loss("bce_dice", w_bce=1.0, w_dice=0.0)
    assert weighted(logits, target, valid).item() == pytest.approx(bce.item())


def test_bce_dice_near_zero_for_a_perfect_prediction_and_empty_mask():
    target = torch.zeros(1, 1, 8, 8)
    target[..., 2:6, 2:6] = 1
    perfect = (target * 2 - 1) * 30
    assert bce_dice(perfect, target, torch.tensor([True])).item() < 1e-3
    empty = torch.zeros(1, 1, 8, 8)
    assert bce_dice(torch.full_like(empty, -30.0), empty, torch.tensor([True])).item() < 1e-3


CASES = {
    "mse": (lambda: torch.randn(3, 1, 8, 8), lambda: torch.randn(3, 1, 8, 8)),
    "bce_dice": (lambda: torch.randn(3, 1, 8, 8), lambda: (torch.rand(3, 1, 8, 8) > 0.5).float()),
    "cross_entropy": (lambda: torch.randn(3, 4), lambda: torch.tensor([1, 2, 3])),
}


@pytest.mark.parametrize("name", list(CASES))
def test_masked_samples_get_zero_gradient(name):
    torch.manual_seed(0)
    make_out, make_target = CASES[name]
    out = make_out().requires_grad_(True)
    target = make_target()
    if name == "cross_entropy":
        target[1] = -1
        valid = torch.tensor([True, True, False])
    else:
        target[1] = float("nan")  # a missing mask must not leak NaN into the loss
        valid = torch.tensor([True, False, False])
    loss = LOSSES.get(name)(out, target, valid)
    loss.backward()
    assert torch.isfinite(loss)
    assert (out.grad[1:] == 0).all() and out.grad[0].abs().sum() > 0


@pytest.mark.parametrize("name", list(CASES))
def test_no_valid_sample_gives_connected_zero(name):
    make_out, make_target = CASES[name]
    out = make_out().requires_grad_(True)
    loss = LOSSES.get(name)(out, make_target(), torch.zeros(3, dtype=torch.bool))
    assert loss.item() == 0.0 and loss.requires_grad
    loss.backward()
    assert (out.grad == 0).all()


def test_valid_of_wrong_length_is_refused():
    with pytest.raises(ValueError, match="batch of 3"):
        mse(torch.zeros(3, 1, 2, 2), torch.zeros(3, 1, 2, 2), torch.ones(2, dtype=torch.bool))
