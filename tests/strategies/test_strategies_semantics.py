"""Strategy semantics: what each strategy may and may not change."""

from __future__ import annotations

import pytest
import torch
from torch.utils.data import DataLoader
from toy_multitask import NOISE, TASKS, ToyCxr, changed, make_loaders, make_model, snapshot

from umsrep.strategies import STRATEGIES, build_strategy
from umsrep.train.loop import run_epoch

TWO = TASKS[:2]  # lung segmentation + abnormality classification


@pytest.mark.parametrize("name", STRATEGIES.names())
def test_every_strategy_trains_forward_and_backward(name):
    model = make_model()
    strategy = build_strategy(name, model, TASKS, noise_cfg=NOISE, lr=1e-2)
    before = snapshot(model.heads)
    logs = run_epoch(strategy, make_loaders(), max_steps=2)
    assert logs["train/steps"] == 2
    assert all(torch.isfinite(torch.tensor(v)) for v in logs.values())
    assert changed(before, model.heads), "no head was trained"


def test_independent_leaves_backbone_bitwise_unchanged():
    model = make_model()
    backbone_before = snapshot(model.backbone)  # conv weights AND BN running stats
    heads_before = snapshot(model.heads)
    strategy = build_strategy("independent", model, TASKS, noise_cfg=NOISE, lr=1e-2)
    run_epoch(strategy, make_loaders())
    assert changed(backbone_before, model.backbone) == set()
    assert all(not p.requires_grad for p in model.backbone.parameters())
    assert {k.split(".")[0] for k in changed(heads_before, model.heads)} == {t.name for t in TASKS}
    assert set(strategy.optimizers) == {t.name for t in TASKS}


def test_independent_passes_each_loader_once():
    model = make_model(TWO)
    loaders = make_loaders(n=(8, 20), batch_size=4, tasks=TWO)
    strategy = build_strategy("independent", model, TWO, lr=1e-3)
    seen = {t.name: 0 for t in TWO}
    for item in strategy.schedule(loaders):
        for name, batch in item.items():
            seen[name] += len(batch["image"])
    assert seen == {"lung": 8, "abnormal": 20}


def test_alternating_step_changes_only_backbone_and_active_head():
    model = make_model()
    strategy = build_strategy("alternating", model, TASKS, noise_cfg=NOISE, lr=1e-2)
    batch = next(iter(make_loaders()["abnormal"]))
    before = snapshot(model)
    strategy.train_mode()
    strategy.step({"abnormal": batch})
    touched = {
        k.split(".")[0] if k.startswith("backbone") else ".".join(k.split(".")[:2])
        for k in changed(before, model)
    }
    assert touched == {"backbone", "heads.abnormal"}


def test_alternating_round_robin_with_ratios_and_size_proportional_default():
    model = make_model(TWO)
    loaders = make_loaders(n=(8, 16), batch_size=4, tasks=TWO)  # 2 and 4 batches
    explicit = build_strategy("alternating", model, TWO, ratios={"lung": 1, "abnormal": 2.6})
    order = [next(iter(item)) for item in explicit.schedule(loaders)]
    assert order[:8] == ["lung", "abnormal", "abnormal", "abnormal"] * 2
    proportional = build_strategy("alternating", model, TWO)
    assert proportional.turn_lengths(loaders) == {"lung": 1, "abnormal": 2}
    order = [next(iter(item)) for item in proportional.schedule(loaders)]
    assert order == ["lung", "abnormal", "abnormal"] * 2
    with pytest.raises(ValueError, match="ratios"):
        build_strategy("alternating", model, TWO, ratios={"lung": 1})
    with pytest.raises(ValueError, match="ratios"):
        build_strategy("alternating", model, TWO, ratios={"lung": 1, "abnormal": 0})


def test_joint_shared_loader_and_cycling_of_shorter_loaders():
    model = make_model(TWO)
    strategy = build_strategy("joint", model, TWO)
    shared = make_loaders(n=(12,), batch_size=4, shared=True, tasks=TWO)
    items = list(strategy.schedule(shared))
    assert len(items) == 3 and all(it["lung"] is it["abnormal"] for it in items)
    separate = make_loaders(n=(4, 12), batch_size=4, tasks=TWO)  # 1 and 3 batches
    items = list(strategy.schedule(separate))
    assert len(items) == 3 and all(set(it) == {"lung", "abnormal"} for it in items)


def _joint_grads(weights):
    model = make_model(TWO)
    strategy = build_strategy(
        "joint", model, TWO, weighting="fixed", weights=weights, optimizer="sgd", lr=0.0
    )
    batch = next(iter(DataLoader(ToyCxr(4), batch_size=4)))
    strategy.train_mode()
    logs = strategy.step({"lung": batch, "abnormal": batch})
    assert logs["weight/abnormal"] == weights["abnormal"]
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def test_joint_fixed_weights_scale_each_tasks_gradient():
    one = _joint_grads({"lung": 1.0, "abnormal": 1.0})
    two = _joint_grads({"lung": 1.0, "abnormal": 2.0})
    cls = [n for n in one if n.startswith("heads.abnormal")]
    seg = [n for n in one if n.startswith("heads.lung")]
    assert cls and seg
    for n in cls:
        torch.testing.assert_close(two[n], 2 * one[n])
    for n in seg:
        torch.testing.assert_close(two[n], one[n])


