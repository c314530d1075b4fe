"""What every backbone shares: input-channel handling and the ``forward_features`` contract."""

from __future__ import annotations

import torch
from torch import nn


class Backbone(nn.Module):
    """Base class: subclasses set ``name``, ``feature_channels`` and implement ``_features``.

    ``forward_features(x)`` takes a normalized image ``x: [B, 1, H, W]`` (0-1 scale, per-image
    mean-centred) or ``[B, in_chans, H, W]``; a 1-channel input is repeated to ``in_chans``.
    """

    name: str = "backbone"
    feature_channels: list[int]

    def __init__(self, in_chans: int = 1) -> None:
        super().__init__()
        if in_chans < 1:
            raise ValueError(f"in_chans must be >= 1, got {in_chans}")
        self.in_chans = in_chans

    def _match_channels(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4:
            raise ValueError(f"{self.name}: expected [B, C, H, W], got shape {tuple(x.shape)}")
        if x.shape[1] == self.in_chans:
            return x
        if x.shape[1] == 1:
            return x.expand(-1, self.in_chans, -1, -1)
        raise ValueError(
            f"{self.name}: input has {x.shape[1]} channels; the backbone takes 1 or {self.in_chans}"
        )

    def _features(self, x: torch.Tensor) -> list[torch.Tensor]:
        raise NotImplementedError

    def forward_features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Feature maps, shallowest first, deepest last; channels as ``feature_channels``."""
        return self._features(self._match_channels(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The deepest feature map."""
        return self.forward_features(x)[-1]
