"""Separate (baseline) models, one per task, trained from random initialization (Figure 4).

``build_separate_model(kind, arch=...)`` returns a ``MultiTaskModel`` with one head named
``task_name`` (default: ``kind``), so the baseline runs through the same loop as the shared
approach.

- ``arch="same"``: the shared approach's backbone + head, freshly initialized.
- ``arch="paper"``: the authors' separate models. classification: their Hydra-paper CNN
  (1,573,506 parameters at 2 classes) behind an identity backbone; segmentation: the
  full-resolution dilated network (786,497) as ``echo_cnn`` + ``seg_echo``; denoise: our CDAE
  (the paper's 800,067 is unresolved, see ``umsrep.models.presets``).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from umsrep.models._factory import build_backbone, build_head, scale_channels
from umsrep.models.encoders._base import Backbone
from umsrep.models.multitask import MultiTaskModel
from umsrep.models.presets import resolve_width

KINDS = ("classification", "segmentation", "denoise")
ARCHS = ("same", "paper")


class IdentityBackbone(Backbone):
    """``forward_features(x) -> [x]``: lets a self-contained network act as a head."""

    name = "identity"

    def __init__(self, in_chans: int = 1) -> None:
        super().__init__(in_chans)
        self.feature_channels = [in_chans]

    def _features(self, x: torch.Tensor) -> list[torch.Tensor]:
        return [x]


class PaperClassifier(nn.Module):
    """The authors' separate classifier: ``forward(feats, x) -> logits [B, num_classes]``.

    3x3 'same' convs with ReLU, 2x2 max-pooling after each of the first five:
    1-16-32-64, then 128-256-512 with dilation 2; GAP; dense 512 -> classes. No hidden dense
    layer, no dropout. 1,573,506 parameters at width 1 and 2 classes. Reads ``x`` only.
    """

    kind = "classification"

    def __init__(self, num_classes: int, *, width: float = 1.0, in_chans: int = 1) -> None:
        super().__init__()
        channels = [scale_channels(c, width) for c in (16, 32, 64, 128, 256, 512)]
        layers: list[nn.Module] = []
        c_in = in_chans
        for i, (c_out, d) in enumerate(zip(channels, (1, 1, 1, 2, 2, 2), strict=True)):
            layers += [nn.Conv2d(c_in, c_out, 3, padding=d, dilation=d), nn.ReLU(inplace=True)]
            if i < 5:
                layers.append(nn.MaxPool2d(2, ceil_mode=True))
            c_in = c_out
        self.features = nn.Sequential(*layers)
        self.fc = nn.Linear(c_in, num_classes)

    def forward(self, feats: list[torch.Tensor], x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.features(x).mean(dim=(2, 3)))


def _default_head(kind: str, backbone: str) -> str:
    if kind == "segmentation":
        return "seg_echo" if backbone == "echo_cnn" else "seg_cdae"
    return kind


def build_separate_model(
    kind: str,
    *,
    arch: str = "same",
    preset: str = "default",
    width: float | None = None,
    num_classes: int | None = None,
    backbone: str = "cdae",
    head: str | None = None,
    task_name: str | None = None,
    **head_kwargs: Any,
) -> MultiTaskModel:
    """A freshly initialized single-task model honouring the ``MultiTaskModel`` contract.

    ``backbone`` / ``head`` choose the ``same`` architecture (head defaults: classification ->
    ``classification``, segmentation -> ``seg_cdae`` or ``seg_echo`` on ``echo_cnn``,
    denoise -> ``denoise``); they are ignored for ``arch="paper"``.
    """
    if kind not in KINDS:
        raise ValueError(f"separate model kind {kind!r} is unknown; use one of {KINDS}")
    if arch not in ARCHS:
        raise ValueError(f"separate model arch {arch!r} is unknown; use one of {ARCHS}")
    name = task_name or kind
    if arch == "paper":
        backbone, head = ("cdae", "denoise") if kind == "denoise" else ("echo_cnn", "seg_echo")
        if kind == "classification":
            if num_classes is None:
                raise ValueError("separate classification model needs num_classes")
            net = PaperClassifier(num_classes, width=resolve_width(preset, width))
            return MultiTaskModel(IdentityBackbone(), {name: net})
    bb = build_backbone(backbone, preset=preset, width=width)
    head_name = head or _default_head(kind, backbone)
    task_head = build_head(
        head_name, bb, num_classes=num_classes, preset=preset, width=width, **head_kwargs
    )
    if getattr(task_head, "kind", kind) != kind:
        raise ValueError(f"head {head_name!r} is a {task_head.kind} head, not {kind}")
    return MultiTaskModel(bb, {name: task_head})
