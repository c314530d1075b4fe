"""Several trained models of the same tasks as one model: the mean of their probabilities.

``MeanEnsemble(members, kinds)(x, tasks)`` returns per task an output of the kind one model
returns, so the code that scores or applies one model (``umsrep.train.evaluate``,
``umsrep.runner.original_size``, ``umsrep.derive.tta``, ``umsrep.predict``) takes an ensemble
unchanged:

- segmentation: logits ``[B, 1, H, W]`` whose sigmoid is the mean of the members' sigmoids;
- classification: logits ``[B, C]`` whose softmax is the mean of the members' softmaxes (the log
  of that mean);
- denoise: the mean reconstruction ``[B, 1, H, W]``.

Probabilities are averaged, not logits (the fold ensembles of nnU-Net): one member's extreme
logit moves the mean probability by at most 1/k.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import nn

KINDS = ("segmentation", "classification", "denoise")
_EPS = 1e-7  # sigmoid probabilities are kept in [eps, 1 - eps] so their logit is finite


class MeanEnsemble(nn.Module):
    """``forward(x: [B, 1, H, W], tasks=None) -> {task: output}`` of the members' mean.

    ``members`` each follow the ``MultiTaskModel`` contract (``model(x, tasks) -> dict``);
    ``kinds`` maps each task the members predict to its kind.
    """

    def __init__(self, members: Sequence[nn.Module], kinds: Mapping[str, str]) -> None:
        super().__init__()
        if not members:
            raise ValueError("MeanEnsemble needs at least one model")
        bad = {t: k for t, k in kinds.items() if k not in KINDS}
        if bad:
            raise ValueError(f"MeanEnsemble: unknown task kinds {bad}; use one of {KINDS}")
        self.members = nn.ModuleList(members)
        self.kinds = dict(kinds)

    @property
    def task_names(self) -> list[str]:
        return list(self.kinds)

    def forward(self, x: torch.Tensor, tasks: list[str] | None = None) -> dict[str, torch.Tensor]:
        names = list(tasks) if tasks is not None else self.task_names
        outputs = [member(x, names) for member in self.members]
        return {n: self.combine(n, torch.stack([o[n].float() for o in outputs])) for n in names}

    def combine(self, task: str, stacked: torch.Tensor) -> torch.Tensor:
        """Members' outputs ``[k, B, ...]`` -> the ensemble's output ``[B, ...]``."""
        kind = self.kinds[task]
        if kind == "segmentation":
            return torch.logit(torch.sigmoid(stacked).mean(0), eps=_EPS)
        if kind == "classification":
            mean = torch.softmax(stacked, dim=-1).mean(0)
            return torch.log(mean.clamp_min(torch.finfo(mean.dtype).tiny))
        return stacked.mean(0)
