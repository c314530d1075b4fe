"""``classification``: GAP on the deepest features, FC, ReLU, dropout, FC -> logits.

The paper's head is "GAP, FC, D, SM"; softmax lives in the cross-entropy loss, so the head
returns logits. Paper preset: FC 256 wide, dropout 0.5 (the FC width and dropout of the same
authors' exact echo reconstruction). On ``cdae`` with 2 classes: 66,306 parameters; the
paper reports 295,715 (see ``umsrep.models.presets`` for what would explain the gap).
``hidden=0`` gives GAP, dropout, FC (no hidden layer).
"""

from __future__ import annotations

import torch
from torch import nn

from umsrep.models._factory import HEADS, scale_channels


class ClassificationHead(nn.Module):
    """``forward(feats, x) -> logits [B, num_classes]`` from ``feats[-1]: [B, C, h, w]``."""

    kind = "classification"

    def __init__(
        self, in_channels: int, num_classes: int, *, hidden: int = 256, dropout: float = 0.5
    ) -> None:
        super().__init__()
        if num_classes < 2:
            raise ValueError(f"classification head needs num_classes >= 2, got {num_classes}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        self.num_classes = num_classes
        self.pool = nn.AdaptiveAvgPool2d(1)
        if hidden > 0:
            self.mlp = nn.Sequential(
                nn.Linear(in_channels, hidden),
                nn.ReLU(inplace=True),
                nn.Dropout(dropout),
                nn.Linear(hidden, num_classes),
            )
        else:
            self.mlp = nn.Sequential(nn.Dropout(dropout), nn.Linear(in_channels, num_classes))

    def forward(self, feats: list[torch.Tensor], x: torch.Tensor) -> torch.Tensor:
        return self.mlp(self.pool(feats[-1]).flatten(1))


@HEADS.register("classification")
def build_classification(
    backbone: nn.Module,
    *,
    num_classes: int | None,
    width: float,
    hidden: int = 256,
    dropout: float = 0.5,
) -> ClassificationHead:
    if num_classes is None:
        raise ValueError("classification head needs num_classes (e.g. num_classes=2)")
    hidden = scale_channels(hidden, width) if hidden > 0 else 0
    return ClassificationHead(
        backbone.feature_channels[-1], num_classes, hidden=hidden, dropout=dropout
    )
