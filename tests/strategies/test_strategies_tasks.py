"""Task targets, the training step's inputs, and the denoised-input baseline."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from torch.utils.data import DataLoader
from toy_multitask import NOISE, TASKS, ToyCxr, make_model

from umsrep.config import ConfigError
from umsrep.models import count_trainable_params
from umsrep.strategies import DenoisedInput, build_strategy, compute_losses
from umsrep.tasks import Task


def _batch(n=4, missing=0.0):
    return next(iter(DataLoader(ToyCxr(n, missing=missing), batch_size=n)))


def test_task_from_dict_defaults_and_refusals():
    t = Task.from_dict(
        {"name": "abn", "kind": "classification", "column": "abnormal", "classes": ["no", "yes"]}
    )
    assert (t.head, t.loss, t.num_classes, t.classes) == (
        "classification",
        "cross_entropy",
        2,
        ("no", "yes"),
    )
    seg = Task.from_dict({"name": "lung", "kind": "segmentation"})
    assert (seg.column, seg.loss, seg.num_classes) == ("mask", "bce_dice", 1)
    with pytest.raises(ConfigError, match="colour"):
        Task.from_dict({"name": "x", "kind": "denoise", "colour": "red"})
    with pytest.raises(ConfigError, match="two classes"):
        Task(name="x", kind="classification", column="c", classes=["only"])
    with pytest.raises(ConfigError, match="kind"):
        Task.from_dict({"name": "x", "kind": "regression"})
    # an experiment file's task: classes come from the data later (build_tasks)
    later = Task.from_dict({"name": "abn", "kind": "classification", "column": "abnormal"})
    assert later.classes is None and later.head == "classification"
    with pytest.raises(ValueError, match="classes are not known yet"):
        later.num_classes  # noqa: B018
    with pytest.raises(ConfigError, match=r"^tasks\[0\].head: task 'x': 'seg_cdae' is a segmentation"):
        Task.from_dict({"name": "x", "kind": "classification", "column": "c",
                        "head": "seg_cdae"}, "tasks[0]")
    assert Task.from_dict({"name": "abn", "kind": "classification", "column": "abnormal",
                           "classes": ["no", "yes"], "loss_weight": 2.0}) == Task(
        name="abn", kind="classification", column="abnormal", classes=("no", "yes"),
        loss_weight=2.0)


def test_task_targets_and_valid_masks():
    batch = _batch(8, missing=0.5)
    lung, abn, den = TASKS
    target, valid = lung.target(batch)
    assert target.shape == (8, 1, 32, 32) and torch.equal(valid, batch["has_mask"])
    target, valid = abn.target(batch)
    assert torch.equal(valid, batch["labels"]["abnormal"] >= 0)
    target, valid = den.target(batch)
    assert torch.equal(target, batch["image"]) and valid.all()
    with pytest.raises(KeyError, match="flow"):
        Task(name="flow", kind="classification", column="flow", classes=("a", "b")).target(batch)


def test_denoise_task_sees_noisy_input_others_clean_unless_configured():
    model = make_model(TASKS).eval()
    batch = _batch()
    seen = []
    features = model.backbone.forward_features
    model.backbone.forward_features = lambda x: (seen.append(x.clone()), features(x))[1]
    with torch.no_grad():
        compute_losses(
            model,
            batch,
            {t.name: t for t in TASKS},
            ["lung", "denoise"],
            NOISE,
            torch.Generator().manual_seed(0),
        )
    noisy, clean = seen  # denoise tasks run first, on the noisy image
    assert torch.equal(clean, batch["image"]) and not torch.equal(noisy, batch["image"])
    seen.clear()
    with torch.no_grad():
        losses = compute_losses(
            model,
            batch,
            {t.name: t for t in TASKS},
            ["lung"],
            NOISE,
            torch.Generator().manual_seed(0),
            noisy_inputs=True,
        )
    assert set(losses) == {"loss/lung"} and not torch.equal(seen[0], batch["image"])


def test_a_task_s_loss_kwargs_reach_its_loss():
    model = make_model(TASKS).eval()
    batch = _batch()
    tasks = {t.name: t for t in TASKS}
    with torch.no_grad():
        plain = compute_losses(model, batch, tasks, ["lung", "abnormal"], NOISE, None)
        tasks["lung"] = dataclasses.replace(tasks["lung"], loss_kwargs={"w_bce": 1.0, "w_dice": 0.0})
        tasks["abnormal"] = dataclasses.replace(tasks["abnormal"],
                                                loss_kwargs={"label_smoothing": 0.3})
        changed = compute_losses(model, batch, tasks, ["lung", "abnormal"], NOISE, None)
    out = model(batch["image"], ["lung", "abnormal"])
    target, valid = tasks["lung"].target(batch)
    bce = torch.nn.functional.binary_cross_entropy_with_logits(out["lung"][valid].float(),
                                                               target[valid])
    assert changed["loss/lung"].item() == pytest.approx(bce.item(), rel=1e-5)
    assert changed["loss/abnormal"].item() != pytest.approx(plain["loss/abnormal"].item())
    assert Task.from_dict({"name": "t", "kind": "classification", "column": "c",
                           "loss_kwargs": {"label_smoothing": 0.1}}).loss_kwargs == {
        "label_smoothing": 0.1}


def test_denoised_input_feeds_a_frozen_denoiser_into_a_separate_model():
    denoiser = make_model(TASKS[2:], seed=1)
    separate = make_model(TASKS[1:2], seed=2)
    model = DenoisedInput(denoiser, separate)
    assert model.task_names == ["abnormal"]
    assert count_trainable_params(model) == count_trainable_params(separate)
    frozen = {k: v.clone() for k, v in denoiser.state_dict().items()}
    strategy = build_strategy("joint", model, TASKS[1:2], lr=1e-2)
    strategy.train_mode()
    assert not denoiser.training
    batch = _batch()
    strategy.step({"abnormal": batch})
    assert all(torch.equal(v, denoiser.state_dict()[k]) for k, v in frozen.items())
    model.eval()
    with torch.no_grad():
        expected = separate(denoiser(batch["image"])["denoise"])["abnormal"]
        torch.testing.assert_close(model(batch["image"])["abnormal"], expected)
