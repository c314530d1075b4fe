"""One training stage, in plain PyTorch: build the model, train it, evaluate it, write its folder.

A stage folder (``<run>/stages/<stage id>/``) holds ``result.json`` (status, wall_s, epochs,
trainable_params per part), ``metrics.parquet``, ``predictions.parquet`` and ``checkpoint/``
(``model.pt`` + ``model.json``: what ``umsrep predict`` loads). Ray Train calls ``run_stage`` in
each worker (``umsrep/train/worker.py``); ``umsrep train`` calls it directly.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader

from umsrep.data import mask_path_column
from umsrep.experiment import Experiment
from umsrep.models.multitask import MultiTaskModel
from umsrep.runner.data import RunData
from umsrep.runner.plan import Stage
from umsrep.runner.store import atomic_write_json, atomic_write_parquet, read_json
from umsrep.schema import METRICS_COLUMNS, PREDICTIONS_COLUMNS
from umsrep.tasks import Task

log = logging.getLogger(__name__)

SHARED = "shared"  # strategy label of the shared backbone's own (denoising) metrics


@dataclass
class StageContext:
    exp: Experiment
    data: RunData
    run_dir: Path
    store_dir: Path  # content-addressed backbone store, shared by runs
    device: str = "cpu"
    tasks: dict[str, Task] = field(default_factory=dict)
    # Ray Train hooks (identity in a single process): shard loaders, sync gradients.
    prepare_model: Callable[[Any], Any] = field(default=lambda m: m)
    prepare_loader: Callable[[Any], Any] = field(default=lambda dl: dl)


# ----------------------------------------------------------------------------- tasks and data
def build_tasks(exp: Experiment, index: pd.DataFrame) -> dict[str, Task]:
    """Runner tasks from the experiment; classification classes default to the column's values."""
    tasks = {}
    for tc in exp.tasks:
        classes = tc.classes
        mask = tc.column or "mask"
        if tc.kind == "segmentation" and not {f"has_{mask}", mask_path_column(mask)} & set(index):
            known = sorted(c[len("has_"):] for c in index.columns if c.startswith("has_mask"))
            raise ValueError(f"task {tc.name!r}: no mask column {mask!r} in the data (has: "
                             f"{known}); import the masks as a {mask_path_column(mask)} column")
        if tc.kind == "classification" and classes is None:
            if tc.column not in index.columns:
                raise ValueError(f"task {tc.name!r}: no label column {tc.column!r} in the data")
            values = index[tc.column].dropna().unique()
            classes = [str(v) for v in sorted(values, key=_sort_key)]
        tasks[tc.name] = Task(
            name=tc.name, kind=tc.kind, column=tc.column if tc.kind != "denoise" else "",
            classes=tuple(classes) if classes else None, head=tc.head,
            head_kwargs=dict(tc.head_kwargs), loss=tc.loss, loss_weight=tc.loss_weight,
        )
    return tasks


def _sort_key(v: Any) -> tuple[int, Any]:
    try:
        return (0, float(v))
    except (TypeError, ValueError):
        return (1, str(v))


def denoise_task() -> Task:
    return Task(name="denoise", kind="denoise", head="denoise", loss="mse")


def make_dataset(ctx: StageContext, positions: np.ndarray, tasks: list[Task], train: bool):
    from umsrep.data.augment import build_augment
    from umsrep.data.cache import load_cache
    from umsrep.data.dataset import CachedDataset, TaskLabel

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


# ----------------------------------------------------------------------------- models
def backbone_args(exp: Experiment) -> dict[str, Any]:
    return {"preset": exp.backbone.preset, "width": exp.backbone.width, **exp.backbone.kwargs}


def build_stage_model(ctx: StageContext, stage: Stage, tasks: list[Task],
                      hparams: dict[str, Any]) -> MultiTaskModel:
    from umsrep.models import build_backbone, build_head

    exp = ctx.exp
    backbone = build_backbone(exp.backbone.name, **backbone_args(exp))
    heads = {}
    for t in tasks:
        kw = dict(t.head_kwargs)
        if "dropout" in hparams and t.kind == "classification":
            kw["dropout"] = hparams["dropout"]
        heads[t.name] = build_head(t.head, backbone, num_classes=t.num_classes,
                                   preset=exp.backbone.preset, width=exp.backbone.width, **kw)
    model = MultiTaskModel(backbone, heads)
    if stage.kind == "head" and exp.backbone.pretrain != "none":
        load_pretrained(ctx, model, stage)
    return model


