"""Classification heads that pool several levels, or pool where a segmentation head sees lungs."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from umsrep.models import BackboneSpec, ModelSpec, build_model
from umsrep.models.heads.classification import (
    crop_to_guide,
    guide_boxes,
    guided_grid_mean,
    guided_mean,
)
from umsrep.tasks import Task

LUNG = Task(name="lung", kind="segmentation", column="mask", head="seg_cdae",
            head_kwargs={"skips": True}, loss="bce_dice")


def _tb(**head_kwargs) -> Task:
    return Task(name="tb", kind="classification", column="abnormal", classes=("0", "1"),
                head="classification", head_kwargs=head_kwargs, loss="cross_entropy")


def _model(*tasks: Task):
    torch.manual_seed(0)
    spec = ModelSpec(backbone=BackboneSpec(name="cdae", preset="tiny", width=None),
                     tasks=tuple(tasks), image_size=32)
    return build_model(spec).eval()


def test_guided_mean_averages_only_where_the_weights_are():
    feats = torch.arange(16.0).reshape(1, 1, 4, 4)
    left = torch.zeros(1, 1, 8, 8)
    left[..., :4] = 1.0  # the left half, at twice the map's size
    assert guided_mean(feats, left, eps=0).item() == pytest.approx(feats[..., :2].mean().item())
    ones = torch.ones(1, 1, 8, 8)
    assert guided_mean(feats, ones, eps=0).item() == pytest.approx(feats.mean().item())
    assert guided_mean(feats, torch.zeros(1, 1, 8, 8)).item() == 0.0  # no lung: no NaN


def test_a_guided_head_pools_under_the_lung_heads_own_mask():
    model = _model(LUNG, _tb(guide="lung"))
    x = torch.randn(2, 1, 32, 32)
    out = model(x)
    feats = model.backbone.forward_features(x)
    weights = torch.sigmoid(model.heads["lung"](feats, x))
    want = model.heads["tb"].mlp(guided_mean(feats[-1], weights))
    torch.testing.assert_close(out["tb"], want)
    # asked alone, the head still gets the lung weights (the lung output is not returned)
    alone = model(x, ["tb"])
    assert set(alone) == {"tb"}
    torch.testing.assert_close(alone["tb"], want)
    # the unguided head of the same weights pools the whole map: another answer
    model.heads["tb"].guide = None
    assert not torch.allclose(model(x, ["tb"])["tb"], want)


def test_the_classification_loss_does_not_train_the_guiding_head():
    model = _model(LUNG, _tb(guide="lung")).train()
    out = model(torch.randn(2, 1, 32, 32))
    out["tb"].sum().backward()
    lung_grads = [p.grad for p in model.heads["lung"].parameters()]
    assert all(g is None or not g.any() for g in lung_grads)
    assert any(p.grad is not None and p.grad.any() for p in model.backbone.parameters())


def test_a_network_without_the_guide_pools_the_whole_map():
    """A separate baseline model of the classification task alone has no lung head."""
    model = _model(_tb(guide="lung"))
    assert model.heads["tb"].guide is None
    assert model(torch.randn(1, 1, 32, 32))["tb"].shape == (1, 2)


def test_levels_concatenate_the_deepest_maps():
    model = _model(_tb(levels=2))
    channels = model.backbone.feature_channels
    assert model.heads["tb"].mlp[0].in_features == channels[-1] + channels[-2]
    assert model(torch.randn(1, 1, 32, 32))["tb"].shape == (1, 2)
    with pytest.raises(ValueError, match="levels must be"):
        _model(_tb(levels=len(channels) + 1))


def test_the_guide_must_be_a_segmentation_task_of_the_experiment():
    import json

    from tests.runner.conftest import TINY
    from umsrep.config import ConfigError
    from umsrep.experiment import load_experiment

    cfg = json.loads(json.dumps(TINY))
    cls = next(t for t in cfg["tasks"] if t["kind"] == "classification")
    cls["head_kwargs"] = {"guide": "heart"}
    with pytest.raises(ConfigError, match=r"head_kwargs.guide.*not a segmentation task"):
        load_experiment(data=cfg)
    cls["head_kwargs"] = {"crop": True}  # a crop needs a box to cut to
    with pytest.raises(ConfigError, match=r"head_kwargs.crop.*give guide too"):
        load_experiment(data=cfg)
    cls["head_kwargs"] = {"guide": "lung", "crop": "false"}  # a string would read as true
    with pytest.raises(ConfigError, match=r"head_kwargs.crop.*true or false, got 'false'"):
        load_experiment(data=cfg)
    cls["head_kwargs"] = {"dilate": 4}  # nothing to widen
    with pytest.raises(ConfigError, match=r"head_kwargs.dilate.*give guide too"):
        load_experiment(data=cfg)
    for bad in (-1, 2.5, True):
        cls["head_kwargs"] = {"guide": "lung", "dilate": bad}
        with pytest.raises(ConfigError, match=r"head_kwargs.dilate.*whole number of pixels"):
            load_experiment(data=cfg)
    cls["head_kwargs"] = {"guide": "lung", "dilate": 4}
    assert load_experiment(data=cfg).tasks[-1].head_kwargs["dilate"] == 4


def test_convs_widen_the_deepest_map_before_pooling():
    model = _model(LUNG, _tb(guide="lung", convs=2))
    head = model.heads["tb"]
    assert len(head.convs) == 2
    x = torch.randn(2, 1, 32, 32)
    feats = model.backbone.forward_features(x)
    weights = torch.sigmoid(model.heads["lung"](feats, x))
    want = head.mlp(guided_mean(head.convs(feats[-1]), weights))
    torch.testing.assert_close(model(x, ["tb"])["tb"], want)
    # a unit of the convolved map sees farther: a pixel change at the opposite corner of the
    # image moves the corner unit only after the convs (tiny preset: 4 maps, 32 px -> 2x2)
    x2 = x.clone()
    x2[..., -1, -1] += 10.0
    deep, deep2 = feats[-1], model.backbone.forward_features(x2)[-1]
    assert torch.equal(deep[..., 0, 0], deep2[..., 0, 0])
    assert not torch.equal(head.convs(deep)[..., 0, 0], head.convs(deep2)[..., 0, 0])
    with pytest.raises(ValueError, match="convs must be"):
        _model(_tb(convs=-1))


def test_conv_channels_narrow_the_convs_and_the_layer_after_them():
    wide = _model(LUNG, _tb(guide="lung", convs=2)).heads["tb"]
    model = _model(LUNG, _tb(guide="lung", convs=2, conv_channels=64, levels=2))
    head = model.heads["tb"]
    deep = model.backbone.feature_channels[-1]
    narrow = head.mlp[0].out_features * 64 // 256  # scaled by the width, as hidden (256) is
    assert narrow < deep
    convs = [c for c in head.convs.modules() if isinstance(c, torch.nn.Conv2d)]
    assert [(c.in_channels, c.out_channels) for c in convs] == [(deep, narrow), (narrow, narrow)]
    # the pooled vector: the shallower map's own channels and the convs' narrow ones
    assert head.mlp[0].in_features == model.backbone.feature_channels[-2] + narrow
    assert sum(p.numel() for p in head.convs.parameters()) < \
        sum(p.numel() for p in wide.convs.parameters())
    x = torch.randn(2, 1, 32, 32)
    assert model(x, ["tb"])["tb"].shape == (2, 2)
    with pytest.raises(ValueError, match="conv_channels must be"):
        _model(_tb(convs=1, conv_channels=-1))
    with pytest.raises(ValueError, match="give convs >= 1"):  # nothing to narrow: refused
        _model(_tb(conv_channels=64))


def test_gem_pooling_lies_between_the_mean_and_the_max_and_learns_its_exponent():
    model = _model(LUNG, _tb(guide="lung", pool="gem")).train()
    head = model.heads["tb"]
    f = torch.rand(3, 4, 5, 5)
    ones = torch.ones(3, 1, 5, 5)
    gem = head._pool(f, None)
    assert torch.all(gem >= f.mean(dim=(2, 3)) - 1e-6)
    assert torch.all(gem <= f.amax(dim=(2, 3)) + 1e-6)
    torch.testing.assert_close(head._pool(f, ones), gem, atol=1e-3, rtol=1e-3)
    with torch.no_grad():  # p = 1 is the (guided) mean
        head.p.fill_(1.0)
        torch.testing.assert_close(head._pool(f, ones), guided_mean(f, ones))
        head.p.fill_(3.0)
    out = model(torch.randn(2, 1, 32, 32))
    out["tb"].sum().backward()
    assert head.p.grad is not None and head.p.grad != 0
    with pytest.raises(ValueError, match="pool must be"):
        _model(_tb(pool="max"))


def test_guide_boxes_bound_the_pixels_above_half_and_fall_back_to_the_whole_image():
    w = torch.zeros(2, 1, 16, 20)
    w[0, 0, 3:9, 5:12] = 0.9  # rows 3-8, columns 5-11
    w[0, 0, 10, 0] = 0.4  # below the threshold: ignored
    boxes = guide_boxes(w)
    assert boxes[0].tolist() == [5.0, 3.0, 12.0, 9.0]  # x1, y1, x2, y2 in pixel edges
    assert boxes[1].tolist() == [0.0, 0.0, 20.0, 16.0]  # nothing above 0.5: the whole image


def test_grid_cells_are_guided_means_over_the_lung_box():
    # a 4x4 map at a quarter of a 16x16 image; the lung box covers the map's right half
    torch.manual_seed(0)
    feats = torch.randn(1, 3, 4, 4)
    w = torch.zeros(1, 1, 16, 16)
    w[..., 8:] = 1.0
    boxes = guide_boxes(w)
    cells = guided_grid_mean(feats, w, boxes, grid=2, eps=0)
    assert cells.shape == (1, 3, 2, 2)
    # what lies outside the lungs does not reach any cell
    outside = feats.clone()
    outside[..., :2] = 100.0
    torch.testing.assert_close(guided_grid_mean(outside, w, boxes, grid=2, eps=0), cells)
    # the bottom row of the map reaches the bottom cells, not the top ones
    bottom = feats.clone()
    bottom[..., 3, :] += 10.0
    moved = guided_grid_mean(bottom, w, boxes, grid=2, eps=0)
    torch.testing.assert_close(moved[..., 0, :], cells[..., 0, :])
    assert (moved[..., 1, :] > cells[..., 1, :] + 1.0).all()
    # a constant map gives its constant in every cell; one cell of the box is the guided mean
    const = guided_grid_mean(torch.full((1, 3, 4, 4), 3.0), w, boxes, grid=2, eps=0)
    torch.testing.assert_close(const, torch.full((1, 3, 2, 2), 3.0))
    torch.testing.assert_close(guided_grid_mean(feats, w, boxes, grid=1)[..., 0, 0],
                               guided_mean(feats, w), atol=1e-3, rtol=1e-3)


def test_a_grid_head_sees_where_a_feature_lies():
    model = _model(LUNG, _tb(guide="lung", grid=3))
    head = model.heads["tb"]
    assert head.mlp[0].in_features == 9 * model.backbone.feature_channels[-1]
    x = torch.randn(2, 1, 32, 32)
    assert model(x)["tb"].shape == (2, 2)
    # the same features moved to another place of the map: the same mean, other cells
    f = torch.zeros(1, 4, 6, 6)
    f[..., 0, 0] = 1.0
    g = torch.zeros(1, 4, 6, 6)
    g[..., 5, 5] = 1.0
    ones = torch.ones(1, 1, 24, 24)
    boxes = guide_boxes(ones)
    torch.testing.assert_close(guided_mean(f, ones), guided_mean(g, ones))
    assert not torch.allclose(head._pool(f, ones, boxes), head._pool(g, ones, boxes))
    # unguided (no lung head in the network): the whole map in G x G cells
    plain = _model(_tb(guide="lung", grid=3))
    assert plain.heads["tb"].guide is None
    assert plain(x)["tb"].shape == (2, 2)
    with pytest.raises(ValueError, match="grid must be"):
        _model(_tb(grid=-1))


@pytest.mark.filterwarnings("ignore::torch.jit.TracerWarning")
def test_a_traced_grid_head_keeps_the_batch_size_free():
    # umsrep export traces (TorchScript) or captures (torch.export) the model at one batch size
    class TB(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = _model(LUNG, _tb(guide="lung", grid=2))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.model(x)["tb"]

    eager = TB().eval()
    with torch.no_grad():
        traced = torch.jit.trace(eager, torch.randn(2, 1, 32, 32), check_trace=False)
        x = torch.randn(3, 1, 32, 32)
        torch.testing.assert_close(traced(x), eager(x))


def test_crop_to_guide_resamples_the_widened_lung_box_to_the_input_size():
    # a ramp along x: bilinear resampling of a box reproduces it inside the box
    x = torch.arange(8.0).repeat(8, 1)[None, None].expand(2, 1, 8, 8).contiguous()
    w = torch.zeros(2, 1, 8, 8)
    w[0, 0, 2:6, 4:8] = 1.0  # columns 4-7, rows 2-5; image 1 has no lung above 0.5
    xc, wc = crop_to_guide(x, w, margin=0.0)
    assert xc.shape == wc.shape == (2, 1, 8, 8)
    # output column j samples the box [4, 8) at 4 + (j + 0.5) / 2 (pixel edges): value - 0.5
    want = torch.tensor([3.75 + 0.5 * j for j in range(8)]).clamp(max=7.0)
    torch.testing.assert_close(xc[0, 0, 3], want)
    assert (wc[0, 0, 1:-1, 1:-1] == 1.0).all()  # the box is lung all over
    torch.testing.assert_close(xc[1], x[1])  # no lung: the image kept whole, to the pixel
    torch.testing.assert_close(wc[1], w[1])
    # the margin widens the box by a share of its size on each side, within the image
    wide, _ = crop_to_guide(x, w, margin=0.25)  # columns 3-9 -> 3-8
    assert wide[0, 0, 3, 0] < xc[0, 0, 3, 0]
    assert wide[0, 0, 3, -1] == 7.0


def test_a_cropping_head_reads_the_backbone_again_on_the_lung_box():
    model = _model(LUNG, _tb(guide="lung", crop=True))
    assert model.heads["tb"].crop
    calls = []
    model.backbone.register_forward_hook(lambda *_: calls.append(1))
    forward = model.backbone.forward_features
    seen = []

    def recording(x):
        seen.append(x)
        return forward(x)

    model.backbone.forward_features = recording
    x = torch.randn(2, 1, 32, 32)
    out = model(x)
    assert len(seen) == 2  # the whole film (lung), then the lung box (TB)
    feats = forward(x)
    weights = torch.sigmoid(model.heads["lung"](feats, x))
    xc, wc = crop_to_guide(x, weights)
    torch.testing.assert_close(seen[1], xc)
    want = model.heads["tb"].mlp(guided_mean(model.heads["tb"].convs(forward(xc)[-1]), wc))
    torch.testing.assert_close(out["tb"], want)
    # the TB loss trains the backbone through the crop, never the lung head
    model.train()
    model(x)["tb"].sum().backward()
    assert all(p.grad is None or not p.grad.any() for p in model.heads["lung"].parameters())
    assert any(p.grad is not None and p.grad.any() for p in model.backbone.parameters())


def test_crop_needs_the_guide():
    with pytest.raises(ValueError, match="crop cuts the input to the guide's box"):
        _model(LUNG, _tb(crop=True))
    plain = _model(_tb(guide="lung", crop=True))  # no lung head here: neither guide nor crop
    assert plain.heads["tb"].guide is None and not plain.heads["tb"].crop
    assert plain(torch.randn(1, 1, 32, 32))["tb"].shape == (1, 2)


class _BoxLung(torch.nn.Module):
    """A lung head that always sees lung in rows 4-19, columns 8-27 of a 32 px image."""

    def forward(self, feats, x):
        logits = torch.full((x.shape[0], 1, *x.shape[-2:]), -10.0)
        logits[..., 4:20, 8:28] = 10.0
        return logits


def test_grad_cam_of_a_cropping_head_lies_where_the_box_was_cut():
    from umsrep.derive import grad_cam
    from umsrep.models.heads.classification import crop_boxes

    model = _model(LUNG, _tb(guide="lung", crop=True))
    model.heads["lung"] = _BoxLung()
    x = torch.randn(2, 1, 32, 32)
    with torch.no_grad():  # class 1's logit grows with every pooled feature: a map not all 0
        for p in model.heads["tb"].mlp.parameters():
            p.abs_()
    heat = grad_cam(model, "tb", x, target_class=1)
    assert heat.shape == (2, 1, 32, 32)
    box = crop_boxes(torch.sigmoid(_BoxLung()(None, x)))[0].tolist()
    assert box == pytest.approx([7.0, 3.2, 29.0, 20.8])  # columns 8-27, rows 4-19, +5 % a side
    inside = torch.zeros(32, 32, dtype=torch.bool)
    inside[3:21, 7:29] = True
    assert (heat[..., ~inside] == 0).all()  # nothing where the head never looked
    assert (heat[..., inside] > 0).any()


def test_dilate_widens_the_guide_the_head_pools_under():
    """``dilate=N``: a max filter of side 2N + 1 on the guide's weights, then the same guided
    pooling: a feature just outside the predicted lung now counts; ``dilate`` needs the guide
    and falls away with it in a network without the guide's head."""
    from umsrep.models.heads.classification import dilate_guide

    w = torch.zeros(1, 1, 8, 8)
    w[..., 3, 3] = 1.0
    wide = dilate_guide(w, 1)
    assert wide.sum() == 9 and wide[..., 2:5, 2:5].eq(1).all()
    assert dilate_guide(w, 0) is w
    model = _model(LUNG, _tb(guide="lung", dilate=4))
    assert model.heads["tb"].dilate == 4
    x = torch.randn(2, 1, 32, 32)
    feats = model.backbone.forward_features(x)
    weights = torch.sigmoid(model.heads["lung"](feats, x))
    head = model.heads["tb"]
    want = head.mlp(guided_mean(head.convs(feats[-1]), dilate_guide(weights, 4)))
    torch.testing.assert_close(model(x)["tb"], want)
    assert not torch.allclose(want, head.mlp(guided_mean(head.convs(feats[-1]), weights)))
    # the doubling running maximum equals max_pool2d's max filter to the bit, at every radius
    # (odd and even, past the image's size), in bf16 and channels_last too
    g = torch.Generator().manual_seed(0)
    soft = torch.rand(3, 1, 23, 17, generator=g)
    for px in (1, 2, 3, 5, 8, 13, 30):
        for t in (soft, soft.bfloat16().contiguous(memory_format=torch.channels_last)):
            got = dilate_guide(t, px)
            assert got.dtype == t.dtype and torch.equal(
                got, F.max_pool2d(t, 2 * px + 1, stride=1, padding=px)), px
    with pytest.raises(ValueError, match="dilate widens the guide"):
        _model(LUNG, _tb(dilate=2))
    for bad in (-1, 2.5):  # 2.5 would have been cut to 2 without a word
        with pytest.raises(ValueError, match="dilate must be a whole number of pixels >= 0"):
            _model(LUNG, _tb(guide="lung", dilate=bad))
    plain = _model(_tb(guide="lung", dilate=4))  # no lung head: whole-map pooling
    assert plain.heads["tb"].guide is None and plain.heads["tb"].dilate == 0
