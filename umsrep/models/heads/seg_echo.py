"""``seg_echo``: the symmetric decoder the paper appends at echo_cnn's deepest conv.

3x3 'same' convs with ReLU mirroring the backbone's channels (paper: 256->128->64->32->16->8),
then a 1x1 conv to one channel (logits, pre-sigmoid). 393,089 parameters at the paper preset;
with ``echo_cnn`` it is the authors' 786,497-parameter segmentation network. On a strided
backbone each conv is preceded by a nearest upsample to the next shallower map's size and the
output is upsampled to the input size, so the head also fits ``cdae`` and the ResNets.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from umsrep.models._factory import HEADS, require_binary


class SymmetricDecoderHead(nn.Module):
    """``forward(feats, x) -> logits [B, 1, H, W]`` from ``feats[-1]``."""

    kind = "segmentation"

    def __init__(self, in_channels: list[int]) -> None:
        super().__init__()
        reversed_channels = in_channels[::-1]
        self.convs = nn.ModuleList(
            nn.Sequential(nn.Conv2d(c_in, c_out, 3, padding=1), nn.ReLU(inplace=True))
            for c_in, c_out in zip(reversed_channels, reversed_channels[1:], strict=False)
        )
        self.final = nn.Conv2d(in_channels[0], 1, 1)

    def forward(self, feats: list[torch.Tensor], x: torch.Tensor) -> torch.Tensor:
        h = feats[-1]
        for conv, skip in zip(self.convs, feats[-2::-1], strict=True):
            if h.shape[-2:] != skip.shape[-2:]:
                h = F.interpolate(h, size=skip.shape[-2:], mode="nearest")
            h = conv(h)
        if h.shape[-2:] != x.shape[-2:]:
            h = F.interpolate(h, size=x.shape[-2:], mode="nearest")
        return self.final(h)


@HEADS.register("seg_echo")
def build_seg_echo(
    backbone: nn.Module, *, num_classes: int | None, width: float
) -> SymmetricDecoderHead:
    require_binary("seg_echo", num_classes)
    return SymmetricDecoderHead(list(backbone.feature_channels))
