"""The ``cxr_robust`` transforms: bands and frames black in image and every mask, intensity
changes monotone on 0-1 and blind to the masks, geometry shared by image and masks, seeded."""

from __future__ import annotations

import pytest
import torch
from torchvision import tv_tensors

from umsrep.data.augment import (
    CxrAugment,
    RandomBorderBands,
    RandomGamma,
    RandomSharpness,
    RandomShrinkFrame,
    RandomWashout,
    build_augment,
    build_cxr_robust_augment,
)

S = 32


def _scene() -> tuple[tv_tensors.Image, tv_tensors.Mask]:
    """Background 0.2; lung box 0.6 (mask channel 0); heart box 0.9 (channel 1, mask_heart)."""
    image = torch.full((1, S, S), 0.2)
    mask = torch.zeros((2, S, S), dtype=torch.uint8)
    image[0, 6:26, 4:14], mask[0, 6:26, 4:14] = 0.6, 1
    image[0, 12:24, 18:28], mask[1, 12:24, 18:28] = 0.9, 1
    return tv_tensors.Image(image), tv_tensors.Mask(mask)


def _zero_edges(black: torch.Tensor) -> dict[str, int]:
    """How many full rows/columns at each edge of a bool [S, S] map are black."""
    def run(lines: torch.Tensor) -> int:
        n = 0
        for line in lines:
            if not bool(line.all()):
                break
            n += 1
        return n
    return {"top": run(black), "bottom": run(black.flip(0)), "left": run(black.T),
            "right": run(black.T.flip(0))}


def test_one_band_is_black_in_the_image_and_every_mask_and_nothing_else_changes():
    image, mask = tv_tensors.Image(torch.full((1, S, S), 0.5)), tv_tensors.Mask(
        torch.ones((2, S, S), dtype=torch.uint8))
    seen = set()
    for seed in range(40):
        torch.manual_seed(seed)
        out_image, out_mask = RandomBorderBands(p=1.0, thickness=(0.25, 0.25), pair=0.0)(
            image, mask)
        black = out_image[0] == 0
        edges = {side: n for side, n in _zero_edges(black).items() if n}
        assert list(edges.values()) == [8]  # one band, 25 % of 32 px
        seen |= set(edges)
        for channel in out_mask:  # the lung and the heart mask are 0 exactly under the band
            assert torch.equal(channel == 0, black)
        assert torch.all(out_image[0][~black] == 0.5)
    assert seen == {"top", "bottom", "left", "right"}


def test_a_letterbox_pair_blackens_opposite_edges():
    image, mask = _scene()
    torch.manual_seed(0)
    out_image, out_mask = RandomBorderBands(p=1.0, thickness=(0.1, 0.2), pair=1.0)(image, mask)
    edges = _zero_edges(out_image[0] == 0)
    assert (edges["top"] and edges["bottom"]) or (edges["left"] and edges["right"])
    assert not out_mask[:, out_image[0] == 0].any()


def test_probability_zero_changes_nothing():
    image, mask = _scene()
    for transform in (RandomBorderBands(p=0.0), RandomShrinkFrame(p=0.0), RandomGamma(p=0.0),
                      RandomWashout(p=0.0)):
        out_image, out_mask = transform(image, mask)
        assert torch.equal(out_image, image) and torch.equal(out_mask, mask)


def test_gamma_keeps_the_range_and_the_order_and_leaves_masks_alone():
    ramp = tv_tensors.Image(torch.linspace(0, 1, S * S).reshape(1, S, S))
    _, mask = _scene()
    out_image, out_mask = RandomGamma(p=1.0, gamma=(2.0, 2.0))(ramp, mask)
    assert torch.allclose(out_image, ramp ** 2)  # hand computation: x ** gamma
    for seed in range(10):
        torch.manual_seed(seed)
        out_image, out_mask = RandomGamma(p=1.0, gamma=(0.6, 1.6))(ramp, mask)
        flat = out_image.flatten()
        assert float(flat[0]) == 0.0 and float(flat[-1]) == 1.0
        assert bool((flat.diff() >= 0).all())
        assert torch.equal(out_mask, mask)


def test_washout_compresses_contrast_toward_light_gray_and_leaves_masks_alone():
    ramp = tv_tensors.Image(torch.linspace(0, 1, S * S).reshape(1, S, S))
    _, mask = _scene()
    out_image, out_mask = RandomWashout(p=1.0, floor=(0.3, 0.3), ceiling=(0.9, 0.9))(ramp, mask)
    assert torch.allclose(out_image, 0.3 + 0.6 * ramp)  # 0 -> 0.3, 1 -> 0.9
    assert float(out_image.std()) == pytest.approx(0.6 * float(ramp.std()), rel=1e-4)
    assert bool((out_image.flatten().diff() >= 0).all())
    assert torch.equal(out_mask, mask)


