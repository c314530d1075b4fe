"""Square fits (stretch / letterbox pad), their inverse, aspect jitter and aspect TTA."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch
from torchvision import tv_tensors

from umsrep.data.dataset import RandomAspect
from umsrep.data.geometry import from_square, square_box, to_square
from umsrep.derive.tta import segment_original


def _disc(height: int, width: int, radius: int) -> np.ndarray:
    img = np.zeros((height, width), np.uint8)
    cv2.circle(img, (width // 2, height // 2), radius, 255, -1)
    return img


def _extent(mask: np.ndarray) -> tuple[int, int]:
    ys, xs = np.nonzero(mask)
    return int(ys.max() - ys.min() + 1), int(xs.max() - xs.min() + 1)


def test_square_box_centres_the_image():
    assert square_box(512, 421) == (512, 0, 45)
    assert square_box(300, 400) == (400, 50, 0)
    assert square_box(64, 64) == (64, 0, 0)


def test_pad_keeps_the_aspect_ratio_and_stretch_does_not():
    img = _disc(512, 256, 100)  # a round object in a tall image
    h, w = _extent(to_square(img, 128, "pad", cv2.INTER_NEAREST) > 0)
    assert abs(h - w) <= 1
    h, w = _extent(to_square(img, 128, "stretch", cv2.INTER_NEAREST) > 0)
    assert w > 1.8 * h  # squeezed vertically, twice as wide as tall


@pytest.mark.parametrize("fit", ["stretch", "pad"])
def test_from_square_inverts_to_square(fit):
    img = _disc(421, 512, 150).astype(np.float32) / 255
    back = from_square(to_square(img, 128, fit, cv2.INTER_LINEAR), img.shape, fit)
    assert back.shape == img.shape
    a, b = back > 0.5, img > 0.5
    assert (a & b).sum() / (a | b).sum() > 0.97


def test_unknown_fit_is_refused():
    with pytest.raises(ValueError, match="fit"):
        to_square(np.zeros((4, 4), np.uint8), 2, "crop")


def test_random_aspect_moves_image_and_mask_together():
    torch.manual_seed(0)
    mask = torch.from_numpy(_disc(64, 64, 20) > 0).to(torch.uint8)[None]
    image = mask.float()
    t = RandomAspect((0.7, 1.3))
    changed = 0
    for _ in range(8):
        im, mk = t(tv_tensors.Image(image), tv_tensors.Mask(mask))
        assert im.shape == mk.shape == (1, 64, 64) and mk.dtype == torch.uint8
        agree = ((im > 0.5).to(torch.uint8) == mk).float().mean()
        assert agree > 0.98
        h, w = _extent(mk[0].numpy())
        changed += abs(h - w) > 2
    assert changed >= 4  # the disc really became an ellipse most of the time


class _Bright(torch.nn.Module):
    """Segments bright pixels: logits = 20 * x (x is the mean-centred image)."""

    def __init__(self) -> None:
        super().__init__()
        self.calls = 0

    def forward(self, x, tasks=None):
        self.calls += 1
        return {"lung": 20 * x}


def test_segment_original_averages_fits_at_the_original_size():
    pixels = _disc(200, 120, 50)
    model = _Bright()
    prob = segment_original(model, "lung", pixels, 64, ("pad", "stretch"))
    assert prob.shape == (200, 120) and model.calls == 2
    pred, true = prob > 0.5, pixels > 0
    assert (pred & true).sum() / (pred | true).sum() > 0.9
    square = _Bright()
    segment_original(square, "lung", _disc(96, 96, 30), 64, ("pad", "stretch"))
    assert square.calls == 1  # both fits are the same picture for a square image


def test_shift_views_are_moved_back_before_the_mean():
    """shift:N runs four diagonally moved copies of each fit: a position-blind model then gives
    the same map away from the border (each view moved back), and five times the calls."""
    from umsrep.derive.tta import average_over_fits, split_fits

    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 255, (64, 64)).astype(np.uint8)
    calls = []

    def pointwise(x):
        calls.append(1)
        return torch.sigmoid(3 * x)[0, 0].numpy()

    plain = average_over_fits(pointwise, pixels, 64, ("stretch",))
    shifted = average_over_fits(pointwise, pixels, 64, ("stretch", "shift:3"))
    assert len(calls) == 1 + 5
    np.testing.assert_allclose(shifted[3:-3, 3:-3], plain[3:-3, 3:-3], rtol=1e-6)
    assert not np.allclose(shifted, plain)  # the border saw repeated edge pixels
    assert split_fits(["pad", "shift:4"]) == (["pad"], 4)
    assert split_fits(["shift:2"]) == (["stretch"], 2)


@pytest.mark.parametrize("tta, ok", [(["pad", "shift:4"], True), (["shift:4"], False),
                                     (["pad", "shift:0"], False), (["zoom"], False),
                                     (["pad", "shift:2", "shift:4"], False)])
def test_tta_views_are_checked_when_the_file_is_read(tta, ok):
    from umsrep.config import ConfigError, from_dict
    from umsrep.data.geometry import FITS as GEOMETRY_FITS
    from umsrep.experiment import FITS, EvaluationConfig

    assert FITS == GEOMETRY_FITS
    if ok:
        assert from_dict(EvaluationConfig, {"tta": tta}, "evaluation").tta == tta
    else:
        with pytest.raises(ConfigError, match="tta"):
            from_dict(EvaluationConfig, {"tta": tta}, "evaluation")


def test_a_shift_of_half_the_square_is_refused_with_the_image_size():
    from pathlib import Path

    from umsrep.config import ConfigError
    from umsrep.experiment import load_experiment

    demo = Path(__file__).resolve().parents[2] / "sweeps" / "demo.yaml"  # 32 px
    ok = load_experiment(demo, check_paths=False, overrides={"evaluation.tta": ["pad", "shift:15"]})
    assert ok.evaluation.tta == ["pad", "shift:15"]
    with pytest.raises(ConfigError, match="half the model's 32 px"):
        load_experiment(demo, check_paths=False, overrides={"evaluation.tta": ["pad", "shift:16"]})