@pytest.mark.parametrize("weighting", ["uncertainty", "gradnorm"])
def test_learned_weights_change_and_stay_finite(weighting):
    model = make_model(TWO)
    strategy = build_strategy("joint", model, TWO, weighting=weighting, lr=1e-2, gradnorm_lr=5e-2)
    before = strategy.loss_weights()
    run_epoch(strategy, make_loaders(n=(8, 8), tasks=TWO), max_steps=4)
    after = strategy.loss_weights()
    assert all(torch.isfinite(torch.tensor(v)) and v > 0 for v in after.values())
    assert after != before
    if weighting == "gradnorm":  # renormalised to the number of tasks
        assert sum(after.values()) == pytest.approx(2.0, rel=1e-5)


def test_uncertainty_weighting_is_kendalls_loss_with_its_gradient():
    """``sum_i 0.5 exp(-s_i) L_i + 0.5 s_i``, d/ds_i = 0.5 - 0.5 exp(-s_i) L_i; a task absent
    from the step moves neither the loss nor its own s."""
    import math

    from umsrep.strategies.weighting import WEIGHTINGS

    w = WEIGHTINGS.get("uncertainty")(["lung", "abnormal", "heart"])
    s = [0.3, -0.7, 0.2]
    with torch.no_grad():
        w.log_vars.copy_(torch.tensor(s))
    losses = {"lung": torch.tensor(2.0), "abnormal": torch.tensor(0.5)}
    total = w.combine(losses)
    assert float(total.detach()) == pytest.approx(
        0.5 * math.exp(-0.3) * 2.0 + 0.5 * 0.3 + 0.5 * math.exp(0.7) * 0.5 + 0.5 * -0.7)
    total.backward()
    assert w.log_vars.grad.tolist() == pytest.approx(
        [0.5 - 0.5 * math.exp(-0.3) * 2.0, 0.5 - 0.5 * math.exp(0.7) * 0.5, 0.0])
    assert w.weights() == pytest.approx(
        {"lung": 0.5 * math.exp(-0.3), "abnormal": 0.5 * math.exp(0.7),
         "heart": 0.5 * math.exp(-0.2)})


@pytest.mark.parametrize("lr", [0.01, 0.2])
def test_gradnorm_raises_the_weight_of_the_task_that_trains_slower(lr):
    """Worked by hand: the first step records each task's initial loss; in the second, lung's
    loss is at 0.9 of its start and abnormal's at 0.3, so r = (1.5, 0.5) and the targets
    mean(G) r^1.5 = (0.89, 0.17) lie above lung's G = 0.67 and below abnormal's 0.30. Adam's
    first step moves each weight by lr against the sign of its gradient: lung's up, abnormal's
    down, and they still sum to the number of tasks."""
    from umsrep.strategies.weighting import WEIGHTINGS

    w = WEIGHTINGS.get("gradnorm")(["lung", "abnormal"], alpha=1.5, lr=lr)
    shared = torch.ones(3, requires_grad=True)
    c_lung, c_abn = torch.tensor([0.6, 0.3, 0.0]), torch.tensor([0.3, 0.0, 0.0])
    w.before_backward({"lung": (shared * c_lung).sum() / 0.9,  # losses 1.0 and 1.0 at the start
                       "abnormal": (shared * c_abn).sum() / 0.3}, shared)
    assert w.initial.tolist() == pytest.approx([1.0, 1.0])
    w.before_backward({"lung": (shared * c_lung).sum(), "abnormal": (shared * c_abn).sum()},
                      shared)
    w.after_step()
    assert w.weights() == pytest.approx({"lung": 1 + lr, "abnormal": 1 - lr}, rel=1e-5)
    lung, abn = torch.tensor(2.0), torch.tensor(3.0)
    assert float(w.combine({"lung": lung, "abnormal": abn})) == pytest.approx(
        (1 + lr) * 2.0 + (1 - lr) * 3.0, rel=1e-5)


@pytest.mark.parametrize("name", STRATEGIES.names())
def test_all_labels_missing_leaves_heads_unchanged(name):
    model = make_model(TWO)
    strategy = build_strategy(name, model, TWO, optimizer="adamw", lr=1e-2, weight_decay=0.1)
    batch = next(iter(DataLoader(ToyCxr(4, missing=1.0), batch_size=4)))
    assert not batch["has_mask"].any() and (batch["labels"]["abnormal"] == -1).all()
    before = snapshot(model.heads)
    strategy.train_mode()
    if name == "alternating":
        logs = strategy.step({"abnormal": batch}) | strategy.step({"lung": batch})
    else:
        logs = strategy.step({"lung": batch, "abnormal": batch})
    assert changed(before, model.heads) == set()
    assert not any(k.startswith("loss/") for k in logs)


def test_partial_labels_only_labelled_samples_count():
    """A classification loss over a half-labelled batch equals the loss over its labelled half."""
    model = make_model(TWO).eval()
    strategy = build_strategy("joint", model, TWO)
    ds = ToyCxr(8, missing=0.5)
    full = next(iter(DataLoader(ds, batch_size=8)))
    keep = [i for i in range(8) if ds.labels[i] >= 0]
    assert 0 < len(keep) < 8
    part = next(iter(DataLoader(torch.utils.data.Subset(ds, keep), batch_size=8)))
    with torch.no_grad():
        a, _ = strategy.task_losses({"abnormal": full})
        b, _ = strategy.task_losses({"abnormal": part})
    torch.testing.assert_close(a["abnormal"], b["abnormal"])


def test_unknown_option_and_missing_head_are_refused():
    model = make_model(TWO)
    with pytest.raises(TypeError, match="joint"):
        build_strategy("joint", model, TWO, wieghting="fixed")
    with pytest.raises(ValueError, match="no head"):
        build_strategy("joint", model, TASKS)
    with pytest.raises(KeyError, match="known"):
        build_strategy("joint", model, TWO, weighting="magic")