def test_shrink_frame_moves_image_and_masks_together_into_a_black_frame():
    image, mask = _scene()
    for seed in range(10):
        torch.manual_seed(seed)
        out_image, out_mask = RandomShrinkFrame(p=1.0, scale=(0.6, 0.8))(image, mask)
        assert out_image.shape == image.shape and out_mask.shape == mask.shape
        frame = out_image[0] == 0
        assert frame.sum() >= S * S - (0.8 * S + 1) ** 2  # at least the frame's area
        assert not out_mask[:, frame].any()
        assert out_mask[0].sum() < mask[0].sum() and out_mask[1].sum() < mask[1].sum()
        # under each shrunk mask, (nearly) the gray of its own box
        assert float(out_image[0][out_mask[0] > 0].median()) == pytest.approx(0.6, abs=0.05)
        assert float(out_image[0][out_mask[1] > 0].median()) == pytest.approx(0.9, abs=0.05)


def test_the_whole_robust_augmentation_keeps_every_mask_on_its_structure():
    image, mask = _scene()
    augment = build_cxr_robust_augment(gamma=1.0, washout=1.0, frame=0.5, bands=0.5)
    for seed in range(20):
        torch.manual_seed(seed)
        out_image, out_mask = augment(image, mask)
        assert out_image.min() >= 0 and out_image.max() <= 1
        assert set(out_mask.unique().tolist()) <= {0, 1}
        assert not out_mask[:, out_image[0] == 0].any()  # nothing under black
        lung, heart = out_mask[0] > 0, out_mask[1] > 0
        rest = ~(lung | heart) & (out_image[0] > 0)
        # every intensity change is monotone: the order background < lung < heart survives
        if lung.sum() > 20 and heart.sum() > 20:
            assert out_image[0][rest].median() < out_image[0][lung].median() \
                < out_image[0][heart].median()


def test_seeded_runs_repeat_and_other_seeds_differ():
    image, mask = _scene()
    augment = build_augment("cxr_robust")
    runs = []
    for seed in (7, 7, 8):
        torch.manual_seed(seed)
        runs.append([augment(image, mask) for _ in range(5)])
    same = all(torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
               for a, b in zip(runs[0], runs[1], strict=True))
    differ = any(not torch.equal(a[0], b[0]) for a, b in zip(runs[0], runs[2], strict=True))
    assert same and differ


def _hf(image: torch.Tensor) -> float:
    """Mean squared 4-neighbour Laplacian: the 3x3 high-frequency energy of [1, H, W]."""
    x = image[0]
    lap = 4 * x[1:-1, 1:-1] - x[:-2, 1:-1] - x[2:, 1:-1] - x[1:-1, :-2] - x[1:-1, 2:]
    return float((lap ** 2).mean())


def _textured() -> tuple[tv_tensors.Image, tv_tensors.Mask]:
    image, mask = _scene()
    torch.manual_seed(0)
    noise = 0.05 * torch.randn(1, S, S)
    return tv_tensors.Image((image + noise).clamp(0, 1)), mask


def test_sharpness_blurs_or_sharpens_the_image_only():
    image, mask = _textured()
    blur = RandomSharpness(p=1.0)
    blurred = blur.transform(image, {"sigma": 1.0, "amount": 0.0})
    sharpened = blur.transform(image, {"sigma": 1.0, "amount": 1.5})
    assert _hf(blurred) < 0.5 * _hf(image) < _hf(image) < _hf(sharpened)
    assert 0 <= float(sharpened.min()) and float(sharpened.max()) <= 1
    assert blur.transform(mask, {"sigma": 1.0, "amount": 1.5}) is mask
    # the mean gray level survives either way (away from the clamp)
    assert float(blurred.mean()) == pytest.approx(float(image.mean()), abs=0.02)


def test_cxr_robust_sharpness_changes_sharpness_both_ways_and_no_mask():
    image, mask = _textured()
    still = dict(rotation=0, translate=0, scale=(1, 1), aspect=(1, 1), brightness=0, contrast=0,
                 gamma=0, washout=0, frame=0, bands=0, geometry=0)
    augment = CxrAugment(robust=True, sharpness=1.0, **still)
    ratios = []
    for seed in range(20):
        torch.manual_seed(seed)
        out_image, out_mask = augment(image, mask)
        assert torch.equal(out_mask, mask.as_subclass(torch.Tensor))
        ratios.append(_hf(out_image) / _hf(image))
    assert min(ratios) < 0.7 and max(ratios) > 1.5 and all(abs(r - 1) > 0.1 for r in ratios)
    # cxr_robust draws no sharpness: the same seed gives the same images as without the option
    torch.manual_seed(3)
    plain = build_augment("cxr_robust")(image, mask)
    torch.manual_seed(3)
    zero = CxrAugment(robust=True, sharpness=0.0)(image, mask)
    assert torch.equal(plain[0], zero[0])
    assert build_augment("cxr_robust_sharpness").sharpness.p == 0.4


