"""Independent fine-tuning: the shared backbone frozen, each head its own loss, optimizer, data.

Frozen means both ``requires_grad=False`` on every backbone parameter *and* the backbone kept
in eval mode, so batch-norm running statistics do not drift while heads train (paper 2.3).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping
from typing import Any

from torch.utils.data import DataLoader

from umsrep.strategies._base import Batch, Strategy, build_optimizer, loader_groups
from umsrep.strategies.replay import BatchReplay, FeatureMemo

logger = logging.getLogger(__name__)


def stage_views(cache_views: int | Mapping[str, int], tasks: list[str]) -> int:
    """The replayed views of a stage training ``tasks`` (``cache_views``: one int, or per task)."""
    per_task = dict(cache_views) if isinstance(cache_views, Mapping) else \
        dict.fromkeys(tasks, cache_views)
    bad = {k: v for k, v in per_task.items()
           if isinstance(v, bool) or not isinstance(v, int) or v < 0}
    if bad:
        raise ValueError(f"cache_views must be whole numbers >= 0, got {bad}")
    return min(int(per_task.get(t, 0)) for t in tasks) if tasks else 0


def deepest_read(model, tasks) -> int | None:
    """How many of the deepest feature maps the heads of ``tasks`` read (a head's
    ``feature_levels``), or None when one of them may read any map (a decoder, a guided head)."""
    levels = []
    for name in tasks:
        n = getattr(model.heads[name], "feature_levels", None)
        if n is None or model.guide_of(name) is not None:
            return None
        levels.append(int(n))
    return max(levels) if levels else None


class IndependentStrategy(Strategy):
    """Each epoch passes every task's loader once; batches of the tasks are interleaved.

    Tasks sharing one DataLoader share its batches (one frozen forward pass for all of them).
    ``one_stage`` (read by the planner): every head in one stage instead of one stage per
    head; with ``train.task_batches: shared`` the heads then share each frozen forward pass,
    and a head guided by another (``guide``) is guided there. Several heads in one stage are
    stopped, and their best epochs chosen, each on its own (``selects_per_head``); a retired
    head (``retired``) takes no more steps.

    ``cache_views=V`` (``umsrep.strategies.replay``): the first ``V`` epochs' batches are kept
    and replayed in later epochs, and the frozen backbone's features are remembered by input
    (``cache_mb`` at most for each), so after ``V`` epochs a step costs the heads alone, and a validation
    pass after the first costs the heads alone too. 0 (the default) loads and encodes every
    batch afresh. A mapping ``{task: V}`` sets it per head; a stage of several heads replays
    with the smallest ``V`` among them (0 when one of them has none). Worth it where the
    backbone is most of a step (a classification head: the frozen encoder, the loading and the
    augmentation are ~3/4 of its epoch), hardly where the head is (a segmentation decoder).
    """

    name = "independent"

    def __init__(self, model, tasks, one_stage: bool = False,
                 cache_views: int | Mapping[str, int] = 0, cache_mb: float = 4096.0,
                 **kwargs: Any) -> None:
        super().__init__(model, tasks, **kwargs)
        self.one_stage = one_stage
        cache_views = stage_views(cache_views, list(self.tasks))
        self.replay = BatchReplay(cache_views, seed=kwargs.get("noise_seed", 0),
                                  max_mb=cache_mb) if cache_views else None
        self.memo = FeatureMemo(self.model.backbone, cache_mb, deepest_read(model, self.tasks)
                                ).install() if cache_views else None
        for p in self.model.backbone.parameters():
            p.requires_grad_(False)
        for name in self.tasks:
            params = [p for p in self.model.heads[name].parameters() if p.requires_grad]
            self.optimizers[name] = build_optimizer(
                params, self.optimizer_name, self.lr, self.weight_decay
            )

    @property
    def selects_per_head(self) -> bool:
        """Heads on a frozen backbone do not depend on each other's epoch: each keeps its own."""
        return len(self.tasks) > 1

    def train_mode(self) -> None:
        self.model.train()
        self.model.backbone.eval()

    def schedule(self, loaders: Mapping[str, DataLoader]) -> Iterator[dict[str, Batch]]:
        self.check_loaders(loaders)
        groups = loader_groups({n: loaders[n] for n in self.tasks if n not in self.retired})
        if self.replay is not None:
            names_of = {id(loader): names for loader, names in groups}
            for item in self.replay.epoch({id(loader): loader for loader, _ in groups}):
                yield {n: batch for key, batch in item.items() for n in names_of[key]}
            return
        iters = [(iter(loader), names) for loader, names in groups]
        while iters:
            item: dict[str, Batch] = {}
            alive = []
            for it, names in iters:
                batch = next(it, None)
                if batch is None:
                    continue
                alive.append((it, names))
                item.update({n: batch for n in names})
            iters = alive
            if item:
                yield item

    def step(self, batches: Mapping[str, Batch]) -> dict[str, float]:
        batches = {n: b for n, b in batches.items() if n not in self.retired}
        for name in batches:
            self.optimizers[name].zero_grad(set_to_none=True)
        losses, _ = self.task_losses(batches)
        stepped = False
        for name, loss in losses.items():
            self.scaler.scale(loss).backward()
            self.scaler.step(self.optimizers[name])
            stepped = True
        if stepped:
            self.scaler.update()
        return self.logs(losses)

    def finish(self) -> None:
        """Forget the remembered features and give the backbone its own forward back."""
        if self.memo is not None:
            logger.info("feature memo: %d batches encoded, %d remembered", self.memo.misses,
                        self.memo.hits)
            self.memo.remove()

    def extra_state(self) -> dict[str, Any]:
        return {"retired": sorted(self.retired)}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        self.retired = set(state.get("retired", ()))
