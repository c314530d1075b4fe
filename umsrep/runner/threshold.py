"""The segmentation threshold, chosen on out-of-fold validation images, never on the test set.

A stage's held-out fold (split ``val`` of its metrics: images its model never trained on) is
segmented at the cache size; for every threshold of ``GRID`` each probability map is cut and
cleaned (``evaluation.min_component`` / ``fill_holes`` / ``keep_largest``, as in scoring) and
its Dice with the cached mask taken. The threshold with the highest mean Dice is recorded in the
stage's ``result.json`` and ``model.json`` (``threshold: {task: t}``) and used wherever the
stage's masks are cut at the original size (``dice_orig``, ``umsrep predict``). A fold ensemble
pools the k held-out folds (each image segmented by the one model that did not train on it).

The choice runs at the cache size without test-time augmentation: one cheap pass, a proxy for
the original-size pipeline rather than that pipeline itself. Ties go to the threshold closest
to 0.5, the default.

With ``evaluation.threshold`` set to a number that number is used instead (the held-out Dice
at each grid value is still recorded): a threshold fitted on one site's masks follows its
annotation style, which other sites may not share.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import torch

from umsrep.derive.postprocess import clean_mask
from umsrep.metrics.segmentation import compute_dice_per_image
from umsrep.runner.context import StageContext, labelled, make_dataset, make_loader
from umsrep.strategies._step import move_batch
from umsrep.tasks import Task

DEFAULT = 0.5
GRID: tuple[float, ...] = (0.3, 0.35, 0.4, 0.45, 0.5, 0.55, 0.6, 0.65, 0.7)


@torch.no_grad()
def threshold_dice(model, task: Task, loader: Iterable[dict[str, Any]],
                   device: str | torch.device = "cpu", clean: dict[str, Any] | None = None,
                   grid: Sequence[float] = GRID) -> np.ndarray:
    """Per-image Dice ``[n_images, len(grid)]`` of ``sigmoid > t`` (then ``clean``) against the
    cached mask, for the loader's images that have a mask."""
    model.eval()
    blocks = []
    for batch in loader:
        batch = move_batch(batch, device)
        logits = model(batch["image"], [task.name])[task.name].float()
        prob = torch.sigmoid(logits[:, 0]).cpu().numpy()
        target, valid = task.target(batch)
        keep = valid.cpu().numpy().astype(bool)
        true = (target[:, 0] > 0.5).cpu().numpy()[keep]
        columns = []
        for t in grid:
            pred = prob[keep] > t
            if clean:
                pred = np.stack([clean_mask(p, **clean) for p in pred]) if len(pred) else pred
            columns.append(compute_dice_per_image(true, pred) if len(pred) else np.zeros(0))
        blocks.append(np.stack(columns, axis=1))
    return np.concatenate(blocks) if blocks else np.zeros((0, len(grid)))


def pick_threshold(dice: np.ndarray, grid: Sequence[float] = GRID) -> float:
    """The grid value with the highest mean Dice over images (``dice``: ``[n, len(grid)]``);
    ties go to the one closest to 0.5; no images: 0.5."""
    if dice.size == 0:
        return DEFAULT
    mean = dice.mean(axis=0)
    best = [t for t, m in zip(grid, mean, strict=True) if m >= mean.max() - 1e-12]
    return float(min(best, key=lambda t: (abs(t - DEFAULT), t)))


def held_out_dice(ctx: StageContext, fold: int, model, tasks: Sequence[Task],
                  clean: dict[str, Any] | None = None,
                  device: str | torch.device | None = None) -> dict[str, np.ndarray]:
    """``{segmentation task: threshold_dice on fold's held-out images}`` (split ``val``)."""
    held_out = ctx.data.folds[fold].test
    out = {}
    for task in tasks:
        if task.kind != "segmentation":
            continue
        positions = labelled(ctx, held_out, task)
        if not len(positions):
            continue
        loader = make_loader(make_dataset(ctx, positions, [task], train=False),
                             max(ctx.exp.train.batch_size, 16), shuffle=False, seed=0,
                             workers=ctx.exp.train.loader_workers)
        out[task.name] = threshold_dice(model, task, loader, device or ctx.device, clean)
    return out


def threshold_record(dice: Mapping[str, np.ndarray],
                     rule: float | str = "held_out") -> dict[str, Any]:
    """What ``result.json`` keeps of a choice: ``threshold`` per task (by ``rule``:
    ``evaluation.threshold``, "held_out" or a fixed number), the grid, the mean held-out Dice
    at each grid value and the number of images it was taken over (kept with a fixed rule too:
    what the held-out choice would have been stays visible)."""
    fixed = None if rule == "held_out" else float(rule)
    return {
        "threshold": {t: pick_threshold(d) if fixed is None else fixed
                      for t, d in dice.items()},
        "threshold_rule": "held_out" if fixed is None else "fixed",
        "threshold_grid": list(GRID),
        "threshold_val_dice": {t: [float(v) for v in d.mean(axis=0)] if len(d) else []
                               for t, d in dice.items()},
        "threshold_val_images": {t: int(len(d)) for t, d in dice.items()},
    }


def other_weights_threshold(ctx: StageContext, fold: int, model, tasks: Sequence[Task],
                            other_weights: Mapping[str, torch.Tensor] | None,
                            clean: dict[str, Any] | None = None) -> dict[str, float] | None:
    """The thresholds of the stage's other kept weights (``checkpoint_last/`` or
    ``checkpoint_best/``), chosen on the same held-out images as the scored weights' were:
    None where they are the same by rule (a fixed threshold), or there is nothing to choose.
    ``model`` is given back with its own weights."""
    rule = ctx.exp.evaluation.threshold
    if other_weights is None or rule != "held_out" or not any(
            t.kind == "segmentation" for t in tasks):
        return None
    own = {k: v.detach().clone() for k, v in model.state_dict().items()}
    model.load_state_dict(other_weights)
    try:
        dice = held_out_dice(ctx, fold, model, tasks, clean)
    finally:
        model.load_state_dict(own)
    return threshold_record(dice, rule)["threshold"]
