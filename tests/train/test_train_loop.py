"""The plain loop: checkpoints, resume, seeds, early stopping, reporting."""

from __future__ import annotations

import math

import pytest
import torch
from toy_multitask import NOISE, TASKS, make_loaders, make_model

from umsrep.config import ConfigError
from umsrep.strategies import build_strategy
from umsrep.train.checkpoint import (
    capture_rng_state,
    load_checkpoint,
    restore_rng_state,
    save_checkpoint,
    seed_everything,
)
from umsrep.train.loop import TrainConfig, fit, strategy_options

TWO = TASKS[:2]


SEED = 3


def _run(cfg: TrainConfig, strategy="joint", tasks=TWO, report=None, checkpoint_dir=None,
         hooks=(), **options):
    seed_everything(SEED)
    model = make_model(tasks, seed=SEED)
    strat = build_strategy(
        strategy, model, tasks, noise_cfg=NOISE, **strategy_options(cfg, "cpu", SEED), **options
    )
    train = make_loaders(n=(8, 8), tasks=tasks)
    val = make_loaders(n=(4, 4), seed=7, tasks=tasks)
    return model, fit(model, strat, train, val, cfg, hooks, report=report, seed=SEED,
                      checkpoint_dir=checkpoint_dir)


def _cfg(**kw) -> TrainConfig:
    base = {
        "epochs": 2,
        "lr": 1e-2,
        "patience": 0,
        "plateau_patience": 0,
        "max_steps_per_epoch": 2,
        "precision": "fp32",
    }
    return TrainConfig(**(base | kw))


def test_same_seed_same_numbers():
    _, a = _run(_cfg(), weighting="uncertainty")
    _, b = _run(_cfg(), weighting="uncertainty")
    assert [h["val/loss"] for h in a.history] == [h["val/loss"] for h in b.history]
    assert a.trainable_params == b.trainable_params > 0
    assert a.epochs_run == 2 and a.wall_s > 0


