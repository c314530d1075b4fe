from __future__ import annotations

import pytest

from umsrep.config import ConfigError
from umsrep.experiment import load_experiment
from umsrep.runner.plan import build_plan


def test_backbone_once_per_fold_and_heads_depend_on_it(tiny_config):
    exp = load_experiment(data=tiny_config)
    plan = build_plan(exp, [0, 1], {0: "pool-a", 1: "pool-b"})
    ids = plan.by_id()
    backbones = [s for s in plan.stages if s.kind == "backbone"]
    assert [s.fold for s in backbones] == [0, 1]
    assert backbones[0].store_key != backbones[1].store_key
    for stage in plan.stages:
        if stage.kind == "head":
            assert stage.deps == (f"f{stage.fold}-backbone",)
    # independent heads are separate stages (they run in parallel); the others are multi-task
    assert {s.id for s in plan.stages if s.strategy == "independent"} == {
        "f0-independent-lung", "f0-independent-abnormal",
        "f1-independent-lung", "f1-independent-abnormal"}
    assert ids["f0-joint"].tasks == ("lung", "abnormal")
    # baseline models are fed by the separate denoiser
    assert ids["f0-baseline-lung"].deps == ("f0-backbone",)
    waves = plan.waves()
    assert {s.id for s in waves[0]} == {"f0-backbone", "f1-backbone"}


def test_independent_heads_in_one_stage(tiny_config):
    tiny_config["strategies"][0]["options"] = {"one_stage": True}
    plan = build_plan(load_experiment(data=tiny_config), [0], {0: "pool"})
    ind = [s for s in plan.stages if s.strategy == "independent"]
    assert [(s.id, s.tasks) for s in ind] == [("f0-independent", ("lung", "abnormal"))]


def test_shared_pretraining_pool_trains_one_backbone(tiny_config):
    exp = load_experiment(data=tiny_config)
    plan = build_plan(exp, [0, 1, 2], {0: "pool", 1: "pool", 2: "pool"})
    backbones = [s for s in plan.stages if s.kind == "backbone"]
    assert len({s.store_key for s in backbones}) == 1
    # later folds reuse the first fold's backbone: they wait for it, their heads too
    assert backbones[1].deps == ("f0-backbone",)
    assert plan.by_id()["f2-joint"].deps == ("f0-backbone",)
    # the baseline's separate denoiser is the same network on the same images: same key
    assert plan.by_id()["f1-baseline-denoise"].store_key == backbones[0].store_key


def test_backbone_key_follows_what_pretraining_sees(tiny_config):
    """Fit and augmentation change the pretraining images: a stored backbone trained with other
    ones must not be reused; the defaults leave the keys of earlier runs unchanged.

    The keys are pinned literals. The key is the content address of users' backbone stores:
    when it changes, every stored backbone is trained again. Update these literals only for a
    change that must retrain (what pretraining sees changed), never for a refactor, and say so
    in the change's notes."""
    from umsrep.runner.plan import backbone_key

    def key(backbone_train: dict | None = None, noise: dict | None = None, **data) -> str:
        bb = tiny_config["backbone"]
        cfg = {**tiny_config, "data": {**tiny_config["data"], **data},
               "backbone": {**bb, "train": {**bb["train"], **(backbone_train or {})},
                            "noise": {**bb.get("noise", {}), **(noise or {})}}}
        return backbone_key(load_experiment(data=cfg), 0, "pool")

    plain = "18a256244a6a704c"  # tests/runner/conftest.py TINY, pool digest "pool"
    assert key() == plain
    # the defaults (fit stretch, augment none; later: checkpoint best, monitor loss) add nothing
    assert key(fit="stretch", augment="none") == plain
    assert key({"checkpoint": "best", "monitor": "loss", "schedule": "plateau"}) == plain
    assert key({"schedule": "cosine"}) != plain
    # masked blocks (added later): off by default, and then no part of the key
    assert key(noise={"mask": 0.0, "mask_block": 16}) == key(noise={"mask_block": 8}) == plain
    assert len({plain, key(noise={"mask": 0.3}), key(noise={"mask": 0.3, "mask_block": 8})}) == 3
    assert key(fit="pad") == "5c95faacf5c91681"
    # AUGMENT_VERSION 2 (the warp on half of the images): was 92b0b287eaf57f2f, fd7794fd624c0439
    assert key(augment="cxr") == "23ccfeb2d749a9b4"
    assert key(fit="pad", augment="cxr") == "0f6cd05330604152"
    assert len({key(augment=a) for a in ("cxr", "cxr_robust", "cxr_robust_sharpness")}) == 3
    assert key({"checkpoint": "last"}) == "d806d335e3f10aa5"
    # where the cache lives is no part of what was trained
    assert key(cache_dir="/somewhere/else") == plain


