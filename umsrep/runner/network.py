"""A stage's network: its ``ModelSpec``, built by ``umsrep.models.build_model``, started from
the fold's stored backbone, and what its ``model.json`` stores beside the spec.

A backbone store folder (``<store>/<key>/``) keeps the trained network once, as a model folder:
``checkpoint/`` (``model.pt`` + ``model.json``); folders written before also hold ``model.pt``
(``backbone``, ``head``, ``task``), read when ``checkpoint/`` is missing (``stored_backbone``).
"""

from __future__ import annotations

from typing import Any

import torch

from umsrep.data.contrast import contrast_key
from umsrep.experiment import Experiment
from umsrep.models import BackboneSpec, DenoisedInput, ModelSpec, MultiTaskModel, build_model
from umsrep.runner.context import StageContext, backbone_store_key, mask_cleanup
from umsrep.runner.plan import Stage
from umsrep.runner.store import read_json
from umsrep.tasks import Task


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


def model_meta(ctx: StageContext, tasks: list[Task], stage: Stage,
               thresholds: dict[str, float] | None = None) -> dict[str, Any]:
    """Everything ``umsrep predict`` needs to rebuild the model without the experiment file:
    the network's ``ModelSpec`` (``stage_spec``) and how to apply it; ``threshold``: per
    segmentation task, the one chosen on the held-out fold."""
    exp = ctx.exp
    return {
        **stage_spec(exp, stage, tasks).to_json(),
        "threshold": dict(thresholds or {}),
        "stage": stage.id, "kind": stage.kind, "strategy": stage.strategy, "fold": stage.fold,
        "fit": exp.data.fit, "tta": list(exp.evaluation.tta),
        "contrast": exp.data.contrast,
        # the method with its version (umsrep.data.contrast.VERSION): predict refuses a model
        # trained under another version of it rather than feed it other images
        "contrast_key": contrast_key(exp.data.contrast),
        "mask_cleanup": mask_cleanup(exp),
        "rules": exp.rules,
    }