def test_checkpoint_round_trip_loads_weights_only(tmp_path):
    model = make_model(TWO)
    strategy = build_strategy("joint", model, TWO, weighting="gradnorm")
    rng = capture_rng_state()
    first = torch.rand(3)
    state = {
        "model": model.state_dict(),
        "strategy": strategy.state_dict(),
        "rng": rng,
        "history": [{"val/loss": 1.5}],
    }
    path = save_checkpoint(tmp_path / "c" / "last.pt", state)
    assert [p.name for p in path.parent.iterdir()] == ["last.pt"]  # no temp file left
    loaded = load_checkpoint(path)  # weights_only=True inside
    other = make_model(TWO, seed=1)
    other.load_state_dict(loaded["model"])
    for k, v in model.state_dict().items():
        assert torch.equal(v, other.state_dict()[k])
    build_strategy("joint", other, TWO, weighting="gradnorm").load_state_dict(loaded["strategy"])
    restore_rng_state(loaded["rng"])
    assert torch.equal(torch.rand(3), first)
    (tmp_path / "bad.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="bad.pt"):
        load_checkpoint(tmp_path / "bad.pt")


@pytest.mark.parametrize("strategy,ema", [("alternating", 0.0), ("joint", 0.0),
                                          ("joint", 0.9)])
def test_resume_continues_with_identical_results(tmp_path, strategy, ema):
    cfg = _cfg(epochs=3, plateau_patience=1, ema=ema)
    model_full, full = _run(cfg, strategy, checkpoint_dir=tmp_path / "full")
    part_cfg = _cfg(epochs=2, plateau_patience=1, checkpoint="last", ema=ema)
    _run(part_cfg, strategy, checkpoint_dir=tmp_path / "part")
    assert load_checkpoint(tmp_path / "part" / "last.pt")["epoch"] == 2
    resumed_cfg = _cfg(epochs=3, plateau_patience=1, ema=ema)
    model_res, resumed = _run(resumed_cfg, strategy, checkpoint_dir=tmp_path / "part")
    assert resumed.epochs_run == 3
    keys = ["train/loss", "val/loss"]
    assert [[h[k] for k in keys] for h in resumed.history] == [
        [h[k] for k in keys] for h in full.history
    ]
    for k, v in model_full.state_dict().items():
        assert torch.equal(v, model_res.state_dict()[k]), k


def test_early_stopping_stops_and_best_weights_restore():
    cfg = _cfg(epochs=10, lr=0.0, patience=2, optimizer="sgd")  # nothing improves
    _, result = _run(cfg)
    assert result.epochs_run == 3  # first epoch sets the best, two more without progress
    assert result.best_metric == pytest.approx(result.history[0]["val/loss"])


def test_report_callback_each_epoch_after_checkpoint(tmp_path):
    calls = []

    def report(epoch, metrics, ckpt_dir):
        calls.append((epoch, metrics["val/loss"], (ckpt_dir / "last.pt").is_file()))

    _run(_cfg(), report=report, checkpoint_dir=tmp_path)
    assert [c[0] for c in calls] == [0, 1]
    assert all(math.isfinite(c[1]) and c[2] for c in calls)


def _fixed_val_losses(monkeypatch, losses: dict[str, list[float]]) -> None:
    """Each epoch's validation pass runs, then ``losses[key][epoch]`` replaces its figure."""
    from umsrep.train import hooks

    original = hooks.ValidationHook.after_epoch

    def fixed(self, state):
        original(self, state)
        for key, values in losses.items():
            state.metrics[key] = values[state.epoch]

    monkeypatch.setattr(hooks.ValidationHook, "after_epoch", fixed)


def test_plateau_halves_the_lr_after_patience_epochs_without_progress(monkeypatch):
    """patience 1: the second epoch without a better loss halves the LR; a better loss resets
    the count. The history logs the LR after each epoch's step, and the loss weights."""
    _fixed_val_losses(monkeypatch, {"val/loss": [1.0, 1.0, 1.0, 0.5, 0.5, 0.5]})
    cfg = _cfg(epochs=6, lr=0.01, plateau_patience=1, plateau_factor=0.5, optimizer="sgd")
    _, result = _run(cfg, weights={"lung": 1.0, "abnormal": 3.0})
    assert [h["lr/all"] for h in result.history] == pytest.approx(
        [0.01, 0.01, 0.005, 0.005, 0.005, 0.0025])
    assert result.history[0]["train/weight/abnormal"] == 3.0


def test_plateau_of_independent_heads_cuts_each_heads_lr_on_its_own_loss(monkeypatch):
    """Heads on a frozen backbone in one stage: the head whose loss stalls has its LR halved,
    the head still improving keeps its own."""
    _fixed_val_losses(monkeypatch, {"val/loss/lung": [1.0, 1.0, 1.0, 1.0],
                                    "val/loss/abnormal": [4.0, 3.0, 2.0, 1.0]})
    cfg = _cfg(epochs=4, lr=0.01, plateau_patience=1, plateau_factor=0.5, optimizer="sgd")
    _, result = _run(cfg, "independent")
    assert [h["lr/lung"] for h in result.history] == pytest.approx([0.01, 0.01, 0.005, 0.005])
    assert [h["lr/abnormal"] for h in result.history] == pytest.approx([0.01] * 4)


def test_cosine_schedule_anneals_to_zero_over_the_epochs_and_replaces_the_plateau():
    cfg = _cfg(epochs=4, lr=0.01, schedule="cosine", plateau_patience=1, optimizer="sgd")
    _, result = _run(cfg)
    lrs = [h["lr/all"] for h in result.history]
    assert lrs == pytest.approx([0.01 * (1 + math.cos(math.pi * e / 4)) / 2 for e in (1, 2, 3, 4)])
    assert lrs[-1] == pytest.approx(0.0, abs=1e-12)
    from umsrep.train.loop import default_hooks

    names = [h.name for h in default_hooks(cfg, {})]
    assert "cosine" in names and "plateau" not in names


def test_a_cosine_stage_resumed_after_a_crash_ends_as_an_uninterrupted_one(tmp_path):
    from umsrep.train.hooks import Hook

    class Crash(Hook):
        name = "crash"

        def after_epoch(self, state):
            if state.epoch == 1:  # before epoch 1's checkpoint: last.pt holds epoch 0
                raise RuntimeError("worker lost")

    cfg = _cfg(epochs=3, lr=0.01, schedule="cosine")
    model_full, full = _run(cfg, checkpoint_dir=tmp_path / "full")
    with pytest.raises(RuntimeError, match="worker lost"):
        _run(cfg, checkpoint_dir=tmp_path / "part", hooks=[Crash()])
    model_res, resumed = _run(cfg, checkpoint_dir=tmp_path / "part")
    assert [h["lr/all"] for h in resumed.history] == [h["lr/all"] for h in full.history]
    assert [h["val/loss"] for h in resumed.history] == [h["val/loss"] for h in full.history]
    for k, v in model_full.state_dict().items():
        assert torch.equal(v, model_res.state_dict()[k]), k


def test_monitor_must_exist():
    with pytest.raises(KeyError, match="monitor"):
        _run(_cfg(monitor="val/nothing", patience=2))


def test_val_score_averages_each_tasks_main_metric_on_a_0_1_scale():
    from types import SimpleNamespace

    from umsrep.train.hooks import val_score

    tasks = {"lung": SimpleNamespace(kind="segmentation"),
             "tb": SimpleNamespace(kind="classification"),
             "den": SimpleNamespace(kind="denoise")}
    metrics = {"val/lung/dice": 0.9, "val/tb/auc": 0.7, "val/tb/accuracy": 0.1,
               "val/den/psnr": 30.0, "val/loss": 5.0}
    assert val_score(metrics, tasks) == pytest.approx((0.9 + 0.7 + 0.6) / 3)
    # no AUC (one class in the validation split): accuracy stands in
    metrics["val/tb/auc"] = float("nan")
    assert val_score(metrics, tasks) == pytest.approx((0.9 + 0.1 + 0.6) / 3)
    # no task metric at all: minus the loss, so that larger is still better
    assert val_score({"val/loss": 5.0}, tasks) == -5.0


def test_monitor_score_maps_to_val_score_maximised():
    cfg = TrainConfig(monitor="score")
    assert (cfg.monitor_key, cfg.monitor_mode) == ("val/score", "max")
    cfg = TrainConfig()
    assert (cfg.monitor_key, cfg.monitor_mode) == ("val/loss", "min")
    with pytest.raises(ConfigError, match="train.monitor"):
        TrainConfig.from_dict({"monitor": "dice"})


def test_score_tasks_limit_the_score_to_the_tasks_named():
    """``score_tasks: [lung]``: a joint stage of lung + abnormal is stopped and its epoch chosen
    by the lung Dice alone; a stage that trains none of them by minus its validation loss."""
    seed_everything(SEED)
    model = make_model(TWO, seed=SEED)
    cfg = _cfg(monitor="score", score_tasks=["lung"])
    strat = build_strategy("joint", model, TWO, noise_cfg=NOISE,
                           **strategy_options(cfg, "cpu", SEED))
    result = fit(model, strat, make_loaders(n=(8, 8), tasks=TWO),
                 make_loaders(n=(4, 4), seed=7, tasks=TWO), cfg, seed=SEED, val_metrics=True)
    from umsrep.train.hooks import val_score

    for h in result.history:
        both = val_score(h, {t.name: t for t in TWO})
        assert h["val/score"] == h["val/lung/dice"] != both
    only = (TASKS[1],)
    model = make_model(only, seed=SEED)
    strat = build_strategy("joint", model, only, noise_cfg=NOISE,
                           **strategy_options(cfg, "cpu", SEED))
    result = fit(model, strat, make_loaders(n=(8, 8), tasks=only),
                 make_loaders(n=(4, 4), seed=7, tasks=only), cfg, seed=SEED, val_metrics=True)
    scores = [h["val/score"] for h in result.history]
    assert scores == [-h["val/loss"] for h in result.history]
    assert scores != [val_score(h, {"abnormal": only[0]}) for h in result.history]
    assert result.best_epoch == max(range(len(scores)), key=lambda i: (scores[i], -i))


def test_score_tasks_must_name_tasks_of_the_experiment():
    import json

    from tests.runner.conftest import TINY
    from umsrep.experiment import load_experiment

    cfg = json.loads(json.dumps(TINY))
    cfg["train"]["score_tasks"] = ["lungs"]
    with pytest.raises(ConfigError, match=r"train.score_tasks.*not tasks"):
        load_experiment(data=cfg)
    cfg["train"]["score_tasks"] = ["lung"]
    assert load_experiment(data=cfg).train.score_tasks == ["lung"]


def test_independent_heads_in_one_stage_stop_and_keep_their_best_epochs_each():
    """Several heads on a frozen backbone: each is retired after ``patience`` epochs without
    progress on its own metric (no more steps), the stage stops when all are, and the model
    ends with each head at its own best epoch (its validation figures are that epoch's)."""
    from umsrep.train.evaluate import evaluate
    from umsrep.train.hooks import val_score

    cfg = _cfg(epochs=8, patience=2, monitor="score", plateau_patience=1)
    seed_everything(SEED)
    model = make_model(TWO, seed=SEED)
    strat = build_strategy("independent", model, TWO, noise_cfg=NOISE,
                           **strategy_options(cfg, "cpu", SEED))
    assert strat.selects_per_head
    val = make_loaders(n=(4, 6), seed=7, tasks=TWO)
    result = fit(model, strat, make_loaders(n=(8, 8), tasks=TWO), val, cfg, seed=SEED,
                 val_metrics=True)
    hist = result.history
    assert set(result.best_epochs) == {"lung", "abnormal"}
    assert result.best_epoch == max(result.best_epochs.values())
    for t in TWO:
        values = [val_score(h, {t.name: t}) for h in hist]
        best = result.best_epochs[t.name]
        assert values[best] == max(values[: best + 3])  # the best until it was retired
        trained = [i for i, h in enumerate(hist) if f"train/loss/{t.name}" in h]
        # retired two epochs after its best: no step since, and the LR was its own to cut
        assert trained == list(range(min(best + 3, len(hist))))
    assert result.epochs_run < cfg.epochs and strat.retired == {"lung", "abnormal"}
    again = build_strategy("independent", make_model(TWO), TWO, noise_cfg=NOISE)
    again.load_state_dict(strat.state_dict())  # a resumed stage keeps its retired heads
    assert again.retired == strat.retired
    rows, _ = evaluate(model, list(TWO), val, NOISE, device="cpu", seed=SEED)
    now = {f"val/{r['task']}/{r['metric']}": r["value"] for r in rows if not r["noise"]}
    for t in TWO:
        assert val_score(now, {t.name: t}) == pytest.approx(
            val_score(hist[result.best_epochs[t.name]], {t.name: t}))


def test_an_independent_head_left_out_of_score_tasks_is_chosen_by_its_loss():
    """``score_tasks: [lung]`` with independent heads: the lung head keeps the epoch of its best
    Dice, the abnormal head (not scored) the epoch of its lowest validation loss."""
    from umsrep.train.hooks import val_score

    cfg = _cfg(epochs=6, patience=0, monitor="score", score_tasks=["lung"])
    seed_everything(SEED)
    model = make_model(TWO, seed=SEED)
    strat = build_strategy("independent", model, TWO, noise_cfg=NOISE,
                           **strategy_options(cfg, "cpu", SEED))
    result = fit(model, strat, make_loaders(n=(8, 8), tasks=TWO),
                 make_loaders(n=(4, 6), seed=7, tasks=TWO), cfg, seed=SEED, val_metrics=True)
    hist = result.history

    def first_best(values):
        return max(range(len(values)), key=lambda i: (values[i], -i))

    lung = [val_score(h, {"lung": TWO[0]}) for h in hist]
    loss = [-h["val/loss/abnormal"] for h in hist]
    auc = [val_score(h, {"abnormal": TWO[1]}) for h in hist]
    assert result.best_epochs == {"lung": first_best(lung), "abnormal": first_best(loss)}
    assert first_best(loss) != first_best(auc)  # the AUC would have chosen another epoch


def test_weight_average_warms_up_moves_towards_the_model_and_swaps_back():
    from umsrep.train.averaging import WeightAverage

    model = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.BatchNorm1d(2))
    start = {k: v.clone() for k, v in model.state_dict().items()}
    average = WeightAverage(model, decay=0.99)
    assert average.current_decay() == pytest.approx(0.1)  # (1 + 0) / (10 + 0): warm-up
    with torch.no_grad():
        model[0].weight.add_(1.0)
        model[1].num_batches_tracked.fill_(5)
    average.update(model)  # the first update: decay (1 + 1) / (10 + 1)
    d = 2 / 11
    expected = d * start["0.weight"] + (1 - d) * model[0].weight.detach()
    assert torch.allclose(average.shadow["0.weight"], expected)
    assert int(average.shadow["1.num_batches_tracked"]) == 5  # integers are copied
    for _ in range(2000):
        average.update(model)
    assert average.current_decay() == pytest.approx(0.99)
    assert torch.allclose(average.shadow["0.weight"], model[0].weight.detach(), atol=1e-6)
    trained = {k: v.clone() for k, v in model.state_dict().items()}
    average.shadow["0.bias"].fill_(7.0)
    average.swap(model)
    assert torch.all(model[0].bias == 7.0)
    average.swap(model)
    assert all(torch.equal(v, trained[k]) for k, v in model.state_dict().items())
    with pytest.raises(ValueError, match="decay"):
        WeightAverage(model, decay=1.0)
    model[0].weight.requires_grad_(False)  # frozen when the average is built: left out
    assert "0.weight" not in WeightAverage(model, decay=0.9).shadow


