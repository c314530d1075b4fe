"""What a stage runs in: the experiment, the run's data, its tasks, datasets, loaders and splits.

The first link of the runner's chain (``umsrep/runner/__init__.py``): it imports no other
stage module. A stage reads only ``StageContext.exp``; a sweep's tuned hyperparameters are
applied to it once, here (``with_hyperparameters``), before anything is built.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader

from umsrep.data import mask_path_column
from umsrep.data.augment import build_augment
from umsrep.data.cache import load_cache
from umsrep.data.dataset import CachedDataset, TaskLabel
from umsrep.experiment import Experiment
from umsrep.models.spec import DENOISE
from umsrep.noise import NoiseConfig
from umsrep.runner.data import RunData
from umsrep.runner.hyperparameters import apply_hyperparameters
from umsrep.runner.plan import Stage, backbone_key, pool_digest
from umsrep.tasks import Task

# what a stage calls after each validated epoch: (epoch, metrics, checkpoint folder or None);
# the Ray Train adapter (sweeps/worker.py) reports to Ray, a plain run passes none
ReportFn = Callable[[int, dict[str, float], Path | None], None]


@dataclass
class StageContext:
    exp: Experiment
    data: RunData
    run_dir: Path
    store_dir: Path  # content-addressed backbone store, shared by runs
    device: str = "cpu"
    tasks: dict[str, Task] = field(default_factory=dict)
    # fold -> the store key of its backbone, fixed from the experiment as planned, before a
    # stage's tuned hyperparameters (e.g. a noise range) are applied to ``exp``
    store_keys: dict[int, str] = field(default_factory=dict)
    # Ray Train hooks (identity in a single process): shard loaders, sync gradients.
    prepare_model: Callable[[Any], Any] = field(default=lambda m: m)
    prepare_loader: Callable[[Any], Any] = field(default=lambda dl: dl)


# ----------------------------------------------------------------------------- tasks
def build_tasks(exp: Experiment, index: pd.DataFrame) -> dict[str, Task]:
    """The experiment's tasks, checked against the data; a classification task without
    ``classes`` gets its label column's values (sorted, numbers by value)."""
    tasks = {}
    for task in exp.tasks:
        if task.kind == "segmentation" and not (
                {f"has_{task.column}", mask_path_column(task.column)} & set(index)):
            known = sorted(c[len("has_"):] for c in index.columns if c.startswith("has_mask"))
            raise ValueError(f"task {task.name!r}: no mask column {task.column!r} in the data "
                             f"(has: {known}); import the masks as a "
                             f"{mask_path_column(task.column)} column")
        if task.kind == "classification" and task.classes is None:
            if task.column not in index.columns:
                raise ValueError(f"task {task.name!r}: no label column {task.column!r} in the "
                                 "data")
            values = index[task.column].dropna().unique()
            task = replace(task, classes=tuple(str(v) for v in sorted(values, key=_sort_key)))
        tasks[task.name] = task
    return tasks


def _sort_key(v: Any) -> tuple[int, Any]:
    try:
        return (0, float(v))
    except (TypeError, ValueError):
        return (1, str(v))


def denoise_task() -> Task:
    return DENOISE


# ----------------------------------------------------------------------------- data
def make_dataset(ctx: StageContext, positions: np.ndarray, tasks: list[Task], train: bool):
    labels = {
        t.name: TaskLabel(column=t.column, classes=t.classes)
        for t in tasks if t.kind != "denoise"
    }
    augment = build_augment(ctx.exp.data.augment) if train else None
    return CachedDataset(load_cache(ctx.data.cache_path), positions, labels, augment=augment)


def labelled(ctx: StageContext, positions: np.ndarray, task: Task) -> np.ndarray:
    """Positions with a target for ``task`` (a mask, a label among its classes, any image)."""
    index = ctx.data.index
    if task.kind == "denoise":
        return positions
    if task.kind == "segmentation":
        flag = f"has_{task.column}"
        has = index[flag] if flag in index else index[mask_path_column(task.column)].notna()
        return positions[has.to_numpy()[positions].astype(bool)]
    col = index[task.column].iloc[positions]
    ok = col.notna().to_numpy() & col.astype(str).isin(task.classes or ()).to_numpy()
    return positions[ok]


def make_loader(ds, batch_size: int, shuffle: bool, seed: int, workers: int) -> DataLoader:
    g = torch.Generator()
    g.manual_seed(seed)
    return DataLoader(ds, batch_size=batch_size, shuffle=shuffle, generator=g,
                      num_workers=workers, drop_last=False)


