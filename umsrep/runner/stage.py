"""One training stage, in plain PyTorch: build the model, train it, evaluate it, write its folder.

A stage folder (``<run>/stages/<stage id>/``) holds ``result.json`` (status, wall_s, epochs,
trainable_params per part), ``metrics.parquet``, ``predictions.parquet`` and ``checkpoint/``
(``model.pt`` + ``model.json``: what ``umsrep predict`` loads). Ray Train calls ``run_stage`` in
each worker (``sweeps/worker.py``); ``umsrep train`` calls it directly.

Every stage's network is built by ``umsrep.models.build_model`` from its ``ModelSpec``
(``stage_spec``), the spec its ``model.json`` stores. A backbone store folder
(``<store>/<key>/``) keeps the trained network once, as a model folder: ``checkpoint/``
(``model.pt`` + ``model.json``); folders written before also hold ``model.pt`` (``backbone``,
``head``, ``task``), read when ``checkpoint/`` is missing (``stored_backbone``).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader

from umsrep.data import mask_path_column
from umsrep.experiment import Experiment
from umsrep.models import BackboneSpec, DenoisedInput, ModelSpec, MultiTaskModel, build_model
from umsrep.models.spec import DENOISE
from umsrep.runner.data import RunData
from umsrep.runner.plan import Stage
from umsrep.runner.store import atomic_write_json, atomic_write_parquet, read_json
from umsrep.schema import METRICS_COLUMNS, PREDICTIONS_COLUMNS
from umsrep.tasks import Task

log = logging.getLogger(__name__)

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
    return DENOISE


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
def backbone_spec(exp: Experiment) -> BackboneSpec:
    b = exp.backbone
    return BackboneSpec(name=b.name, preset=b.preset, width=b.width, kwargs=dict(b.kwargs))


def stage_spec(exp: Experiment, stage: Stage, tasks: list[Task]) -> ModelSpec:
    """The network ``stage`` trains for ``tasks`` (what its ``model.json`` stores)."""
    baseline = stage.kind == "baseline"
    return ModelSpec(
        backbone=backbone_spec(exp), tasks=tuple(tasks), image_size=exp.data.image_size,
        baseline_arch=exp.baseline.arch if baseline else None,
        # a separate denoiser feeds the baseline models that wait for it (``build_plan``)
        denoised_input=bool(baseline and stage.deps and exp.baseline.denoiser),
    )


def build_stage_model(ctx: StageContext, stage: Stage, tasks: list[Task]) -> MultiTaskModel:
    """The stage's network: heads start from the stored backbone (pretraining), a baseline's
    denoiser is the stored one; everything else from the seeded initialization."""
    model = build_model(stage_spec(ctx.exp, stage, tasks))
    if stage.kind == "head" and ctx.exp.backbone.pretrain != "none":
        load_pretrained(ctx, model, stage)
    if isinstance(model, DenoisedInput):
        model.denoiser.load_state_dict(stored_backbone(ctx, stage.fold)[0])
    return model


def stored_backbone(ctx: StageContext, fold: int) -> tuple[dict[str, torch.Tensor], str]:
    """The fold's stored network (``backbone.*`` and ``heads.<task>.*`` weights) and the name
    of the task it was pretrained on."""
    store = ctx.store_dir / backbone_store_key(ctx, fold)
    folder = store / "checkpoint"
    if (folder / "model.pt").is_file():
        state = torch.load(folder / "model.pt", weights_only=True, map_location="cpu")
        return state, (read_json(folder / "model.json") or {})["tasks"][0]["name"]
    # a store folder of the first umsrep versions: model.pt beside checkpoint/
    old = torch.load(store / "model.pt", weights_only=True, map_location="cpu")
    state = {f"backbone.{k}": v for k, v in old["backbone"].items()}
    state |= {f"heads.{old['task']}.{k}": v for k, v in old.get("head", {}).items()}
    return state, old["task"]


def _part(state: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    return {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}


def load_pretrained(ctx: StageContext, model: MultiTaskModel, stage: Stage) -> None:
    """Load the fold's stored backbone; heads that match the pretraining head start from it."""
    state, task = stored_backbone(ctx, stage.fold)
    model.backbone.load_state_dict(_part(state, "backbone."))
    pre_head = _part(state, f"heads.{task}.")
    for name, head in model.heads.items():
        init = getattr(head, "init_from_pretrained", None)
        if callable(init) and pre_head:
            init(pre_head)
        elif name == task and pre_head:
            head.load_state_dict(pre_head)