def test_ema_trains_the_same_weights_and_validates_keeps_their_average(tmp_path):
    plain_model, plain = _run(_cfg(epochs=3, checkpoint="last"),
                              checkpoint_dir=tmp_path / "plain")
    # 0.3: below the warm-up's (1 + t) / (10 + t) from the second step, so the decay set counts
    ema_model, ema = _run(_cfg(epochs=3, checkpoint="last", ema=0.3),
                          checkpoint_dir=tmp_path / "ema")
    # the optimizer steps the trained weights as without the average ...
    assert [h["train/loss"] for h in ema.history] == [h["train/loss"] for h in plain.history]
    last = load_checkpoint(tmp_path / "ema" / "last.pt")
    for k, v in plain_model.state_dict().items():
        assert torch.equal(last["model"][k], v), k
    # ... while validation scores, and the model ends with, the average
    assert [h["val/loss"] for h in ema.history] != [h["val/loss"] for h in plain.history]
    assert (last["average"]["decay"], last["average"]["updates"]) == (0.3, 6)  # 3 x 2 steps
    for k, v in ema_model.state_dict().items():
        assert torch.equal(last["average"]["shadow"][k], v), k
    assert any(not torch.equal(v, plain_model.state_dict()[k])
               for k, v in ema_model.state_dict().items() if v.is_floating_point())
    # a stage resumed with other settings than it was started with is refused
    with pytest.raises(ValueError, match="without a weight average"):
        _run(_cfg(epochs=4, ema=0.3), checkpoint_dir=tmp_path / "plain")
    with pytest.raises(ValueError, match="with a weight average"):
        _run(_cfg(epochs=4), checkpoint_dir=tmp_path / "ema")
    with pytest.raises(ValueError, match="decay 0.3"):
        _run(_cfg(epochs=4, ema=0.9), checkpoint_dir=tmp_path / "ema")


