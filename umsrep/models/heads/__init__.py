"""Registered heads; importing this package fills ``umsrep.models.HEADS``."""

from umsrep.models.heads import cdae_decoder, classification, seg_dilated, seg_echo  # noqa: F401
from umsrep.models.heads.cdae_decoder import CDAEDecoder, SegCDAEHead
from umsrep.models.heads.classification import ClassificationHead
from umsrep.models.heads.seg_dilated import DilatedSegNet, SegDilatedHead
from umsrep.models.heads.seg_echo import SymmetricDecoderHead

__all__ = [
    "CDAEDecoder",
    "ClassificationHead",
    "DilatedSegNet",
    "SegCDAEHead",
    "SegDilatedHead",
    "SymmetricDecoderHead",
]
