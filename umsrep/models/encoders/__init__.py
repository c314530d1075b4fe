"""Registered backbones; importing this package fills ``umsrep.models.BACKBONES``."""

from umsrep.models.encoders import cdae, echo_cnn, resnet  # noqa: F401  (registration)
from umsrep.models.encoders._base import Backbone
from umsrep.models.encoders.cdae import CDAEEncoder
from umsrep.models.encoders.echo_cnn import EchoCNN
from umsrep.models.encoders.resnet import ResNetEncoder

__all__ = ["Backbone", "CDAEEncoder", "EchoCNN", "ResNetEncoder"]