def test_ema_with_independent_heads_leaves_the_frozen_backbone_out_and_keeps_each_best(
        tmp_path):
    cfg = _cfg(epochs=4, ema=0.3, checkpoint="best")
    model, result = _run(cfg, "independent", tasks=TWO, checkpoint_dir=tmp_path)
    averaged = load_checkpoint(tmp_path / "last.pt")["average"]["shadow"]
    frozen = {f"backbone.{k}" for k, _ in model.backbone.named_parameters()}
    assert frozen and not frozen & set(averaged)  # frozen parameters left out (buffers kept)
    assert any(k.startswith("heads.") for k in averaged)
    before = make_model(TWO, seed=SEED)
    for k, v in model.backbone.state_dict().items():  # and not moved by the swaps
        assert torch.equal(v, before.backbone.state_dict()[k]), k
    assert set(result.best_epochs) == {t.name for t in TWO}
    # each head ends at its own best epoch's average; the last epoch's average is kept apart
    assert any(not torch.equal(v, result.other_weights[k])
               for k, v in model.state_dict().items() if k in averaged)


def test_ema_decay_must_lie_in_zero_one():
    assert TrainConfig.from_dict({"ema": 0.99}).ema == 0.99
    for bad in (1.0, -0.1):
        with pytest.raises(ConfigError, match=r"train\.ema: the weight average's decay"):
            TrainConfig.from_dict({"ema": bad})


