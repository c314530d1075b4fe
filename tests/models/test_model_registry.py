"""Every registered backbone and every head on every backbone: shapes, forward and backward."""

from __future__ import annotations

import pytest
import torch

from umsrep.models import (
    BACKBONES,
    HEADS,
    MultiTaskModel,
    build_backbone,
    build_head,
)

SIZES = (32, 48)


@pytest.fixture(scope="module")
def tiny_backbones():
    torch.manual_seed(0)
    return {name: build_backbone(name, preset="tiny") for name in BACKBONES}


def test_registries_hold_the_promised_names():
    assert {"cdae", "echo_cnn", "resnet18", "resnet34"} <= set(BACKBONES)
    assert {"denoise", "classification", "seg_cdae", "seg_dilated", "seg_echo"} <= set(HEADS)


@pytest.mark.parametrize("name", list(BACKBONES))
def test_backbone_features_match_declared_channels(name, tiny_backbones):
    backbone = tiny_backbones[name]
    assert backbone.name == name
    x = torch.randn(2, 1, 32, 32, requires_grad=True)
    feats = backbone.forward_features(x)
    assert [f.shape[1] for f in feats] == backbone.feature_channels
    sizes = [f.shape[-1] for f in feats]
    assert sizes == sorted(sizes, reverse=True), "features must go shallowest to deepest"
    feats[-1].mean().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


@pytest.mark.parametrize("name", list(BACKBONES))
def test_three_channel_backbone_repeats_grayscale_input(name):
    torch.manual_seed(0)
    backbone = build_backbone(name, preset="tiny", in_chans=3).eval()
    x = torch.randn(1, 1, 32, 32)
    gray = backbone.forward_features(x)[-1]
    rgb = backbone.forward_features(x.repeat(1, 3, 1, 1))[-1]
    torch.testing.assert_close(gray, rgb)


def test_width_multiplies_channels():
    assert build_backbone("cdae", preset="paper").feature_channels == [32, 64, 128, 256]
    assert build_backbone("cdae", preset="tiny").feature_channels == [8, 16, 32, 64]
    assert build_backbone("echo_cnn", width=0.5).feature_channels == [4, 8, 16, 32, 64, 128]
    assert build_backbone("resnet18", width=0.25).feature_channels == [16, 16, 32, 64, 128]


@pytest.mark.parametrize("backbone_name", list(BACKBONES))
@pytest.mark.parametrize("head_name", list(HEADS))
def test_head_forward_backward(head_name, backbone_name, tiny_backbones):
    backbone = tiny_backbones[backbone_name]
    num_classes = 3 if head_name == "classification" else None
    head = build_head(head_name, backbone, num_classes=num_classes, preset="tiny")
    model = MultiTaskModel(backbone, {"task": head}).train()
    model.zero_grad()
    for size in SIZES:
        x = torch.randn(2, 1, size, size)
        out = model(x)["task"]
        expected = (2, 3) if head.kind == "classification" else (2, 1, size, size)
        assert out.shape == expected
        assert torch.isfinite(out).all()
    out.square().mean().backward()
    trainable = [p for p in head.parameters() if p.requires_grad]
    assert trainable and all(p.grad is not None for p in trainable)
    # connected to the backbone (values may be zero: tiny random no-BN nets have dead ReLUs)
    assert all(p.grad is not None for p in backbone.parameters()), "backbone not in the graph"


def test_classification_head_needs_num_classes(tiny_backbones):
    with pytest.raises(ValueError, match="num_classes"):
        build_head("classification", tiny_backbones["cdae"])


def test_segmentation_head_refuses_several_classes(tiny_backbones):
    with pytest.raises(ValueError, match="one output channel"):
        build_head("seg_cdae", tiny_backbones["cdae"], num_classes=3)


def test_unknown_preset_and_name_are_refused():
    with pytest.raises(ValueError, match="preset"):
        build_backbone("cdae", preset="huge")
    with pytest.raises(KeyError, match="known: cdae"):
        build_backbone("vgg")
