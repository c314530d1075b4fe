"""The planner: expands an experiment into stages per fold with their dependencies.

A backbone is trained once per (fold, backbone config, pretraining data): its ``store_key`` is a
content hash, so folds that share the same pretraining pool (e.g. RSNA for the CXR scenarios)
share one backbone, and a later run with the same key reuses the stored one. Every head stage
depends on its fold's backbone; baseline models depend on the separate denoiser when there is one.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from umsrep.config import to_dict
from umsrep.data.contrast import contrast_key
from umsrep.experiment import Experiment


@dataclass(frozen=True)
class Stage:
    id: str  # unique in the plan, also the stage's folder name
    fold: int
    kind: str  # backbone | head | baseline
    strategy: str  # "" for backbones, "baseline" for baselines
    tasks: tuple[str, ...]  # tasks trained in this stage ("denoise" for a denoiser)
    deps: tuple[str, ...] = ()
    store_key: str = ""  # backbones: content address in the backbone store
    role: str = ""  # baseline: "denoiser" | "model"

    @property
    def task_label(self) -> str:
        return self.tasks[0] if len(self.tasks) == 1 else ""


@dataclass
class Plan:
    stages: list[Stage] = field(default_factory=list)

    def backbone_keys(self) -> dict[int, str]:
        """Each fold's backbone store key as planned: what a stage's context looks its backbone
        up by, without hashing the pretraining pool again (``StageContext.store_keys``)."""
        return {s.fold: s.store_key for s in self.stages if s.kind == "backbone" and s.store_key}

    def by_id(self) -> dict[str, Stage]:
        return {s.id: s for s in self.stages}

    def waves(self) -> list[list[Stage]]:
        """Stages grouped so that each group depends only on earlier groups (parallel inside)."""
        done: set[str] = set()
        remaining = list(self.stages)
        waves: list[list[Stage]] = []
        while remaining:
            ready = [s for s in remaining if set(s.deps) <= done]
            if not ready:
                raise ValueError(f"dependency cycle among {[s.id for s in remaining]}")
            waves.append(ready)
            done |= {s.id for s in ready}
            remaining = [s for s in remaining if s.id not in done]
        return waves


# The version of what ``data.augment`` draws (umsrep/data/augment.py): bumped when a named
# augmentation changes the images pretraining sees, so a backbone stored under the old one is
# trained again. 2: the geometric warp on half of the images, not all (2026-12-03).
AUGMENT_VERSION = 2


def pretrain_columns(exp: Experiment) -> tuple[str, ...]:
    """What a backbone's pretraining reads besides the images: the label (or mask) column of
    a supervised pretraining's task; nothing for a denoiser."""
    if exp.backbone.pretrain != "supervised":
        return ()
    task = next(t for t in exp.tasks if t.name == exp.backbone.task)
    return (task.column,) if task.column else ()


def pool_digest(exp: Experiment, data: Any, fold: int) -> str:
    """The data part of fold ``fold``'s backbone key (``RunData.pool_digest``)."""
    return data.pool_digest(fold, pretrain_columns(exp))


def backbone_key(exp: Experiment, fold: int, pool_ids_digest: str) -> str:
    """Content address of a backbone: its config and the exact samples it was trained on."""
    # pretraining sees the same fit and augmentation as the heads; the defaults add nothing to
    # the hash, so keys of earlier runs without them stay valid
    extra = tuple(v for v in (exp.data.fit, exp.data.augment) if v not in ("stretch", "none"))
    if exp.data.augment != "none":  # as for contrast: a changed augmentation retrains
        extra += (f"augment-v{AUGMENT_VERSION}",)
    if exp.data.contrast != "none":  # a changed method (its VERSION) trains a new backbone
        extra += (f"contrast={contrast_key(exp.data.contrast)}",)
    backbone = to_dict(exp.backbone)
    for key, default in (("checkpoint", "best"), ("monitor", "loss"), ("score_tasks", None),
                         ("task_batches", "per_task"), ("schedule", "plateau"),
                         ("ema", 0.0)):  # as above
        if backbone["train"].get(key) == default:
            del backbone["train"][key]
    if not backbone["noise"].get("mask"):  # noise options added later; the block size means
        backbone["noise"].pop("mask", None)  # nothing without masking
        backbone["noise"].pop("mask_block", None)
    return exp.digest(backbone, exp.data.image_size, pool_ids_digest, exp.seed, *extra)


def build_plan(exp: Experiment, folds: list[int], pool_digests: dict[int, str]) -> Plan:
    """``pool_digests[fold]`` is a digest of the sample ids the fold's backbone trains on."""
    plan = Plan()
    tasks = [t.name for t in exp.tasks]
    first_with_key: dict[str, str] = {}  # store key -> the stage that trains it
    for fold in folds:
        deps: tuple[str, ...] = ()
        if exp.backbone.pretrain != "none":
            key = backbone_key(exp, fold, pool_digests[fold])
            trainer = first_with_key.setdefault(key, f"f{fold}-backbone")
            bb = Stage(
                id=f"f{fold}-backbone", fold=fold, kind="backbone", strategy="",
                tasks=(exp.backbone.task,) if exp.backbone.pretrain == "supervised" else ("denoise",),
                store_key=key,
                deps=() if trainer == f"f{fold}-backbone" else (trainer,),
            )
            plan.stages.append(bb)
            # heads wait for the stage that actually trains this backbone, not a reuse of it
            deps = (trainer,)
        for strat in exp.strategies:
            # independent heads are one stage per head unless options.one_stage
            if strat.name == "independent" and not strat.options.get("one_stage"):
                for t in tasks:
                    plan.stages.append(Stage(
                        id=f"f{fold}-independent-{t}", fold=fold, kind="head",
                        strategy="independent", tasks=(t,), deps=deps,
                    ))
            else:
                plan.stages.append(Stage(
                    id=f"f{fold}-{strat.name}", fold=fold, kind="head", strategy=strat.name,
                    tasks=tuple(tasks), deps=deps,
                ))
        if exp.baseline.enabled:
            bdeps: tuple[str, ...] = ()
            if exp.baseline.denoiser and exp.backbone.pretrain == "denoise":
                # The separate denoiser is the same network trained on the same images as the
                # shared CDAE: it shares the content address, so it is trained once and its
                # time is charged to both sides (as in the paper's Table 4).
                den = Stage(
                    id=f"f{fold}-baseline-denoise", fold=fold, kind="baseline",
                    strategy="baseline", tasks=("denoise",), role="denoiser",
                    deps=deps, store_key=key,
                )
                plan.stages.append(den)
                # the denoiser's weights exist as soon as the shared backbone is trained
                bdeps = (den.id,) if not deps else deps
            for t in tasks:
                plan.stages.append(Stage(
                    id=f"f{fold}-baseline-{t}", fold=fold, kind="baseline", strategy="baseline",
                    tasks=(t,), deps=bdeps, role="model",
                ))
    return plan
