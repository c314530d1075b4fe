"""``denoise`` and ``seg_cdae``: the CDAE's symmetric upsampling decoder as a head.

The decoder mirrors the backbone: one block per feature map, deepest first, each a nearest
upsample (Keras ``UpSampling2D``) to the next shallower map's size (the input size for the last
block), a 3x3 conv to that map's channel count, batch norm and ReLU; then a 3x3 conv to one
channel. On ``cdae`` at the paper preset (blocks 256->128->64->32->32, conv 32->1) it has
397,345 parameters; with the encoder, 786,145 (the paper reports 800,067, see ``presets``).

- ``denoise``: output is the reconstruction, linear, in the input's normalized space (per-image
  mean-centred, 0-1 scale). ``cdae`` + ``denoise`` is the CDAE trained in pretraining.
- ``seg_cdae``: the same network with the last conv replaced by a fresh 1-channel conv giving
  segmentation logits (the paper: "the entire CDAE with the final conv replaced");
  ``init_from_denoise`` copies the pretrained decoder into it. ``skips=True`` adds U-Net-style
  concatenations of the encoder maps (a umsrep option, not in the paper); the blocks whose
  shapes then differ start from random init.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import nn

from umsrep.models._factory import HEADS, require_binary
from umsrep.models.encoders.cdae import conv_bn_relu

logger = logging.getLogger(__name__)


class CDAEDecoder(nn.Module):
    """``forward(feats, x) -> [B, 1, H, W]`` at the size of ``x``.

    ``in_channels`` are the backbone's ``feature_channels`` (shallowest first).
    """

    kind = "denoise"

    def __init__(self, in_channels: list[int], *, skips: bool = False) -> None:
        super().__init__()
        if not in_channels:
            raise ValueError("CDAE decoder needs at least one feature map")
        self.skips = skips
        n = len(in_channels)
        # block i takes level n-1-i up to level n-2-i (the last block goes to input resolution)
        targets = [*in_channels[-2::-1], in_channels[0]]
        blocks, c_prev = [], in_channels[-1]
        for i, c_out in enumerate(targets):
            has_skip = skips and i < n - 1
            blocks.append(conv_bn_relu(c_prev + (c_out if has_skip else 0), c_out))
            c_prev = c_out
        self.blocks = nn.ModuleList(blocks)
        self.final = nn.Conv2d(c_prev, 1, 3, padding=1)

    def forward(self, feats: list[torch.Tensor], x: torch.Tensor) -> torch.Tensor:
        h = feats[-1]
        shallower = feats[-2::-1]
        for i, block in enumerate(self.blocks):
            if i < len(shallower):
                skip = shallower[i]
                h = F.interpolate(h, size=skip.shape[-2:], mode="nearest")
                if self.skips:
                    h = torch.cat([h, skip], dim=1)
            else:
                h = F.interpolate(h, size=x.shape[-2:], mode="nearest")
            h = block(h)
        return self.final(h)


class SegCDAEHead(CDAEDecoder):
    """The CDAE decoder with a fresh 1-channel final conv: logits ``[B, 1, H, W]``."""

    kind = "segmentation"

    def init_from_denoise(self, state: Mapping[str, torch.Tensor] | nn.Module) -> list[str]:
        """Copy a trained ``denoise`` head's weights, except its final conv (replaced, as in
        the paper). Tensors whose shape differs (skip blocks) keep their init. Returns the keys
        copied; raises if nothing fits (a state dict of another head)."""
        source = state.state_dict() if isinstance(state, nn.Module) else state
        own = self.state_dict()
        # a module (conv, BN) is copied whole or not at all
        misfit = {
            k.rsplit(".", 1)[0] for k, v in source.items() if k in own and own[k].shape != v.shape
        }
        copied = {
            k: v
            for k, v in source.items()
            if k in own and not k.startswith("final.") and k.rsplit(".", 1)[0] not in misfit
        }
        if not copied:
            raise ValueError(
                "init_from_denoise: no tensor of the given state dict fits this seg_cdae head; "
                "pass the state_dict of a denoise head built on the same backbone"
            )
        skipped = sorted(k for k in own if not k.startswith("final.") and k not in copied)
        if skipped:
            logger.info(
                "seg_cdae: %d tensors keep their init (shapes differ): %s",
                len(skipped),
                ", ".join(skipped),
            )
        self.load_state_dict(copied, strict=False)
        return sorted(copied)

    def init_from_pretrained(self, state: Mapping[str, torch.Tensor] | nn.Module) -> list[str]:
        """``init_from_denoise`` for whatever head the backbone was pretrained with: a state dict
        that is not a denoise head (e.g. a supervised classifier) is skipped with a log line and
        ``[]`` is returned, so the head keeps its random init."""
        try:
            return self.init_from_denoise(state)
        except ValueError as err:
            logger.info("%s: pretrained head not used (%s)", type(self).__name__, err)
            return []


@HEADS.register("denoise")
def build_denoise(backbone: nn.Module, *, num_classes: int | None, width: float) -> CDAEDecoder:
    require_binary("denoise", num_classes)
    return CDAEDecoder(list(backbone.feature_channels))


@HEADS.register("seg_cdae")
def build_seg_cdae(
    backbone: nn.Module, *, num_classes: int | None, width: float, skips: bool = False
) -> SegCDAEHead:
    require_binary("seg_cdae", num_classes)
    return SegCDAEHead(list(backbone.feature_channels), skips=skips)
