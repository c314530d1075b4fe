"""ModelSpec <-> model.json, and build_model for each kind of network."""

from __future__ import annotations

import pytest

from umsrep.models import DenoisedInput, ModelSpec, MultiTaskModel, build_model

# a model.json as umsrep wrote it before ModelSpec existed (runner/execute.py model_meta)
OLD_MODEL_JSON = {
    "threshold": {"lung": 0.4}, "stage": "f0-baseline-abnormal", "kind": "baseline",
    "strategy": "baseline", "fold": 0, "image_size": 32, "fit": "stretch", "tta": [],
    "contrast": "none", "mask_cleanup": None,
    "backbone": {"name": "cdae", "preset": "tiny", "width": None},
    "baseline_arch": "same", "denoised_input": True,
    "tasks": [{"name": "abnormal", "kind": "classification", "column": "abnormal",
               "classes": ["0", "1"], "head": "classification", "head_kwargs": {},
               "loss": "cross_entropy"}],
    "rules": [], "checkpoint": "best", "epoch": 1,
}


def test_an_old_model_json_reads_and_writes_back_the_same_keys():
    spec = ModelSpec.from_json(OLD_MODEL_JSON)
    assert spec.image_size == 32 and spec.denoised_input and spec.baseline_arch == "same"
    assert spec.tasks[0].classes == ("0", "1")
    assert spec.to_json() == {k: OLD_MODEL_JSON[k] for k in spec.to_json()}


def test_backbone_kwargs_are_stored_beside_name_preset_and_width():
    meta = {**OLD_MODEL_JSON, "backbone": {"name": "cdae", "preset": "tiny", "width": 0.5,
                                           "extra": 1}}
    spec = ModelSpec.from_json(meta)
    assert spec.backbone.kwargs == {"extra": 1}
    assert spec.to_json()["backbone"] == meta["backbone"]


@pytest.mark.parametrize("arch,denoised", [(None, False), ("same", True), ("paper", False)])
def test_build_model_builds_each_kind(arch, denoised):
    spec = ModelSpec.from_json({**OLD_MODEL_JSON, "baseline_arch": arch,
                                "denoised_input": denoised})
    model = build_model(spec)
    assert isinstance(model, MultiTaskModel)
    assert isinstance(model, DenoisedInput) == denoised
    assert model.task_names == ["abnormal"]


def test_a_classification_task_without_classes_names_model_json():
    bad = {**OLD_MODEL_JSON, "tasks": [{**OLD_MODEL_JSON["tasks"][0], "classes": None}]}
    with pytest.raises(ValueError, match="model.json"):
        ModelSpec.from_json(bad)
