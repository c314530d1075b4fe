"""Replayed batches and remembered features for heads on a frozen backbone."""

from __future__ import annotations

import pytest
import torch
from torch.utils.data import DataLoader
from toy_multitask import NOISE, TASKS, ToyCxr, changed, make_loaders, make_model, snapshot

from umsrep.strategies import build_strategy
from umsrep.strategies.replay import BatchReplay, FeatureMemo, batch_bytes
from umsrep.train.checkpoint import seed_everything
from umsrep.train.loop import TrainConfig, fit, run_epoch, strategy_options

TWO = TASKS[:2]


class CountingLoader:
    """A DataLoader stand-in that counts how often it is iterated."""

    def __init__(self, loader: DataLoader) -> None:
        self.loader = loader
        self.passes = 0

    def __iter__(self):
        self.passes += 1
        return iter(self.loader)


def _ids(batches) -> list[str]:
    return sorted(i for b in batches for i in b["sample_id"])


def test_memo_returns_the_backbones_features_and_computes_each_input_once():
    model = make_model(TWO)
    backbone = model.backbone.eval().requires_grad_(False)
    x = torch.randn(3, 1, 32, 32)
    expected = backbone.forward_features(x)
    memo = FeatureMemo(backbone).install()
    first = backbone.forward_features(x)
    second = backbone.forward_features(x.clone())  # same values, another tensor
    assert (memo.misses, memo.hits) == (1, 1)
    for a, b, c in zip(expected, first, second, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
        torch.testing.assert_close(a, c, rtol=0, atol=0)
    x2 = x.clone()
    x2[0, 0, 0, 0] += 1e-3  # one pixel differs: computed afresh
    backbone.forward_features(x2)
    assert memo.misses == 2
    keys = set(model.state_dict())
    memo.remove()
    assert set(model.state_dict()) == keys and memo.bytes == 0
    assert backbone.forward_features.__func__ is type(backbone).forward_features


def test_memo_hashes_a_live_tensor_once_and_again_after_an_in_place_change(monkeypatch):
    import umsrep.strategies.replay as replay

    model = make_model(TWO)
    backbone = model.backbone.eval().requires_grad_(False)
    calls = []
    real = replay.tensor_digest
    monkeypatch.setattr(replay, "tensor_digest", lambda t: calls.append(1) or real(t))
    memo = FeatureMemo(backbone).install()
    x = torch.randn(2, 1, 32, 32)
    before = backbone.forward_features(x)[-1]
    backbone.forward_features(x)  # the same tensor, unchanged: its digest is reused
    assert len(calls) == 1 and (memo.misses, memo.hits) == (1, 1)
    x.add_(1.0)  # changed in place: hashed again, and its features are computed afresh
    after = backbone.forward_features(x)[-1]
    assert len(calls) == 2 and memo.misses == 2
    assert not torch.equal(before, after)
    torch.testing.assert_close(after, type(backbone).forward_features(backbone, x)[-1],
                               rtol=0, atol=0)
    del x  # a dead tensor's digest is forgotten with it
    assert not memo._digests
    with torch.inference_mode():  # an inference tensor has no version counter: hashed each time
        y = torch.randn(2, 1, 32, 32)
        backbone.forward_features(y)
        y.add_(1.0)
        torch.testing.assert_close(backbone.forward_features(y)[-1],
                                   type(backbone).forward_features(backbone, y)[-1],
                                   rtol=0, atol=0)
    assert len(calls) == 4 and not memo._digests


@pytest.mark.parametrize("unfrozen", ["train_mode", "requires_grad"])
def test_memo_computes_and_keeps_nothing_when_the_backbone_can_change(unfrozen):
    model = make_model(TWO)
    backbone = model.backbone.eval().requires_grad_(False)
    if unfrozen == "train_mode":
        backbone.train()
    else:
        next(backbone.parameters()).requires_grad_(True)
    memo = FeatureMemo(backbone).install()
    x = torch.randn(2, 1, 32, 32)
    backbone.forward_features(x)
    backbone.forward_features(x)
    assert memo.hits == 0 and memo.bytes == 0


def test_memo_cap_stops_remembering_but_keeps_answering():
    model = make_model(TWO)
    backbone = model.backbone.eval().requires_grad_(False)
    memo = FeatureMemo(backbone, max_mb=0).install()
    x = torch.randn(2, 1, 32, 32)
    a = backbone.forward_features(x)
    b = backbone.forward_features(x)
    assert memo.bytes == 0 and memo.misses == 2
    torch.testing.assert_close(a[-1], b[-1], rtol=0, atol=0)


def test_replay_records_views_then_replays_them_shuffled_without_loading():
    loader = CountingLoader(DataLoader(ToyCxr(12), batch_size=4, shuffle=True))
    replay = BatchReplay(views=2, seed=0)
    views = [[item[0] for item in replay.epoch({0: loader})] for _ in range(2)]
    assert loader.passes == 2
    assert all(_ids(v) == _ids(views[0]) and len(v) == 3 for v in views)
    later = [[item[0] for item in replay.epoch({0: loader})] for _ in range(4)]
    assert loader.passes == 2  # nothing loaded after the recorded views
    for e, batches in enumerate(later, start=2):
        recorded = views[e % 2]
        assert {id(b) for b in batches} == {id(b) for b in recorded}
    orders = {tuple(id(b) for b in batches) for batches in later}
    assert len(orders) > 1, "replayed epochs should not all come in one order"


def test_replay_refuses_zero_views():
    with pytest.raises(ValueError, match="views"):
        BatchReplay(0)


def test_independent_cache_encodes_nothing_after_the_recorded_views():
    model = make_model(TWO)
    strategy = build_strategy("independent", model, TWO, lr=1e-2, cache_views=2)
    loaders = make_loaders(n=(8, 12), batch_size=4, tasks=TWO)
    for _ in range(2):
        run_epoch(strategy, loaders)
    misses = strategy.memo.misses
    assert 5 <= misses <= 2 * 5  # each recorded batch (lung 2, abnormal 3 per view) once
    before = snapshot(model.heads)
    for _ in range(3):
        logs = run_epoch(strategy, loaders)
        assert logs["train/images"] == 8 + 12
    assert strategy.memo.misses == misses and strategy.memo.hits == 3 * 5
    assert changed(before, model.heads)
    strategy.finish()
    assert "forward_features" not in vars(model.backbone)


def _fit(cache_views: int, epochs: int):
    seed_everything(1)
    model = make_model(TWO, seed=1)
    cfg = TrainConfig(epochs=epochs, lr=1e-2, patience=0, plateau_patience=0, precision="fp32",
                      val_every=1)
    strategy = build_strategy("independent", model, TWO, noise_cfg=NOISE,
                              **strategy_options(cfg, "cpu", 1), cache_views=cache_views)
    train = make_loaders(n=(8, 12), tasks=TWO)
    val = {t.name: DataLoader(ToyCxr(4, 7 + i), batch_size=4) for i, t in enumerate(TWO)}
    result = fit(model, strategy, train, val, cfg, seed=1)
    return model, result, strategy


def test_independent_cache_changes_nothing_while_it_records():
    """Up to ``cache_views`` epochs the batches are the loaders' own and every feature is the
    backbone's: the same weights and validation figures as without the cache."""
    plain, a, _ = _fit(cache_views=0, epochs=2)
    cached, b, strategy = _fit(cache_views=3, epochs=2)
    assert [h["val/loss"] for h in a.history] == [h["val/loss"] for h in b.history]
    for (k, v), (k2, w) in zip(plain.state_dict().items(), cached.state_dict().items(),
                               strict=True):
        assert k == k2
        torch.testing.assert_close(v, w, rtol=0, atol=0)
    assert strategy.memo.hits == 2  # the second validation re-used the first's features
    assert "forward_features" not in vars(cached.backbone)  # fit gave the forward back


def test_cache_views_per_task_and_the_stage_minimum():
    from umsrep.strategies.independent import stage_views

    assert stage_views(4, ["lung", "abnormal"]) == 4
    assert stage_views({"abnormal": 4}, ["abnormal"]) == 4
    assert stage_views({"abnormal": 4}, ["lung"]) == 0
    assert stage_views({"abnormal": 4, "lung": 2}, ["lung", "abnormal"]) == 2
    with pytest.raises(ValueError, match="whole numbers"):
        stage_views({"abnormal": -1}, ["abnormal"])
    model = make_model(TWO)
    strategy = build_strategy("independent", model, TWO[:1], cache_views={"abnormal": 3})
    assert strategy.replay is None and strategy.memo is None
    strategy = build_strategy("independent", model, TWO[1:], cache_views={"abnormal": 3})
    assert strategy.replay.views == 3
    strategy.finish()


def test_memo_keeps_only_the_deepest_maps_a_classification_head_reads():
    from umsrep.strategies.independent import deepest_read

    model = make_model(TWO)
    assert deepest_read(model, ["abnormal"]) == 1
    assert deepest_read(model, ["lung"]) is None  # the decoder reads every map
    assert deepest_read(model, ["lung", "abnormal"]) is None
    backbone = model.backbone.eval().requires_grad_(False)
    x = torch.randn(2, 1, 32, 32)
    full = backbone.forward_features(x)
    memo = FeatureMemo(backbone, keep_last=1).install()
    backbone.forward_features(x)
    kept = backbone.forward_features(x)
    assert memo.hits == 1 and kept[:-1] == [None] * (len(full) - 1)
    torch.testing.assert_close(kept[-1], full[-1], rtol=0, atol=0)
    assert memo.bytes == full[-1].numel() * full[-1].element_size()
    head = model.heads["abnormal"].eval()  # no dropout
    torch.testing.assert_close(head(kept, x), head(full, x), rtol=0, atol=0)
    strategy = build_strategy("independent", model, TWO[1:], cache_views=2)  # over the first
    assert strategy.memo.keep_last == 1
    strategy.finish()
    assert backbone.forward_features is memo  # the first memo is back in place
    memo.remove()
    assert "forward_features" not in vars(backbone)


def test_replay_gives_up_past_its_memory_cap_and_loads_each_epoch():
    loader = CountingLoader(DataLoader(ToyCxr(12), batch_size=4, shuffle=True))
    one_batch = batch_bytes(next(iter(loader.loader)))
    loader.passes = 0
    replay = BatchReplay(views=2, seed=0, max_mb=2.5 * one_batch / 2**20)  # 2 of 3 batches fit
    epochs = [[item[0] for item in replay.epoch({0: loader})] for _ in range(4)]
    assert replay.given_up and replay.bytes == 0
    assert loader.passes == 4  # every epoch loaded afresh
    assert all(_ids(e) == _ids(epochs[0]) and len(e) == 3 for e in epochs)