def load_pretrained(ctx: StageContext, model: MultiTaskModel, stage: Stage) -> None:
    """Load the fold's stored backbone; heads that match the pretraining head start from it."""
    key = backbone_store_key(ctx, stage.fold)
    state = torch.load(ctx.store_dir / key / "model.pt", weights_only=True, map_location="cpu")
    model.backbone.load_state_dict(state["backbone"])
    pre_head = state.get("head", {})
    for name, head in model.heads.items():
        init = getattr(head, "init_from_pretrained", None)
        if callable(init) and pre_head:
            init(pre_head)
        elif name == state.get("task") and pre_head:
            head.load_state_dict(pre_head)


def backbone_store_key(ctx: StageContext, fold: int) -> str:
    from umsrep.runner.plan import backbone_key

    return backbone_key(ctx.exp, fold, ctx.data.pool_digest(fold))


# ----------------------------------------------------------------------------- running
def train_config(exp: Experiment, settings, hparams: dict[str, Any], device: str, seed: int):
    from umsrep.train.loop import TrainConfig

    s = {k: getattr(settings, k) for k in settings.__dataclass_fields__}
    for k in ("lr", "batch_size", "optimizer", "weight_decay", "epochs"):
        if k in hparams:
            s[k] = hparams[k]
    return TrainConfig(
        epochs=int(s["epochs"]), batch_size=int(s["batch_size"]), lr=float(s["lr"]),
        optimizer=s["optimizer"], weight_decay=float(s["weight_decay"]),
        patience=s["patience"], plateau_patience=s["plateau_patience"],
        plateau_factor=s["plateau_factor"], max_steps_per_epoch=s["max_steps_per_epoch"],
        device=device, precision=s["precision"], channels_last=s["channels_last"],
        val_every=s["val_every"], seed=seed,
        monitor="val/score" if s["monitor"] == "score" else "val/loss",
        mode="max" if s["monitor"] == "score" else "min",
        restore_best=s.get("checkpoint", "best") == "best",  # train.checkpoint: best | last
    )


def noise_config(exp: Experiment, hparams: dict[str, Any]):
    from umsrep.noise import NoiseConfig

    n = exp.backbone.noise
    sigmas = list(n.sigmas)
    if "noise_sigma_max" in hparams:
        sigmas = [s for s in sigmas if s <= hparams["noise_sigma_max"]] or sigmas[:1]
    return NoiseConfig(kinds=tuple(n.kinds), sigmas=tuple(sigmas), per_image=n.per_image)


ReportFn = Callable[[int, dict[str, float], Path | None], None]


def run_stage(ctx: StageContext, stage: Stage, hparams: dict[str, Any] | None = None, *,
              report: ReportFn | None = None, resume_from: Path | None = None,
              out_dir: Path | None = None, rank: int = 0) -> dict[str, Any]:
    """Train and evaluate one stage; returns (and, on rank 0, writes) its result dict."""
    from umsrep.runner.execute import execute_stage

    hparams = dict(hparams or {})
    out = out_dir or ctx.run_dir / "stages" / stage.id
    t0 = time.perf_counter()
    result, metrics, preds = execute_stage(ctx, stage, hparams, report=report,
                                           resume_from=resume_from, out_dir=out, rank=rank)
    result.setdefault("total_s", time.perf_counter() - t0)
    if rank == 0:
        write_stage_outputs(out, result, metrics, preds)
    return result


def write_stage_outputs(out: Path, result: dict[str, Any], metrics: list[dict[str, Any]],
                        preds: pd.DataFrame) -> None:
    out.mkdir(parents=True, exist_ok=True)
    m = pd.DataFrame(metrics, columns=list(METRICS_COLUMNS))
    atomic_write_parquet(m.astype(METRICS_COLUMNS), out / "metrics.parquet")
    p = preds.reindex(columns=list(PREDICTIONS_COLUMNS))
    atomic_write_parquet(p.astype(PREDICTIONS_COLUMNS), out / "predictions.parquet")
    atomic_write_json(result, out / "result.json")  # last: its presence marks the stage done


def stage_done(out: Path) -> bool:
    r = read_json(out / "result.json")
    return bool(r) and r.get("status") == "done"


def save_model_dir(path: Path, model: MultiTaskModel, meta: dict[str, Any]) -> None:
    """A self-describing model folder: ``model.pt`` (state dict) + ``model.json`` (how to build)."""
    path.mkdir(parents=True, exist_ok=True)
    tmp = path / "model.pt.tmp"
    torch.save(model.state_dict(), tmp)
    tmp.replace(path / "model.pt")
    atomic_write_json(meta, path / "model.json")
