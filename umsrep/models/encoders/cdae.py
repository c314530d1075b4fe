"""``cdae``: the encoder of the paper's CXR convolutional denoising autoencoder (section 4.1.1).

Four 3x3 stride-2 convolutions, each followed by batch norm and ReLU (strided convolutions
instead of pooling, after Zeiler et al. 2010). Paper widths 32-64-128-256 (388,800 trainable
parameters, conv biases kept as in Keras). The decoder is the ``denoise`` head.
"""

from __future__ import annotations

import torch
from torch import nn

from umsrep.models._factory import BACKBONES, scale_channels
from umsrep.models.encoders._base import Backbone

PAPER_CHANNELS = (32, 64, 128, 256)


def conv_bn_relu(c_in: int, c_out: int, stride: int = 1) -> nn.Sequential:
    """3x3 conv ('same' padding at stride 1) + batch norm + ReLU."""
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1),
        nn.BatchNorm2d(c_out),
        nn.ReLU(inplace=True),
    )


class CDAEEncoder(Backbone):
    """``forward_features(x: [B,1,H,W]) -> 4 maps [B, C_i, H/2^i, W/2^i]`` (i = 1..4, ceil)."""

    name = "cdae"

    def __init__(
        self, *, width: float = 1.0, in_chans: int = 1, channels: tuple[int, ...] = PAPER_CHANNELS
    ) -> None:
        super().__init__(in_chans)
        self.feature_channels = [scale_channels(c, width) for c in channels]
        c_ins = [in_chans, *self.feature_channels[:-1]]
        self.blocks = nn.ModuleList(
            conv_bn_relu(c_in, c_out, stride=2)
            for c_in, c_out in zip(c_ins, self.feature_channels, strict=True)
        )

    def _features(self, x: torch.Tensor) -> list[torch.Tensor]:
        feats = []
        for block in self.blocks:
            x = block(x)
            feats.append(x)
        return feats


@BACKBONES.register("cdae")
def build_cdae(*, width: float, in_chans: int, channels: tuple[int, ...] = PAPER_CHANNELS):
    return CDAEEncoder(width=width, in_chans=in_chans, channels=tuple(channels))
