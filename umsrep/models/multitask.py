"""A shared backbone plus a dict of task heads: the UMS-Rep model.

Contracts (see also ``umsrep/models/__init__.py``):

- ``backbone.forward_features(x)`` takes ``x: [B, 1, H, W]`` (normalized image, see
  ``umsrep.data.dataset``) and returns a list of feature maps, shallowest first, deepest last.
- ``head(feats, x)`` takes that list and the input, and returns the task output:
  classification -> logits ``[B, C]``; segmentation -> logits ``[B, 1, H, W]`` (pre-sigmoid);
  denoise -> reconstruction ``[B, 1, H, W]`` in the same normalized space as ``x``.
"""

from __future__ import annotations

import torch
from torch import nn

from umsrep.models.heads.classification import crop_to_guide


class MultiTaskModel(nn.Module):
    """``forward(x) -> dict[task_name, output]``; ``forward_task(x, name)`` runs one head only."""

    def __init__(self, backbone: nn.Module, heads: dict[str, nn.Module]) -> None:
        super().__init__()
        self.backbone = backbone
        self.heads = nn.ModuleDict(heads)

    @property
    def task_names(self) -> list[str]:
        return list(self.heads.keys())

    def add_head(self, name: str, head: nn.Module) -> None:
        """Attach a new task head to an already trained backbone (paper: heads on the fly)."""
        if name in self.heads:
            raise ValueError(f"task {name!r} already has a head")
        self.heads[name] = head

    def forward(self, x: torch.Tensor, tasks: list[str] | None = None) -> dict[str, torch.Tensor]:
        feats = self.backbone.forward_features(x)
        names = tasks if tasks is not None else self.task_names
        out = {n: self.heads[n](feats, x) for n in names if self.guide_of(n) is None}
        for name in names:
            guide = self.guide_of(name)
            if guide is None:
                continue
            if guide in out:
                logits = out[guide].detach()
            else:  # the guide is not asked for: run its head for the weights only (in train
                # mode its batch-norm statistics still see these images, as in a joint step)
                with torch.no_grad():
                    logits = self.heads[guide](feats, x)
            weights = torch.sigmoid(logits.float())
            if getattr(self.heads[name], "crop", False):  # the backbone again, on the guide's box
                xc, weights = crop_to_guide(x, weights)
                out[name] = self.heads[name](self.backbone.forward_features(xc), xc,
                                             guide=weights)
            else:
                out[name] = self.heads[name](feats, x, guide=weights)
        return {n: out[n] for n in names}

    def guide_of(self, name: str) -> str | None:
        """The segmentation task whose mask weights head ``name``'s pooling, if any
        (``umsrep.models.heads.classification``)."""
        guide = getattr(self.heads[name], "guide", None)
        if guide is not None and guide not in self.heads:
            raise ValueError(f"head {name!r} is guided by {guide!r}, which this model lacks "
                             f"(heads: {self.task_names})")
        return guide

    def forward_task(self, x: torch.Tensor, name: str) -> torch.Tensor:
        return self.forward(x, [name])[name]


def count_trainable_params(module: nn.Module) -> int:
    """Number of parameters with ``requires_grad`` (the paper's 'training parameters')."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad)