@pytest.mark.parametrize(
    ("path", "value", "key"),
    [
        ("tasks.0.colour", "red", "tasks[0].colour"),
        ("folds.k", "ten", "folds.k"),
        ("backbone.pretrain", "magic", "backbone.pretrain"),
        ("search.space", {"learning_rate": {"type": "uniform", "low": 0, "high": 1}},
         "search.space.learning_rate"),
        ("strategies", [{"name": "joint"}, {"name": "joint"}], "strategies"),
        ("backbone.noise.mask", 1.0, "backbone.noise.mask"),
        ("backbone.noise.mask_block", 0, "backbone.noise.mask_block"),
    ],
)
def test_bad_experiment_is_refused_naming_the_key(tiny_config, path, value, key):
    node = tiny_config
    *parents, leaf = path.split(".")
    for p in parents:
        node = node[int(p)] if p.isdigit() else node.setdefault(p, {})
    node[leaf] = value
    with pytest.raises(ConfigError) as err:
        load_experiment(data=tiny_config)
    assert err.value.key == key


def test_impossible_combinations_are_refused(tiny_config):
    tiny_config["backbone"]["pretrain"] = "supervised"
    tiny_config["backbone"]["task"] = "nope"
    with pytest.raises(ConfigError, match="backbone.task"):
        load_experiment(data=tiny_config)


def test_missing_data_path_is_refused(tiny_config, tmp_path):
    tiny_config["data"]["train"] = [{"importer": "shenzhen", "path": "ChinaSet_AllFiles"}]
    with pytest.raises(ConfigError, match=r"data.train\[0\].path.*--data-root"):
        load_experiment(data=tiny_config)
    with pytest.raises(ConfigError, match=r"data.train\[0\].path"):
        load_experiment(data=tiny_config, data_root=tmp_path)


def test_a_stored_import_whose_merged_masks_are_gone_is_imported_again(tmp_path):
    import pandas as pd

    from umsrep.runner.data import _derived_files_missing

    out = tmp_path / "imports" / "montgomery-abc.parquet"
    derived = tmp_path / "imports" / "montgomery-abc.masks"
    derived.mkdir(parents=True)
    merged = derived / "MCUCXR_0001_0_mask.png"
    pd.DataFrame({"sample_id": ["a", "b"], "mask_path": [str(merged), None],
                  "mask_heart_path": [None, str(tmp_path / "elsewhere" / "h.png")]}
                 ).to_parquet(out)
    assert _derived_files_missing(out)  # the cache folder was moved: the merged mask is gone
    merged.write_bytes(b"png")
    # present now; a missing file outside the import's own folder is the dataset's business
    assert not _derived_files_missing(out)


def test_umsrep_train_says_what_it_will_not_do(tiny_config):
    """A sweep file run by ``umsrep train``: the search and MLflow it skips are said, not
    silently dropped; a plain file says nothing."""
    from umsrep.runner.cli import ignored_settings

    assert ignored_settings(load_experiment(data=tiny_config)) == []
    tiny_config["search"] = {"num_samples": 4, "space": {"lr": {"type": "loguniform",
                                                                  "low": 1e-4, "high": 1e-2}}}
    tiny_config["tracking"] = {"mlflow": "file:./mlruns"}
    lines = ignored_settings(load_experiment(data=tiny_config))
    assert len(lines) == 2
    assert "search.num_samples is 4" in lines[0] and "umsrep sweep" in lines[0]
    assert "file:./mlruns" in lines[1]