def test_build_augment_names():
    assert build_augment("none") is None
    assert build_augment("cxr") is not None
    with pytest.raises(ValueError, match="cxr_robust"):
        build_augment("flip")


def test_the_one_warp_path_is_the_identity_when_nothing_is_drawn():
    image, mask = _scene()
    still = CxrAugment(rotation=0, translate=0, scale=(1, 1), aspect=(1, 1), brightness=0,
                       contrast=0)
    out_image, out_mask = still(image, mask)
    torch.testing.assert_close(out_image, image.as_subclass(torch.Tensor))
    assert torch.equal(out_mask, mask.as_subclass(torch.Tensor))


@pytest.mark.parametrize("robust", [False, True])
def test_half_of_the_images_keep_their_pixels_as_test_images_do(robust):
    """The geometric warp (bilinear: it blurs a small image) is drawn for half of the images;
    the others reach the model untouched, so a model also trains on images as sharp as the ones
    it is tested on. The frame keeps its own probability; ``geometry`` 1 warps every image."""
    image, mask = (x.as_subclass(torch.Tensor) for x in _scene())
    quiet = dict(brightness=0, contrast=0, gamma=0, washout=0, bands=0)

    def untouched(augment, n=200) -> float:
        torch.manual_seed(0)
        same = 0
        for _ in range(n):
            out_image, out_mask = augment(image, mask)
            same += torch.equal(out_image, image) and torch.equal(out_mask, mask)
        return same / n

    frame = 0.25 if robust else 0.0
    assert untouched(CxrAugment(robust=robust, frame=frame, **quiet)) == pytest.approx(
        0.5 * (1 - frame), abs=0.08)
    assert untouched(CxrAugment(robust=robust, frame=frame, geometry=1.0, **quiet)) == 0
    assert untouched(CxrAugment(robust=robust, frame=0, geometry=0.0, **quiet)) == 1
    # the named augmentations and the v2 reference pipeline draw the warp at the same rate
    assert build_augment("cxr_robust" if robust else "cxr").geometry == 0.5
    reference = build_cxr_robust_augment(gamma=0, washout=0, frame=0, bands=0, geometry=0.0)
    torch.manual_seed(0)
    out_image, out_mask = reference(tv_tensors.Image(image), tv_tensors.Mask(mask))
    assert torch.allclose(out_image, image, atol=0.11)  # brightness/contrast jitter only
    assert torch.equal(out_mask.as_subclass(torch.Tensor), mask)


@pytest.mark.parametrize("robust", [False, True])
def test_the_one_warp_path_moves_masks_with_the_image(robust):
    """Image = its own mask: after any draw, the warped image (bilinear) cut at 0.5 and the
    warped masks (nearest) agree; masks stay 0/1 uint8, the image on 0-1, bands black in both."""
    augment = build_augment("cxr_robust" if robust else "cxr")
    assert isinstance(augment, CxrAugment)
    torch.manual_seed(0)
    mask = torch.zeros((1, S, S), dtype=torch.uint8)
    mask[0, 6:26, 4:14] = 1
    for _ in range(30):
        image = mask.to(torch.float32)
        out_image, out_mask = augment(image, mask)
        assert out_mask.dtype == torch.uint8 and set(out_mask.unique().tolist()) <= {0, 1}
        assert out_image.shape == (1, S, S) and 0 <= out_image.min() <= out_image.max() <= 1
        # intensity changes move the box's gray level (washout, jitter): cut midway
        lo, hi = out_image[out_mask == 0], out_image[out_mask == 1]
        if len(hi) and len(lo):
            cut = (out_image > (hi.median() + lo.median()) / 2)[0]
            inter = (cut & (out_mask[0] == 1)).sum()
            union = (cut | (out_mask[0] == 1)).sum()
            assert inter / union > 0.8


def test_the_one_warp_path_is_several_times_faster_than_the_v2_pipeline():
    import time

    image, mask = (x.as_subclass(torch.Tensor) for x in _scene())
    image = torch.nn.functional.interpolate(image[None], size=128)[0]
    mask = torch.nn.functional.interpolate(mask[None].float(), size=128)[0].to(torch.uint8)

    def per_image(fn) -> float:  # the best of 5 rounds: a busy machine slows some rounds
        fn(image, mask)
        rounds = []
        for _ in range(5):
            t0 = time.perf_counter()
            for _ in range(10):
                fn(image, mask)
            rounds.append((time.perf_counter() - t0) / 10)
        return min(rounds)

    v2_pipeline = build_cxr_robust_augment()
    slow = per_image(lambda i, m: v2_pipeline(tv_tensors.Image(i), tv_tensors.Mask(m)))
    fast = per_image(build_augment("cxr_robust"))
    assert fast < slow / 1.5, (fast, slow)
