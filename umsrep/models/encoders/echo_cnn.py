"""``echo_cnn``: the paper's supervised Doppler echo backbone (section 4.2.1, Figure 8).

Six 3x3 'same' convolutions with ReLU, dilation 2 on layers 4-6, no pooling (full resolution
throughout). Paper widths 8-16-32-64-128-256. The supervised pretraining network is this plus
the ``classification`` head (GAP, FC 256->256, dropout 0.5, FC 256->3): 460,115 trainable
parameters with a 3-channel input, as in the paper's Table 8 (459,971 with a 1-channel input).
"""

from __future__ import annotations

import torch
from torch import nn

from umsrep.models._factory import BACKBONES, scale_channels
from umsrep.models.encoders._base import Backbone

PAPER_CHANNELS = (8, 16, 32, 64, 128, 256)
PAPER_DILATIONS = (1, 1, 1, 2, 2, 2)


class EchoCNN(Backbone):
    """``forward_features(x: [B,1,H,W]) -> 6 maps [B, C_i, H, W]``."""

    name = "echo_cnn"

    def __init__(
        self,
        *,
        width: float = 1.0,
        in_chans: int = 1,
        channels: tuple[int, ...] = PAPER_CHANNELS,
        dilations: tuple[int, ...] = PAPER_DILATIONS,
    ) -> None:
        super().__init__(in_chans)
        if len(channels) != len(dilations):
            raise ValueError(f"echo_cnn: {len(channels)} channels but {len(dilations)} dilations")
        self.feature_channels = [scale_channels(c, width) for c in channels]
        c_ins = [in_chans, *self.feature_channels[:-1]]
        self.blocks = nn.ModuleList(
            nn.Sequential(nn.Conv2d(c_in, c_out, 3, padding=d, dilation=d), nn.ReLU(inplace=True))
            for c_in, c_out, d in zip(c_ins, self.feature_channels, dilations, strict=True)
        )

    def _features(self, x: torch.Tensor) -> list[torch.Tensor]:
        feats = []
        for block in self.blocks:
            x = block(x)
            feats.append(x)
        return feats


@BACKBONES.register("echo_cnn")
def build_echo_cnn(
    *,
    width: float,
    in_chans: int,
    channels: tuple[int, ...] = PAPER_CHANNELS,
    dilations: tuple[int, ...] = PAPER_DILATIONS,
):
    return EchoCNN(
        width=width, in_chans=in_chans, channels=tuple(channels), dilations=tuple(dilations)
    )
