"""Grad-CAM on a tiny multi-task model trained to find a bright square in 32x32 images."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from umsrep.derive import grad_cam, overlay_heatmap
from umsrep.models.multitask import MultiTaskModel

SIZE, SIDE = 32, 6


class TinyBackbone(nn.Module):
    """Two conv blocks (the second at stride 2) and a decoder conv that forward_features skips."""

    def __init__(self) -> None:
        super().__init__()
        self.block1 = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(inplace=True))
        self.block2 = nn.Sequential(
            nn.Conv2d(8, 16, 3, stride=2, padding=1), nn.BatchNorm2d(16), nn.ReLU(inplace=True)
        )
        self.decoder = nn.Conv2d(16, 1, 3, padding=1)  # only a reconstruction head would use it

    def forward_features(self, x: torch.Tensor) -> list[torch.Tensor]:
        f1 = self.block1(x)
        return [f1, self.block2(f1)]


class ClassifierHead(nn.Module):
    def __init__(self, channels: int = 16, classes: int = 2) -> None:
        super().__init__()
        self.drop = nn.Dropout(0.5)
        self.fc = nn.Linear(channels, classes)

    def forward(self, feats: list[torch.Tensor], x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.drop(feats[-1].mean(dim=(2, 3))))


class SegHead(nn.Module):
    def forward(self, feats: list[torch.Tensor], x: torch.Tensor) -> torch.Tensor:
        return nn.functional.interpolate(feats[-1][:, :1], size=x.shape[-2:])


def make_batch(n: int, gen: torch.Generator, positive: bool | None = None):
    """Images [n, 1, 32, 32] (noise, plus a bright square for label 1), labels, square corners."""
    x = torch.randn(n, 1, SIZE, SIZE, generator=gen) * 0.2
    labels = torch.randint(0, 2, (n,), generator=gen)
    if positive is not None:
        labels.fill_(int(positive))
    corners = torch.randint(0, SIZE - SIDE + 1, (n, 2), generator=gen)
    for i in range(n):
        if labels[i]:
            top, left = corners[i].tolist()
            x[i, 0, top : top + SIDE, left : left + SIDE] += 1.5
    return x, labels, corners


@pytest.fixture(scope="module")
def trained() -> MultiTaskModel:
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(0)
    model = MultiTaskModel(TinyBackbone(), {"square": ClassifierHead(), "seg": SegHead()})
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    model.train()
    for _ in range(60):
        x, y, _ = make_batch(32, gen)
        loss = nn.functional.cross_entropy(model.forward_task(x, "square"), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    model.eval()
    x, y, _ = make_batch(64, gen)
    with torch.no_grad():
        accuracy = (model.forward_task(x, "square").argmax(1) == y).float().mean()
    assert accuracy > 0.9, f"the tiny model did not learn the task (accuracy {accuracy:.2f})"
    return model


def test_heatmap_mass_falls_on_the_square(trained: MultiTaskModel) -> None:
    x, _, corners = make_batch(24, torch.Generator().manual_seed(1), positive=True)
    heat = grad_cam(trained, "square", x)
    assert heat.shape == (24, 1, SIZE, SIZE)
    hits, mass = 0, []
    for i in range(24):
        top, left = corners[i].tolist()
        region = torch.zeros(SIZE, SIZE, dtype=torch.bool)
        # one pixel of margin: the feature map is at stride 2 and upsampled bilinearly
        region[max(top - 1, 0) : top + SIDE + 1, max(left - 1, 0) : left + SIDE + 1] = True
        h = heat[i, 0]
        hits += bool(region.flatten()[h.argmax()])
        mass.append(float(h[region].sum() / h.sum()))
    assert hits >= 20, f"heatmap peak inside the square for only {hits}/24 images"
    # the region is ~6% of the image; most of the heat must lie there
    assert np.mean(mass) > 0.5, f"mean heat mass inside the square {np.mean(mass):.2f}"


def test_values_in_unit_range_and_per_image_max_is_one(trained: MultiTaskModel) -> None:
    x, _, _ = make_batch(8, torch.Generator().manual_seed(2), positive=True)
    heat = grad_cam(trained, "square", x, target_class=1)
    assert heat.min() >= 0.0 and heat.max() <= 1.0
    assert torch.allclose(heat.amax(dim=(1, 2, 3)), torch.ones(8))
    assert not heat.requires_grad


def test_all_zero_map_stays_zero() -> None:
    backbone = TinyBackbone()
    head = ClassifierHead()
    nn.init.zeros_(head.fc.weight)  # zero gradient: nothing explains the class
    model = MultiTaskModel(backbone, {"cls": head})
    heat = grad_cam(model, "cls", torch.randn(2, 1, 16, 16))
    assert heat.shape == (2, 1, 16, 16)
    assert torch.count_nonzero(heat) == 0


def test_model_flags_modes_and_grads_are_left_alone(trained: MultiTaskModel) -> None:
    model = trained
    model.train()
    model.heads["square"].eval()
    model.backbone.block1.requires_grad_(False)
    flags = {name: p.requires_grad for name, p in model.named_parameters()}
    modes = {name: m.training for name, m in model.named_modules()}
    stats = model.backbone.block2[1].running_mean.clone()
    params = {name: p.detach().clone() for name, p in model.named_parameters()}
    try:
        with torch.no_grad():  # callers often hold no_grad; Grad-CAM still needs gradients
            heat = grad_cam(model, "square", make_batch(4, torch.Generator().manual_seed(3))[0])
        assert heat.shape == (4, 1, SIZE, SIZE)
        assert {name: p.requires_grad for name, p in model.named_parameters()} == flags
        assert {name: m.training for name, m in model.named_modules()} == modes
        assert torch.equal(model.backbone.block2[1].running_mean, stats)
        for name, p in model.named_parameters():
            assert p.grad is None, name
            assert torch.equal(p, params[name]), name
    finally:
        model.backbone.block1.requires_grad_(True)
        model.eval()


def test_explicit_layer_and_target_class(trained: MultiTaskModel) -> None:
    x, _, _ = make_batch(4, torch.Generator().manual_seed(4), positive=True)
    shallow = grad_cam(trained, "square", x, layer=trained.backbone.block1[0])
    deep = grad_cam(trained, "square", x, layer=trained.backbone.block2[0])
    assert shallow.shape == deep.shape == (4, 1, SIZE, SIZE)
    assert not torch.allclose(shallow, deep)
    assert torch.equal(grad_cam(trained, "square", x), grad_cam(trained, "square", x, layer=None))
    with pytest.raises(ValueError, match="target_class=5 but the head has 2 classes"):
        grad_cam(trained, "square", x, target_class=5)
    with pytest.raises(ValueError, match="the given layer"):
        grad_cam(trained, "square", x, layer=trained.backbone.decoder)


def test_refuses_non_classification_heads_and_bad_input(trained: MultiTaskModel) -> None:
    x = torch.randn(2, 1, SIZE, SIZE)
    with pytest.raises(ValueError, match="needs a classification head"):
        grad_cam(trained, "seg", x)
    with pytest.raises(KeyError, match="unknown task 'lungs'"):
        grad_cam(trained, "lungs", x)
    with pytest.raises(ValueError, match=r"\[B, 1, H, W\]"):
        grad_cam(trained, "square", torch.randn(2, 3, SIZE, SIZE))


def test_overlay_heatmap_colors_the_hot_region() -> None:
    image = np.full((20, 30), 100, dtype=np.uint8)
    heat = np.zeros((10, 15), dtype=np.float32)  # smaller than the image: resized
    heat[:5, :7] = 1.0
    out = overlay_heatmap(image, heat, alpha=0.5)
    assert out.shape == (20, 30, 3) and out.dtype == np.uint8
    # JET: 1.0 is red (RGB), 0.0 is blue
    hot, cold = out[2, 2].astype(int), out[18, 28].astype(int)
    assert hot[0] > hot[2] and cold[2] > cold[0]
    assert np.array_equal(overlay_heatmap(image, heat, alpha=0.0)[..., 0], image)
    with pytest.raises(ValueError, match=r"heat must lie in \[0, 1\]"):
        overlay_heatmap(image, heat * 2)
    with pytest.raises(ValueError, match="uint8"):
        overlay_heatmap(image.astype(np.float32), heat)
