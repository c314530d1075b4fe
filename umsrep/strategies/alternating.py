"""Alternating fine-tuning (Dong et al. 2015; paper Figure 1).

``n_i`` batches of task i, then ``n_j`` of task j, round robin. Each step updates the shared
backbone and the active task's head only: one optimizer holds every parameter, and the other
heads get no gradient (``grad is None``), which torch optimizers skip entirely.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from typing import Any

from torch.utils.data import DataLoader

from umsrep.strategies._base import Batch, Strategy, build_optimizer, cycled


def _loader_size(loader: DataLoader) -> int:
    dataset = getattr(loader, "dataset", None)
    try:
        return len(dataset) if dataset is not None else len(loader)
    except TypeError:
        return len(loader)


class AlternatingStrategy(Strategy):
    """``ratios``: batches per turn for each task (rounded, at least 1); None makes them
    proportional to dataset size.

    One epoch is ``max_i ceil(len(loader_i) / n_i)`` rounds, so every task passes its data at
    least once; shorter loaders start again (reshuffled) within the epoch.
    """

    name = "alternating"

    def __init__(self, model, tasks, *, ratios: Mapping[str, float] | None = None, **kw: Any):
        super().__init__(model, tasks, **kw)
        if ratios is not None:
            bad = sorted(set(ratios) ^ set(self.tasks))
            if bad or any(float(v) <= 0 for v in ratios.values()):
                raise ValueError(
                    f"alternating ratios {dict(ratios)} must give a positive batch count for "
                    f"exactly the tasks {sorted(self.tasks)} (mismatch: {bad})"
                )
        # a ratio is a number of batches per turn; fractions round, to at least one batch
        self.ratios = (
            {k: max(1, round(float(v))) for k, v in ratios.items()} if ratios is not None else None
        )
        params = [p for p in self.model.parameters() if p.requires_grad]
        self.optimizers["all"] = build_optimizer(
            params, self.optimizer_name, self.lr, self.weight_decay
        )

    def turn_lengths(self, loaders: Mapping[str, DataLoader]) -> dict[str, int]:
        """Batches per turn: the configured ratios or ``round(size_i / min size)``."""
        if self.ratios is not None:
            return dict(self.ratios)
        sizes = {n: _loader_size(loaders[n]) for n in self.tasks}
        smallest = max(1, min(sizes.values()))
        return {n: max(1, round(s / smallest)) for n, s in sizes.items()}

    def schedule(self, loaders: Mapping[str, DataLoader]) -> Iterator[dict[str, Batch]]:
        self.check_loaders(loaders)
        turns = self.turn_lengths(loaders)
        rounds = max(math.ceil(len(loaders[n]) / turns[n]) for n in self.tasks)
        streams = {n: cycled(loaders[n]) for n in self.tasks}
        for _ in range(rounds):
            for name in self.tasks:
                for _ in range(turns[name]):
                    yield {name: next(streams[name])}

    def step(self, batches: Mapping[str, Batch]) -> dict[str, float]:
        opt = self.optimizers["all"]
        opt.zero_grad(set_to_none=True)
        losses, _ = self.task_losses(batches)
        if losses:  # empty when the batch has no target for the task
            self.scaler.scale(sum(losses.values())).backward()
            self.scaler.step(opt)
            self.scaler.update()
        return self.logs(losses)
