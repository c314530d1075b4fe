"""The backbone and head registries and the two factories everyone builds models with.

Registered items are factories, called by ``build_backbone`` / ``build_head`` with the width
already resolved from the preset (see ``umsrep.models.presets``):

- ``BACKBONES[name](*, width: float, in_chans: int, **kwargs) -> nn.Module`` whose
  ``forward_features(x: [B, 1, H, W]) -> list[Tensor]`` (shallowest first) is described by
  ``feature_channels: list[int]`` and ``name: str``.
- ``HEADS[name](backbone, *, num_classes: int | None, width: float, **kwargs) -> nn.Module``
  whose ``forward(feats, x)`` returns the task output and whose ``kind`` is ``"classification"``,
  ``"segmentation"`` or ``"denoise"``.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from umsrep.models.presets import resolve_width
from umsrep.registry import Registry

BACKBONES: Registry[Any] = Registry(
    "backbone",
    doc="Backbone factories: (*, width, in_chans, **kwargs) -> module with forward_features(x) "
    "returning a list of feature maps (shallowest first), feature_channels and name.",
)
HEADS: Registry[Any] = Registry(
    "head",
    doc="Head factories: (backbone, *, num_classes, width, **kwargs) -> module with "
    "forward(feats, x) and kind in {classification, segmentation, denoise}.",
)


def scale_channels(channels: int, width: float) -> int:
    """``channels`` multiplied by the width multiplier, at least 1."""
    return max(1, int(round(channels * width)))


def build_backbone(
    name: str,
    *,
    preset: str = "default",
    width: float | None = None,
    in_chans: int = 1,
    **kwargs: Any,
) -> nn.Module:
    """A registered backbone; ``width`` (if given) replaces the preset's channel multiplier."""
    factory = BACKBONES.get(name)
    return factory(width=resolve_width(preset, width), in_chans=in_chans, **kwargs)


def build_head(
    name: str,
    backbone: nn.Module,
    *,
    num_classes: int | None = None,
    preset: str = "default",
    width: float | None = None,
    **kwargs: Any,
) -> nn.Module:
    """A registered head sized to ``backbone.feature_channels``.

    ``width`` (if given) replaces the preset's multiplier for the head's own layers; layers that
    mirror the backbone (decoders) follow the backbone's channels instead.
    """
    if not hasattr(backbone, "feature_channels"):
        raise TypeError(
            f"head {name!r}: {type(backbone).__name__} has no feature_channels; build the "
            "backbone with umsrep.models.build_backbone"
        )
    factory = HEADS.get(name)
    return factory(backbone, num_classes=num_classes, width=resolve_width(preset, width), **kwargs)


def require_binary(head: str, num_classes: int | None) -> None:
    """Segmentation and denoising heads produce one channel; refuse another class count."""
    if num_classes not in (None, 1):
        raise ValueError(
            f"head {head!r} produces one output channel (binary logits); got num_classes="
            f"{num_classes}. Leave num_classes unset for segmentation and denoising heads"
        )