def loaders_for(ctx: StageContext, tasks: list[Task], positions: np.ndarray, *, train: bool,
                batch_size: int, seed: int, shared: bool = False,
                workers: int | None = None) -> dict[str, Any]:
    """One loader per task over the samples that carry its target (partial labels allowed);
    ``shared``: one loader, given to every task, over the samples that carry any task's
    target (``train.task_batches``); ``workers``: DataLoader workers (default
    ``train.loader_workers``)."""
    workers = ctx.exp.train.loader_workers if workers is None else workers
    if shared and len(tasks) > 1:
        pos = np.unique(np.concatenate([labelled(ctx, positions, t) for t in tasks]))
        if len(pos) == 0:
            raise ValueError("no task has labelled images in this split")
        loader = make_loader(make_dataset(ctx, pos, tasks, train=train), batch_size,
                             shuffle=train, seed=seed, workers=workers)
        loader = ctx.prepare_loader(loader) if train else loader
        return {t.name: loader for t in tasks}
    out = {}
    for t in tasks:
        pos = labelled(ctx, positions, t)
        if len(pos) == 0:
            raise ValueError(f"task {t.name!r} has no labelled images in this split")
        ds = make_dataset(ctx, pos, [t], train=train)
        loader = make_loader(ds, batch_size, shuffle=train, seed=seed,
                             workers=workers)
        out[t.name] = ctx.prepare_loader(loader) if train else loader
    return out


# ----------------------------------------------------------------------------- splits
def split_pool(positions: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    perm = rng.permutation(positions)
    n_val = max(1, int(round(len(perm) * fraction)))
    return np.sort(perm[n_val:]), np.sort(perm[:n_val])


def eval_splits(ctx: StageContext, stage: Stage) -> dict[str, np.ndarray]:
    """'val' = the fold's held-out part; 'test' = the external set (or the held-out fold).

    When the external set pools several datasets (e.g. Montgomery and JSRT), each is also
    scored on its own as split ``test:<dataset>`` (the manifest's ``dataset`` column): a
    pooled figure hides which population a model fails on.
    """
    fold = ctx.data.folds[stage.fold]
    ext = ctx.data.external
    splits = {"val": fold.test, "test": ext if len(ext) else fold.test}
    if len(ext) and "dataset" in ctx.data.index.columns:
        names = ctx.data.index["dataset"].iloc[ext].astype(str).to_numpy()
        if len(set(names)) > 1:
            for name in sorted(set(names)):
                splits[f"test:{name}"] = ext[names == name]
    return splits


# ----------------------------------------------------------------------------- settings
def backbone_store_key(ctx: StageContext, fold: int) -> str:
    if fold not in ctx.store_keys:
        ctx.store_keys[fold] = backbone_key(ctx.exp, fold, pool_digest(ctx.exp, ctx.data, fold))
    return ctx.store_keys[fold]


def with_hyperparameters(ctx: StageContext, stage: Stage,
                         params: dict[str, Any] | None) -> StageContext:
    """The context ``stage`` runs in: the experiment with its tuned hyperparameters applied
    (``apply_hyperparameters``) and the tasks built from it; the fold's backbone key is fixed
    first, from the experiment as planned."""
    if not params:
        return ctx
    keys = dict(ctx.store_keys)
    if ctx.exp.backbone.pretrain != "none":
        keys[stage.fold] = backbone_store_key(ctx, stage.fold)
    exp = apply_hyperparameters(ctx.exp, params)
    return replace(ctx, exp=exp, tasks=build_tasks(exp, ctx.data.index), store_keys=keys)


def noise_config(exp: Experiment) -> NoiseConfig:
    n = exp.backbone.noise
    return NoiseConfig(kinds=tuple(n.kinds), sigmas=tuple(n.sigmas), per_image=n.per_image,
                       mask=n.mask, mask_block=n.mask_block)


def mask_cleanup(exp: Experiment) -> dict[str, Any] | None:
    """``clean_mask`` arguments from ``evaluation`` (None when it would change nothing)."""
    ev = exp.evaluation
    if not ev.min_component and not ev.fill_holes and not ev.keep_largest:
        return None
    clean = {"min_fraction": float(ev.min_component), "fill_holes": bool(ev.fill_holes)}
    if ev.keep_largest:  # only when set: older umsrep predict reads model.json without it
        clean["keep_largest"] = int(ev.keep_largest)
    return clean