def backbone_store_key(ctx: StageContext, fold: int) -> str:
    from umsrep.runner.plan import backbone_key

    if fold not in ctx.store_keys:
        ctx.store_keys[fold] = backbone_key(ctx.exp, fold, ctx.data.pool_digest(fold))
    return ctx.store_keys[fold]


def with_hyperparameters(ctx: StageContext, stage: Stage,
                         params: dict[str, Any] | None) -> StageContext:
    """The context ``stage`` runs in: the experiment with its tuned hyperparameters applied
    (``apply_hyperparameters``) and the tasks built from it; the fold's backbone key is fixed
    first, from the experiment as planned."""
    from umsrep.runner.hyperparameters import apply_hyperparameters

    if not params:
        return ctx
    keys = dict(ctx.store_keys)
    if ctx.exp.backbone.pretrain != "none":
        keys[stage.fold] = backbone_store_key(ctx, stage.fold)
    exp = apply_hyperparameters(ctx.exp, params)
    return replace(ctx, exp=exp, tasks=build_tasks(exp, ctx.data.index), store_keys=keys)


# ----------------------------------------------------------------------------- running
def train_config(settings, device: str, seed: int):
    """The loop's ``TrainConfig`` from a stage's ``TrainSettings``."""
    from umsrep.train.loop import TrainConfig

    s = settings
    return TrainConfig(
        epochs=int(s.epochs), batch_size=int(s.batch_size), lr=float(s.lr),
        optimizer=s.optimizer, weight_decay=float(s.weight_decay),
        patience=s.patience, plateau_patience=s.plateau_patience,
        plateau_factor=s.plateau_factor, max_steps_per_epoch=s.max_steps_per_epoch,
        device=device, precision=s.precision, channels_last=s.channels_last,
        val_every=s.val_every, seed=seed,
        monitor="val/score" if s.monitor == "score" else "val/loss",
        mode="max" if s.monitor == "score" else "min",
        restore_best=s.checkpoint == "best",  # train.checkpoint: best | last
    )


def noise_config(exp: Experiment):
    from umsrep.noise import NoiseConfig

    n = exp.backbone.noise
    return NoiseConfig(kinds=tuple(n.kinds), sigmas=tuple(n.sigmas), per_image=n.per_image)


ReportFn = Callable[[int, dict[str, float], Path | None], None]


def run_stage(ctx: StageContext, stage: Stage, hparams: dict[str, Any] | None = None, *,
              report: ReportFn | None = None, resume_from: Path | None = None,
              out_dir: Path | None = None, rank: int = 0,
              record: dict[str, Any] | None = None) -> dict[str, Any]:
    """Train and evaluate one stage; returns (and, on rank 0, writes) its result dict.

    ``hparams``: a sweep's tuned hyperparameters for this stage, applied to the experiment
    here, once (``with_hyperparameters``). ``record``: more fields for ``result.json`` (the
    Ray Train worker adds the node that trained the stage)."""
    from umsrep.runner.execute import execute_stage

    ctx = with_hyperparameters(ctx, stage, hparams)
    out = out_dir or ctx.run_dir / "stages" / stage.id
    t0 = time.perf_counter()
    result, metrics, preds = execute_stage(ctx, stage, report=report,
                                           resume_from=resume_from, out_dir=out, rank=rank)
    result.setdefault("total_s", time.perf_counter() - t0)
    result |= record or {}
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
