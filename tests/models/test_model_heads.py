"""Head behaviour beyond shapes: weight transfer from the denoiser, frozen parts, ResNet files."""

from __future__ import annotations

import pytest
import torch

from umsrep.models import build_backbone, build_head, count_trainable_params


@pytest.fixture()
def cdae_and_denoiser():
    torch.manual_seed(0)
    backbone = build_backbone("cdae", preset="tiny")
    denoise = build_head("denoise", backbone)
    for p in denoise.parameters():  # make the "trained" weights recognizable
        p.data.normal_()
    return backbone, denoise


def test_denoise_output_is_linear_in_normalized_space(cdae_and_denoiser):
    backbone, denoise = cdae_and_denoiser
    x = torch.randn(2, 1, 32, 32)
    out = denoise(backbone.forward_features(x), x)
    assert out.shape == x.shape
    assert out.min() < 0 < out.max(), "a mean-centred reconstruction must reach both signs"


def test_seg_cdae_starts_from_denoiser_except_final_conv(cdae_and_denoiser):
    backbone, denoise = cdae_and_denoiser
    seg = build_head("seg_cdae", backbone)
    copied = seg.init_from_denoise(denoise.state_dict())
    assert copied and not any(k.startswith("final.") for k in copied)
    for key, value in seg.state_dict().items():
        if key.startswith("final."):
            assert not torch.equal(value, denoise.state_dict()[key])
        else:
            torch.testing.assert_close(value, denoise.state_dict()[key])


def test_seg_cdae_with_skips_copies_what_fits(cdae_and_denoiser):
    backbone, denoise = cdae_and_denoiser
    seg = build_head("seg_cdae", backbone, skips=True)
    copied = seg.init_from_denoise(denoise)
    # the last block (to input resolution) has no skip input, so its conv fits; the others
    # take concatenated skips: their convs keep their init (bias too), their batch norms fit
    last = len(seg.blocks) - 1
    assert {f"blocks.{last}.0.weight", f"blocks.{last}.0.bias", "blocks.0.1.weight"} <= set(copied)
    assert "blocks.0.0.weight" not in copied and "blocks.0.0.bias" not in copied
    mine, theirs = seg.state_dict(), denoise.state_dict()
    for key in copied:
        torch.testing.assert_close(mine[key], theirs[key])
    x = torch.randn(2, 1, 32, 32)
    assert seg(backbone.forward_features(x), x).shape == (2, 1, 32, 32)


def test_seg_cdae_refuses_a_foreign_state_dict(cdae_and_denoiser):
    backbone, _ = cdae_and_denoiser
    seg = build_head("seg_cdae", backbone)
    with pytest.raises(ValueError, match="denoise head"):
        seg.init_from_denoise({"fc.weight": torch.zeros(2, 2)})


def test_seg_dilated_reconstructor_is_frozen_but_passes_gradient(cdae_and_denoiser, caplog):
    backbone, denoise = cdae_and_denoiser
    head = build_head("seg_dilated", backbone, width=0.5)
    x = torch.randn(2, 1, 32, 32)
    with caplog.at_level("WARNING"):
        head(backbone.forward_features(x), x)
    assert "init_from_denoise" in caplog.text
    head.init_from_denoise(denoise)
    assert count_trainable_params(head) == count_trainable_params(head.net)
    head.train()
    assert not head.reconstructor.training and head.net.training
    before = head.reconstructor.blocks[0][1].running_mean.clone()
    backbone.zero_grad()
    head(backbone.forward_features(x), x).mean().backward()
    torch.testing.assert_close(head.reconstructor.blocks[0][1].running_mean, before)
    assert all(p.grad is None for p in head.reconstructor.parameters())
    assert sum(p.grad.abs().sum() for p in backbone.parameters()) > 0
    restored = build_head("seg_dilated", backbone, width=0.5)
    restored.load_state_dict(head.state_dict())
    assert bool(restored.reconstructor_loaded)


def test_seg_dilated_on_image_ignores_backbone(cdae_and_denoiser):
    backbone, _ = cdae_and_denoiser
    head = build_head("seg_dilated", backbone, preset="tiny", source="image").eval()
    x = torch.randn(2, 1, 32, 32)
    feats = backbone.forward_features(x)
    torch.testing.assert_close(head(feats, x), head([f * 0 for f in feats], x))
    assert not torch.allclose(head(feats, x), head(feats, torch.randn(2, 1, 32, 32)))


def test_resnet_loads_a_user_state_dict(tmp_path):
    torchvision = pytest.importorskip("torchvision")
    torch.manual_seed(0)
    rgb = torchvision.models.resnet18(weights=None)
    path = tmp_path / "resnet18.pt"
    torch.save(rgb.state_dict(), path)
    backbone = build_backbone("resnet18", width=1.0, state_dict_path=str(path))
    torch.testing.assert_close(backbone.net.conv1.weight, rgb.conv1.weight.sum(dim=1, keepdim=True))
    torch.testing.assert_close(backbone.net.layer4[1].conv2.weight, rgb.layer4[1].conv2.weight)
    with pytest.raises(ValueError, match="width"):
        build_backbone("resnet18", width=0.25, state_dict_path=str(path))
    with pytest.raises(FileNotFoundError, match="missing.pt"):
        build_backbone("resnet18", state_dict_path=str(tmp_path / "missing.pt"))


@pytest.mark.parametrize("head_name", ["seg_cdae", "seg_dilated"])
def test_init_from_pretrained_uses_a_denoiser_and_skips_a_classifier(head_name, cdae_and_denoiser):
    backbone, denoise = cdae_and_denoiser
    head = build_head(head_name, backbone, preset="tiny")
    assert head.init_from_pretrained(denoise.state_dict())
    classifier = build_head("classification", backbone, num_classes=3, preset="tiny")
    before = {k: v.clone() for k, v in head.state_dict().items()}
    assert head.init_from_pretrained(classifier.state_dict()) == []
    for key, value in head.state_dict().items():
        torch.testing.assert_close(value, before[key])
