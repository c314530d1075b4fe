"""``seg_dilated``: the paper's 786,497-parameter lung segmentation network, as a head.

The network (read in the authors' earlier code): full-resolution 3x3 'same' convs 1-8-16-32,
then 64-128-256 with dilation 2, then 256-128-64-32-16-8 and a 1x1 conv to one channel, i.e.
``echo_cnn`` + ``seg_echo`` at the paper preset.

How it attaches to the shared representation (our decision; the paper's text says "the entire
CDAE with the final conv replaced" but its count is this network's): the head feeds the network
the shared CDAE's *reconstruction* of the input, the denoised image, just as the paper's baseline
feeds the separate denoiser's output to the separate segmentation model. The reconstruction comes
from a frozen copy of the ``denoise`` decoder held by the head (load it with
``init_from_denoise``; it stays in eval mode and is not counted as trainable), so the gradient of
the segmentation loss still reaches the backbone through it under the joint and alternating
strategies. ``source="image"`` feeds the raw input instead (the head then ignores the backbone).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

import torch
from torch import nn

from umsrep.models._factory import HEADS, require_binary
from umsrep.models.encoders.echo_cnn import EchoCNN
from umsrep.models.heads.cdae_decoder import CDAEDecoder
from umsrep.models.heads.seg_echo import SymmetricDecoderHead

logger = logging.getLogger(__name__)

SOURCES = ("reconstruction", "image")


class DilatedSegNet(nn.Module):
    """``forward(x: [B, 1, H, W]) -> logits [B, 1, H, W]``; 786,497 parameters at width 1."""

    def __init__(self, *, width: float = 1.0, in_chans: int = 1) -> None:
        super().__init__()
        self.encoder = EchoCNN(width=width, in_chans=in_chans)
        self.decoder = SymmetricDecoderHead(self.encoder.feature_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.encoder.forward_features(x), x)


class SegDilatedHead(nn.Module):
    """``forward(feats, x) -> logits [B, 1, H, W]``: the dilated network on the reconstruction."""

    kind = "segmentation"

    def __init__(
        self, in_channels: list[int], *, width: float = 1.0, source: str = "reconstruction"
    ) -> None:
        super().__init__()
        if source not in SOURCES:
            raise ValueError(f"seg_dilated: source {source!r} is unknown; use one of {SOURCES}")
        self.source = source
        self.net = DilatedSegNet(width=width)
        self.reconstructor: CDAEDecoder | None = None
        # persisted so a checkpoint restored with load_state_dict counts as loaded
        self.register_buffer("reconstructor_loaded", torch.tensor(False))
        self._warned = False
        if source == "reconstruction":
            self.reconstructor = CDAEDecoder(in_channels)
            self.reconstructor.requires_grad_(False)
            self.reconstructor.eval()

    def init_from_denoise(self, state: Mapping[str, torch.Tensor] | nn.Module) -> list[str]:
        """Load the trained ``denoise`` head (all of it) as the frozen reconstructor."""
        if self.reconstructor is None:
            raise ValueError("seg_dilated built with source='image' has no reconstructor to load")
        source = state.state_dict() if isinstance(state, nn.Module) else state
        own = self.reconstructor.state_dict()
        misfit = sorted(
            set(own) ^ set(source)
            | {k for k in own if k in source and own[k].shape != source[k].shape}
        )
        if misfit:  # checked first: a failing strict load may already have copied some tensors
            raise ValueError(
                "init_from_denoise: the state dict is not a denoise head built on the same "
                f"backbone; mismatched keys: {', '.join(misfit[:5])}"
            )
        self.reconstructor.load_state_dict(source, strict=True)
        self.reconstructor_loaded.fill_(True)
        return sorted(source)

    def init_from_pretrained(self, state: Mapping[str, torch.Tensor] | nn.Module) -> list[str]:
        """``init_from_denoise`` for whatever head the backbone was pretrained with: a state dict
        that is not a denoise head (e.g. a supervised classifier) is skipped with a log line and
        ``[]`` is returned, so the head keeps its random init."""
        try:
            return self.init_from_denoise(state)
        except ValueError as err:
            logger.info("%s: pretrained head not used (%s)", type(self).__name__, err)
            return []

    def train(self, mode: bool = True) -> SegDilatedHead:
        super().train(mode)
        if self.reconstructor is not None:
            self.reconstructor.eval()  # frozen: keep its batch-norm statistics
        return self

    def forward(self, feats: list[torch.Tensor], x: torch.Tensor) -> torch.Tensor:
        if self.reconstructor is None:
            return self.net(x)
        if not self.reconstructor_loaded and not self._warned:
            logger.warning("seg_dilated: reconstructor not loaded; call init_from_denoise first")
            self._warned = True
        return self.net(self.reconstructor(feats, x))


@HEADS.register("seg_dilated")
def build_seg_dilated(
    backbone: nn.Module, *, num_classes: int | None, width: float, source: str = "reconstruction"
) -> SegDilatedHead:
    require_binary("seg_dilated", num_classes)
    return SegDilatedHead(list(backbone.feature_channels), width=width, source=source)