def test_run_epoch_times_each_tasks_steps():
    """An alternating turn's seconds go to its task; a step that trains both (joint) is shared
    evenly; the sums reach ``result.json`` as ``task_seconds``."""
    import time

    from umsrep.runner.outputs import task_seconds
    from umsrep.train.loop import run_epoch

    cost = {"lung": 0.2, "tb": 0.05}

    class Timed:
        def train_mode(self):
            """Nothing to switch: the fake has no modules."""

        def schedule(self, loaders):
            batch = {"image": torch.zeros(2, 1, 4, 4)}
            yield {"lung": batch}
            yield {"tb": batch}
            yield {"lung": batch, "tb": batch}  # one step training both

        def step(self, batches):
            time.sleep(sum(cost[t] for t in batches))
            return {f"loss/{t}": 1.0 for t in batches}

    out = run_epoch(Timed(), {})
    lung, tb = out["train/task_s/lung"], out["train/task_s/tb"]
    # lung: its own turn (0.2) + half of the shared step (0.125); tb: 0.05 + 0.125
    assert lung >= 0.325 and tb >= 0.175 and lung - tb == pytest.approx(0.15, abs=0.06)
    assert lung + tb <= out["train/epoch_s"]
    assert task_seconds([out, out]) == {"lung": 2 * lung, "tb": 2 * tb}


def test_fit_history_keeps_task_seconds_of_the_tasks_it_trained():
    _, result = _run(_cfg(), strategy="alternating")
    names = {t.name for t in TWO}
    for h in result.history:
        timed = {k[len("train/task_s/"):] for k in h if k.startswith("train/task_s/")}
        assert timed == names and all(h[f"train/task_s/{n}"] > 0 for n in names)
