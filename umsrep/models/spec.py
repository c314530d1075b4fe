"""What a trained network is (``ModelSpec``, the build part of ``model.json``) and the one
factory that builds it (``build_model``), used by training, the backbone store and ``predict``.

``model.json`` (written by ``umsrep.runner.network.model_meta``) holds the spec's keys beside
inference settings (threshold, fit, contrast, rules, ...)::

    {"image_size": 256,
     "backbone": {"name": "cdae", "preset": "tiny", "width": null, **backbone kwargs},
     "baseline_arch": null | "same" | "paper",  # a separate baseline model, or the shared one
     "denoised_input": false,  # a frozen separate denoiser feeds the model (DenoisedInput)
     "tasks": [{"name", "kind", "column", "classes", "head", "head_kwargs", "loss"}, ...]}
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from umsrep.models._factory import build_backbone, build_head
from umsrep.models.denoised import DenoisedInput
from umsrep.models.multitask import MultiTaskModel
from umsrep.models.separate import build_separate_model
from umsrep.tasks import Task

log = logging.getLogger(__name__)

DENOISE = Task(name="denoise", kind="denoise", head="denoise", loss="mse")


@dataclass(frozen=True)
class BackboneSpec:
    name: str  # a registered backbone
    preset: str = "default"  # paper | default | tiny
    width: float | None = None  # channel multiplier on top of the preset
    kwargs: dict[str, Any] = field(default_factory=dict, hash=False)  # constructor extras


@dataclass(frozen=True)
class ModelSpec:
    """A network: a backbone and one head per task, or a separate baseline model."""

    backbone: BackboneSpec
    tasks: tuple[Task, ...]
    image_size: int  # the square input side [N, 1, S, S]
    baseline_arch: str | None = None  # None: the shared model; "same" | "paper": a baseline
    denoised_input: bool = False  # a frozen denoiser (the backbone + a denoise head) in front

    def to_json(self) -> dict[str, Any]:
        bb = self.backbone
        return {
            "image_size": self.image_size,
            "backbone": {"name": bb.name, "preset": bb.preset, "width": bb.width, **bb.kwargs},
            "baseline_arch": self.baseline_arch,
            "denoised_input": self.denoised_input,
            "tasks": [{"name": t.name, "kind": t.kind, "column": t.column,
                       "classes": list(t.classes) if t.classes else None, "head": t.head,
                       "head_kwargs": dict(t.head_kwargs), "loss": t.loss} for t in self.tasks],
        }

    @classmethod
    def from_json(cls, meta: dict[str, Any]) -> ModelSpec:
        """From a ``model.json`` mapping (other keys are ignored); every version so far.
        A missing key raises ``ValueError`` naming it."""
        missing = [k for k in ("backbone", "tasks", "image_size") if k not in meta]
        if missing:
            raise ValueError(f"no {', '.join(map(repr, missing))} in model.json")
        bb = dict(meta["backbone"])
        backbone = BackboneSpec(name=bb.pop("name"), preset=bb.pop("preset", "default"),
                                width=bb.pop("width", None), kwargs=bb)
        tasks = []
        for t in meta["tasks"]:
            try:
                tasks.append(Task(
                    name=t["name"], kind=t["kind"], column=t.get("column") or "",
                    classes=tuple(t["classes"]) if t.get("classes") else None,
                    head=t.get("head") or "", head_kwargs=dict(t.get("head_kwargs") or {}),
                    loss=t.get("loss") or ""))
            except ValueError as exc:
                raise ValueError(f"model.json: {exc}") from None
            if tasks[-1].kind == "classification" and tasks[-1].classes is None:
                raise ValueError(f"model.json: task {t['name']!r} has no classes")
        return cls(backbone=backbone, tasks=tuple(tasks), image_size=int(meta["image_size"]),
                   baseline_arch=meta.get("baseline_arch"),
                   denoised_input=bool(meta.get("denoised_input")))


def build_model(spec: ModelSpec) -> MultiTaskModel:
    """An untrained network as ``spec`` describes it (modules built in a fixed order, so a
    seeded build gives the same initial weights)."""
    bb = spec.backbone
    if spec.baseline_arch == "paper":
        (task,) = spec.tasks
        model = build_separate_model(task.kind, arch="paper", preset=bb.preset, width=bb.width,
                                     num_classes=_num_classes(task))
        model.heads[task.name] = model.heads.pop(next(iter(model.heads)))
    else:
        model = _shared(bb, spec.tasks)
    if spec.denoised_input:
        model = DenoisedInput(_shared(bb, (DENOISE,)), model)
    return model


def _shared(bb: BackboneSpec, tasks: tuple[Task, ...]) -> MultiTaskModel:
    backbone = build_backbone(bb.name, preset=bb.preset, width=bb.width, **bb.kwargs)
    heads = {t.name: build_head(t.head, backbone, num_classes=_num_classes(t), preset=bb.preset,
                                width=bb.width, **_head_kwargs(t, tasks)) for t in tasks}
    return MultiTaskModel(backbone, heads)


def _head_kwargs(task: Task, tasks: tuple[Task, ...]) -> dict:
    """``task.head_kwargs``, without a ``guide`` this network has no head for (a separate
    baseline model, an independent stage of one task): that head pools the whole map."""
    kwargs = dict(task.head_kwargs)
    guide = kwargs.get("guide")
    if guide and guide not in {t.name for t in tasks}:
        log.info("%s: no %r head in this network; its head pools the whole map", task.name,
                 guide)
        kwargs.pop("guide")
        kwargs.pop("crop", None)  # nothing to cut to
        kwargs.pop("dilate", None)  # nor to widen
    return kwargs


def _num_classes(task: Task) -> int | None:
    return task.num_classes if task.kind == "classification" else None
