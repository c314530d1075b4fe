"""``resnet18`` / ``resnet34``: torchvision ResNets as alternative backbones.

Random initialization, or ``state_dict_path=`` a user-supplied torchvision state dict (loaded with
``weights_only=True``; nothing is ever downloaded). The stem takes ``in_chans`` channels
(1 by default); a 3-channel RGB stem in the file is summed over its input channels to fit a
1-channel stem (the usual grayscale adaptation, as in timm). ``width`` scales every stage
(64-128-256-512 at 1.0); pretrained files only fit width 1.0.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from torch import nn
from torchvision.models import resnet
from torchvision.models.resnet import BasicBlock

from umsrep.models._factory import BACKBONES, scale_channels
from umsrep.models.encoders._base import Backbone

logger = logging.getLogger(__name__)

_BUILDERS = {"resnet18": resnet.resnet18, "resnet34": resnet.resnet34}
_LAYERS = {"resnet18": (2, 2, 2, 2), "resnet34": (3, 4, 6, 3)}


class ResNetEncoder(Backbone):
    """``forward_features(x) -> [stem H/2, layer1 H/4, layer2 H/8, layer3 H/16, layer4 H/32]``."""

    def __init__(
        self,
        arch: str,
        *,
        width: float = 1.0,
        in_chans: int = 1,
        state_dict_path: str | Path | None = None,
    ) -> None:
        super().__init__(in_chans)
        if arch not in _BUILDERS:
            raise ValueError(f"unknown ResNet {arch!r}; use one of {', '.join(_BUILDERS)}")
        self.name = arch
        net = _BUILDERS[arch](weights=None)
        base = scale_channels(64, width)
        _rebuild(net, base, _LAYERS[arch], in_chans)
        del net.fc, net.avgpool
        self.net = net
        self.feature_channels = [base, base, 2 * base, 4 * base, 8 * base]
        if state_dict_path is not None:
            self._load(Path(state_dict_path))

    def _features(self, x: torch.Tensor) -> list[torch.Tensor]:
        n = self.net
        stem = n.relu(n.bn1(n.conv1(x)))
        f1 = n.layer1(n.maxpool(stem))
        f2 = n.layer2(f1)
        f3 = n.layer3(f2)
        return [stem, f1, f2, f3, n.layer4(f3)]

    def _load(self, path: Path) -> None:
        if not path.is_file():
            raise FileNotFoundError(f"{path}: ResNet state dict not found")
        state = torch.load(path, map_location="cpu", weights_only=True)
        if isinstance(state, dict) and "state_dict" in state:
            state = state["state_dict"]
        state = {k: v for k, v in state.items() if not k.startswith("fc.")}
        stem = state.get("conv1.weight")
        if stem is not None and stem.shape[1] != self.in_chans:
            if self.in_chans != 1:
                raise ValueError(
                    f"{path}: stem has {stem.shape[1]} input channels, backbone {self.in_chans};"
                    " build with in_chans matching the file"
                )
            state["conv1.weight"] = stem.sum(dim=1, keepdim=True)
        try:
            self.net.load_state_dict(state, strict=True)
        except RuntimeError as err:
            raise ValueError(
                f"{path}: does not fit {self.name} at this width ({err}); pretrained "
                "torchvision weights need width=1.0"
            ) from err
        logger.info("loaded %s weights from %s", self.name, path)


def _rebuild(net: resnet.ResNet, base: int, layers: tuple[int, ...], in_chans: int) -> None:
    """Replace the stem and stages with ``in_chans`` input and ``base`` channels (torchvision's
    own ``_make_layer``), then re-apply torchvision's initialization."""
    net.inplanes = base
    net.conv1 = nn.Conv2d(in_chans, base, kernel_size=7, stride=2, padding=3, bias=False)
    net.bn1 = nn.BatchNorm2d(base)
    net.layer1 = net._make_layer(BasicBlock, base, layers[0])
    net.layer2 = net._make_layer(BasicBlock, 2 * base, layers[1], stride=2)
    net.layer3 = net._make_layer(BasicBlock, 4 * base, layers[2], stride=2)
    net.layer4 = net._make_layer(BasicBlock, 8 * base, layers[3], stride=2)
    for m in net.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


@BACKBONES.register("resnet18")
def build_resnet18(*, width: float, in_chans: int, state_dict_path: str | Path | None = None):
    return ResNetEncoder(
        "resnet18", width=width, in_chans=in_chans, state_dict_path=state_dict_path
    )


@BACKBONES.register("resnet34")
def build_resnet34(*, width: float, in_chans: int, state_dict_path: str | Path | None = None):
    return ResNetEncoder(
        "resnet34", width=width, in_chans=in_chans, state_dict_path=state_dict_path
    )
