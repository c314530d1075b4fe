"""The ready experiments in ``sweeps/`` load, validate and plan; bad experiment files are refused.

No training and no data import: loading, path checks and the planner only, so this stays fast.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from sweeps.cli import smoke_overrides
from umsrep.config import ConfigError
from umsrep.experiment import Experiment, load_experiment, read_experiment_file
from umsrep.runner.plan import Plan, backbone_key, build_plan

REPO = Path(__file__).resolve().parents[2]
SWEEPS = REPO / "sweeps"
REAL = REPO / ".." / "shared" / "data" / "real"
ALL_YAML = sorted(SWEEPS.glob("*.yaml"))
PAPER = ["cxr_heterogeneous", "cxr_homogeneous", "echo_heterogeneous", "echo_homogeneous"]


def needs_real_data(path: Path) -> bool:
    """True when the experiment reads a dataset folder or manifest (not only synthetic data)."""
    raw = read_experiment_file(path)
    sources = [s for part in ("pretrain", "train", "test") for s in raw["data"].get(part, [])]
    return any("path" in s or "manifest" in s for s in sources)


def data_root(path: Path) -> Path:
    """The root an experiment's paths are relative to: ``../shared/data`` when they start with
    ``cxr/`` or ``real/`` (cxr_public), else the real sample folder."""
    raw = read_experiment_file(path)
    paths = [s.get("path", "") for part in ("pretrain", "train", "test")
             for s in raw["data"].get(part, [])]
    top = {p.split("/", 1)[0] for p in paths if p}
    return REAL.parent if top and top <= {"cxr", "real"} else REAL


def load(path: Path, **kw) -> Experiment:
    if needs_real_data(path):
        root = data_root(path)
        needed = [root / p for p in ("cxr", "real")] if root == REAL.parent else [REAL]
        if not all(p.is_dir() for p in needed):
            pytest.skip(f"data for {path.name} not found under {root}")
        return load_experiment(path, data_root=root, check_paths=True, **kw)
    return load_experiment(path, check_paths=True, **kw)


def plan_for(exp: Experiment) -> Plan:
    folds = list(range(exp.folds.run or exp.folds.k))
    # a shared pretraining pool is the same for every fold; otherwise each fold pretrains on its
    # own training part
    digests = {f: "pool" if exp.data.pretrain else f"fold{f}" for f in folds}
    return build_plan(exp, folds, digests)


# ----------------------------------------------------------------------------- ready experiments
def test_the_four_paper_scenarios_ship() -> None:
    assert {p.stem for p in ALL_YAML} >= set(PAPER) | {"demo"}


@pytest.mark.parametrize("path", ALL_YAML, ids=lambda p: p.stem)
def test_experiment_loads_and_plans(path: Path) -> None:
    exp = load(path)
    plan = plan_for(exp)
    stages = plan.by_id()
    folds = range(exp.folds.run or exp.folds.k)
    tasks = {t.name for t in exp.tasks}
    assert len(plan.waves()) >= 2  # no cycle, heads after backbones
    for fold in folds:
        mine = [s for s in plan.stages if s.fold == fold]
        backbones = [s for s in mine if s.kind == "backbone"]
        assert len(backbones) == 1, f"fold {fold}: {len(backbones)} backbone stages"
        key = backbones[0].store_key
        # the stage that actually trains this backbone (the first fold with the same key)
        trainer = next(s for s in plan.stages if s.kind == "backbone" and s.store_key == key)
        assert trainer.deps == ()
        heads = [s for s in mine if s.kind == "head"]
        assert {s.strategy for s in heads} == {s.name for s in exp.strategies}
        for head in heads:
            assert head.deps == (trainer.id,), f"{head.id} depends on {head.deps}"
        trained = {t for s in heads if s.strategy == "independent" for t in s.tasks}
        assert trained == tasks
        if exp.baseline.enabled:
            models = {s.tasks[0] for s in mine if s.kind == "baseline" and s.role == "model"}
            assert models == tasks
            for s in mine:
                if s.kind == "baseline":
                    assert set(s.deps) <= set(stages)
    if exp.data.pretrain:  # one pool: the backbone is trained once and reused by later folds
        trainers = [s for s in plan.stages if s.kind == "backbone" and not s.deps]
        assert len(trainers) == 1


@pytest.mark.parametrize("name", PAPER)
def test_paper_scenarios_use_paper_settings(name: str) -> None:
    exp = load_experiment(SWEEPS / f"{name}.yaml", check_paths=False)
    assert exp.data.image_size == 256
    assert exp.folds.k == 10 and exp.folds.run is None
    assert exp.backbone.preset == "paper"
    assert [s.name for s in exp.strategies] == ["independent", "alternating", "joint"]
    assert exp.baseline.enabled
    assert exp.train.optimizer == "adam" and exp.train.batch_size == 16
    space = set(exp.search.space)
    assert {"lr", "dropout", "alternating_ratio"} <= space
    assert any(k.startswith("weight/") for k in space)
    assert 0 < exp.search.num_samples <= 20
    res = exp.resources
    assert res.use_gpu and res.num_workers == 1 and res.gpus_per_worker == 0.5
    if name.startswith("cxr"):
        assert exp.backbone.name == "cdae" and exp.backbone.pretrain == "denoise"
        assert exp.backbone.train.optimizer == "rmsprop" and exp.backbone.train.lr == 1e-3
        assert exp.backbone.train.batch_size == 16
        assert set(exp.backbone.noise.kinds) == {"gaussian", "poisson"}
        assert list(exp.backbone.noise.sigmas) == [10, 20, 30, 40, 50]
    else:
        assert exp.backbone.name == "echo_cnn" and exp.backbone.pretrain == "supervised"
        assert exp.backbone.task == "flow"
        assert exp.backbone.train.epochs == 64 and exp.backbone.train.batch_size == 16
        assert not exp.baseline.denoiser


def test_homogeneous_tasks_split_one_label_column() -> None:
    cxr = load_experiment(SWEEPS / "cxr_homogeneous.yaml", check_paths=False)
    pairs = {frozenset(t.classes) for t in cxr.tasks if t.column == "diagnosis"}
    assert pairs == {
        frozenset(p) for p in [("normal", "bacterial"), ("normal", "viral"), ("bacterial", "viral")]
    }
    echo = load_experiment(SWEEPS / "echo_homogeneous.yaml", check_paths=False)
    pairs = {frozenset(t.classes) for t in echo.tasks if t.classes and len(t.classes) == 2}
    assert pairs == {frozenset(p) for p in [("MV", "MA"), ("MV", "TR"), ("MA", "TR")]}


@pytest.mark.parametrize(
    "pair", [("cxr_heterogeneous", "cxr_homogeneous"), ("echo_heterogeneous", "echo_homogeneous")]
)
def test_scenario_pairs_share_one_stored_backbone(pair: tuple[str, str]) -> None:
    """Same modality, same backbone: one content address, so the store trains it once."""
    a, b = (load_experiment(SWEEPS / f"{n}.yaml", check_paths=False) for n in pair)
    assert a.data.pretrain == b.data.pretrain
    assert backbone_key(a, 0, "pool") == backbone_key(b, 0, "pool")


@pytest.mark.parametrize("path", ALL_YAML, ids=lambda p: p.stem)
def test_smoke_overrides_apply(path: Path) -> None:
    raw = read_experiment_file(path)
    exp = load_experiment(
        path, check_paths=False, overrides=smoke_overrides(int(raw.get("folds", {}).get("k", 10)))
    )
    assert exp.folds.run == 2 and exp.train.epochs == 1
    assert len({s.fold for s in plan_for(exp).stages}) == 2


def test_real_data_paths_resolve_against_data_root() -> None:
    if not REAL.is_dir():
        pytest.skip(f"real sample data not found at {REAL}")
    for name in ("cxr_heterogeneous", "cxr_homogeneous"):
        exp = load_experiment(SWEEPS / f"{name}.yaml", data_root=REAL)
        assert Path(exp.data.root) == REAL.resolve()
    with pytest.raises(ConfigError) as err:  # no --data-root: relative paths do not exist here
        load_experiment(SWEEPS / "cxr_heterogeneous.yaml")
    assert err.value.key == "data.pretrain[0].path"


# ----------------------------------------------------------------------------- refused files
def base_config() -> dict:
    return yaml.safe_load((SWEEPS / "echo_heterogeneous.yaml").read_text())


def refused(data: dict, **kw) -> ConfigError:
    with pytest.raises(ConfigError) as err:
        load_experiment(data=data, **kw)
    return err.value


def test_base_config_is_accepted() -> None:
    assert load_experiment(data=base_config()).name == "echo_heterogeneous"


def test_unknown_key_is_named() -> None:
    data = base_config()
    data["tasks"][0]["colour"] = "red"
    err = refused(data)
    assert err.key == "tasks[0].colour"
    assert "unknown key" in str(err)


def test_wrong_type_is_named() -> None:
    data = base_config()
    data["folds"]["k"] = "ten"
    err = refused(data)
    assert err.key == "folds.k"
    assert "integer" in str(err)


def test_supervised_pretraining_on_a_missing_task_is_refused() -> None:
    data = base_config()
    data["backbone"]["task"] = "heart_rate"
    err = refused(data)
    assert err.key == "backbone.task"
    assert "envelope" in err.reason  # the tasks it could use


def test_segmentation_task_with_a_classification_head_is_refused() -> None:
    data = base_config()
    assert data["tasks"][0]["kind"] == "segmentation"
    data["tasks"][0]["head"] = "classification"
    err = refused(data)
    assert err.key == "tasks[0].head"


def test_missing_data_path_without_data_root_asks_for_it() -> None:
    data = base_config()
    data["data"]["test"] = [{"importer": "generic", "path": "doppler/test.csv"}]
    err = refused(data)
    assert err.key == "data.test[0].path"
    assert "--data-root" in err.reason


def test_missing_data_path_under_data_root_names_the_path(tmp_path: Path) -> None:
    data = base_config()
    data["data"]["train"] = [{"manifest": "doppler/manifest.parquet"}]
    err = refused(data, data_root=tmp_path)
    assert err.key == "data.train[0].manifest"
    assert str(tmp_path.resolve() / "doppler" / "manifest.parquet") in err.reason
    assert "--data-root" not in err.reason
    (tmp_path / "doppler").mkdir()
    (tmp_path / "doppler" / "manifest.parquet").touch()
    assert load_experiment(data=data, data_root=tmp_path).data.root == str(tmp_path.resolve())


@pytest.mark.parametrize("name", PAPER)
def test_paper_scenario_models_build_and_run(name: str) -> None:
    """Each task's head (with its head_kwargs) fits the scenario's backbone at the paper preset."""
    import torch

    from umsrep.models import MultiTaskModel, build_backbone, build_head

    exp = load_experiment(SWEEPS / f"{name}.yaml", check_paths=False)
    bb = build_backbone(exp.backbone.name, preset=exp.backbone.preset, **exp.backbone.kwargs)
    heads = {
        t.name: build_head(
            t.head,
            bb,
            preset=exp.backbone.preset,
            num_classes=len(t.classes or ("0", "1")) if t.kind == "classification" else None,
            **t.head_kwargs,
        )
        for t in exp.tasks
    }
    model = MultiTaskModel(bb, heads).eval()
    with torch.no_grad():
        out = model(torch.zeros(2, 1, 32, 32))
    for t in exp.tasks:
        want = (2, len(t.classes or ("0", "1"))) if t.kind == "classification" else (2, 1, 32, 32)
        assert tuple(out[t.name].shape) == want, t.name


def test_set_options_are_yaml_values_applied_as_overrides() -> None:
    from umsrep.config import parse_set_options

    sets = parse_set_options(["search.num_samples=8", "evaluation.tta=[pad, stretch]",
                              "data.fit=pad", "resources.pack=false", "train.lr=1e-4"])
    assert sets == {"search.num_samples": 8, "evaluation.tta": ["pad", "stretch"],
                    "data.fit": "pad", "resources.pack": False, "train.lr": 1e-4}
    exp = load_experiment(data=base_config(), overrides=sets)
    assert exp.search.num_samples == 8 and exp.evaluation.tta == ["pad", "stretch"]
    assert exp.data.fit == "pad" and exp.resources.pack is False
    with pytest.raises(ConfigError, match="KEY=VALUE"):
        parse_set_options(["search.num_samples"])
    err = refused(base_config(), overrides=parse_set_options(["data.fit=crop"]))
    assert err.key == "data.fit"
    err = refused(base_config(), overrides={"name.x": 1})
    assert err.key == "name" and "not a section" in str(err)


def test_robust_augmentation_and_keep_largest_load_and_reach_the_clean_up() -> None:
    from umsrep.runner.context import mask_cleanup

    sets = {"data.augment": "cxr_robust", "evaluation.keep_largest": 2,
            "evaluation.fill_holes": True}
    exp = load_experiment(data=base_config(), overrides=sets)
    assert exp.data.augment == "cxr_robust" and exp.evaluation.keep_largest == 2
    assert mask_cleanup(exp) == {"min_fraction": 0.0, "fill_holes": True, "keep_largest": 2}
    plain = load_experiment(data=base_config(), overrides={"evaluation.fill_holes": True})
    assert mask_cleanup(plain) == {"min_fraction": 0.0, "fill_holes": True}  # as before
    assert mask_cleanup(load_experiment(data=base_config())) is None
    err = refused(base_config(), overrides={"evaluation.keep_largest": -1})
    assert err.key == "evaluation.keep_largest"
    err = refused(base_config(), overrides={"data.augment": "cxr_flip"})
    assert err.key == "data.augment"


def test_trial_resources_reach_the_tune_trials_and_cpu_is_refused_there() -> None:
    from sweeps.driver import RayDriver

    sets = {"resources.trial_resources": {"umsrep_driver": 0.01}, "resources.cpus_per_trial": 0.5}
    exp = load_experiment(data=base_config(), overrides=sets)
    driver = RayDriver.__new__(RayDriver)  # no run folder needed for what a trial asks for
    driver.exp = exp
    assert driver.trial_resources() == {"cpu": 0.5, "umsrep_driver": 0.01}
    err = refused(base_config(), overrides={"resources.trial_resources": {"CPU": 1}})
    assert err.key == "resources.trial_resources.CPU" and "cpus_per_trial" in str(err)
    err = refused(base_config(), overrides={"resources.trial_resources": {"head": 0}})
    assert err.key == "resources.trial_resources.head"


@pytest.mark.parametrize("uri", ["s3://bucket/runs", "gs://bucket/runs"])
def test_object_store_output_is_refused_at_start(uri: str) -> None:
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-m", "umsrep", "sweep", str(SWEEPS / "demo.yaml"),
                           "--output", uri], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert "is not supported for run folders; mount it" in proc.stderr
    assert "Traceback" not in proc.stderr


# ----------------------------------------------------------------------------- registry names
@pytest.mark.parametrize(
    ("where", "value", "key", "bad", "suggestion"),
    [
        (("tasks", 0, "head"), "seg_ecoh", "tasks[0].head", "seg_ecoh", "seg_echo"),
        (("tasks", 1, "loss"), "cross_entropi", "tasks[1].loss", "cross_entropi", "cross_entropy"),
        (("tasks", 1, "head_kwargs"), {"dropuot": 0.2}, "tasks[1].head_kwargs.dropuot",
         "dropuot", "dropout"),
        (("tasks", 1, "loss_kwargs"), {"label_smothing": 0.1}, "tasks[1].loss_kwargs.label_smothing",
         "label_smothing", "label_smoothing"),
        (("strategies", 1, "name"), "alternatnig", "strategies[1].name", "alternatnig",
         "alternating"),
        (("strategies", 2, "options"), {"weighting": "gradnrom"},
         "strategies[2].options.weighting", "gradnrom", "gradnorm"),
        (("strategies", 2, "options"), {"weighting": "gradnorm", "alpah": 1.0},
         "strategies[2].options.alpah", "alpah", "alpha"),
        (("strategies", 1, "options"), {"ratio": {"envelope": 1}},
         "strategies[1].options.ratio", "ratio", "ratios"),
        (("backbone", "name"), "echo_cn", "backbone.name", "echo_cn", "echo_cnn"),
        (("backbone", "kwargs"), {"dilation": [1, 1, 1, 2, 2, 2]}, "backbone.kwargs.dilation",
         "dilation", "dilations"),
        (("backbone", "preset"), "papper", "backbone.preset", "papper", "paper"),
    ],
    ids=["head", "loss", "head_kwargs", "loss_kwargs", "strategy", "weighting", "joint option",
         "alternating option", "backbone", "backbone kwargs", "preset"],
)
def test_a_mistyped_name_or_option_is_refused_with_the_closest_one(where, value, key, bad,
                                                                   suggestion) -> None:
    data = base_config()
    node = data
    for part in where[:-1]:
        node = node[part]
    node[where[-1]] = value
    err = refused(data, check_paths=False)
    assert err.key == key
    assert repr(bad) in err.reason
    assert f"did you mean {suggestion!r}?" in err.reason


@pytest.mark.parametrize(("value", "reason"), [(1.5, "[0, 1]"), (-0.1, ">= 0"),
                                             ("0.1", ">= 0"), (True, ">= 0")])
def test_a_loss_option_out_of_range_is_refused_at_load(value, reason) -> None:
    data = base_config()
    data["tasks"][1]["loss_kwargs"] = {"label_smoothing": value}
    err = refused(data, check_paths=False)
    assert err.key == "tasks[1].loss_kwargs.label_smoothing"
    assert reason in err.reason and repr(value) in err.reason
    data["tasks"][1]["loss_kwargs"] = {"label_smoothing": 1}
    assert load_experiment(data=data, check_paths=False).tasks[1].loss_kwargs == {"label_smoothing": 1}


def test_a_head_typo_in_a_file_names_the_file_key_value_and_fix(tmp_path: Path) -> None:
    data = base_config()
    data["tasks"][0]["head"] = "seg_cdea"
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(ConfigError) as err:
        load_experiment(path, check_paths=False)
    assert str(err.value).startswith(
        f"{path}: tasks[0].head: unknown head 'seg_cdea'; did you mean 'seg_cdae'? (known: ")


def test_joint_weights_must_name_configured_tasks() -> None:
    data = base_config()
    data["strategies"][2]["options"]["weights"]["envelop"] = 2.0
    err = refused(data, check_paths=False)
    assert err.key == "strategies[2].options.weights.envelop"
    assert "did you mean 'envelope'?" in err.reason


def test_an_option_of_another_weighting_is_refused() -> None:
    data = base_config()
    data["strategies"][2]["options"] = {"weighting": "uncertainty", "weights": {"flow": 2.0}}
    err = refused(data, check_paths=False)
    assert err.key == "strategies[2].options.weights"
    assert "'fixed'" in err.reason and "'uncertainty'" in err.reason


def test_options_the_runner_sets_are_refused_naming_where_they_are_set() -> None:
    data = base_config()
    data["strategies"][1]["options"] = {"lr": 0.1}
    err = refused(data, check_paths=False)
    assert err.key == "strategies[1].options.lr" and "train.lr" in err.reason
    data = base_config()
    data["tasks"][1]["head_kwargs"]["num_classes"] = 4
    err = refused(data, check_paths=False)
    assert err.key == "tasks[1].head_kwargs.num_classes"


def test_alternating_ratios_need_a_positive_count_for_every_task() -> None:
    data = base_config()
    data["strategies"][1]["options"] = {"ratios": {"envelope": 2, "quality": 1}}
    err = refused(data, check_paths=False)
    assert err.key == "strategies[1].options.ratios" and "flow" in err.reason
    data["strategies"][1]["options"] = {"ratios": {"envelope": 2, "quality": 1, "flow": 0}}
    assert refused(data, check_paths=False).key == "strategies[1].options.ratios.flow"
    data["strategies"][1]["options"] = {"ratios": {"envelope": 2, "quality": 1, "flow": 1}}
    assert load_experiment(data=data, check_paths=False).strategies[1].options["ratios"]


def test_cache_views_name_configured_tasks_and_whole_numbers() -> None:
    """A mistyped task would silently switch the cache off; a bool would read as 1 view."""
    data = base_config()
    data["strategies"][0]["options"] = {"cache_views": {"qualty": 4}}
    err = refused(data, check_paths=False)
    assert err.key == "strategies[0].options.cache_views.qualty" and "quality" in err.reason
    for bad, key in (({"quality": True}, ".quality"), ({"quality": 2.5}, ".quality"),
                     (-1, ""), (True, "")):
        data["strategies"][0]["options"] = {"cache_views": bad}
        assert refused(data, check_paths=False).key == "strategies[0].options.cache_views" + key
    data["strategies"][0]["options"] = {"cache_views": {"quality": 4, "flow": 0}}
    assert load_experiment(data=data, check_paths=False).strategies[0].options["cache_views"]


def test_loading_imports_neither_torch_nor_ray() -> None:
    """The check reads umsrep/catalog.py, so a bad file is refused before the heavy imports."""
    import subprocess
    import sys

    code = ("import sys; from umsrep.experiment import load_experiment; "
            "load_experiment('sweeps/demo.yaml'); "
            "print(sorted(m for m in ('torch', 'ray', 'pandas') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


# ----------------------------------------------------------------------------- base: files
def write(path: Path, data: dict) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def test_a_file_builds_on_its_base(tmp_path: Path) -> None:
    base = base_config()
    base["paper_reference"] = {"flow": {"joint": {"accuracy": 0.9}}}
    write(tmp_path / "scenarios" / "echo.yaml", base)
    child = write(tmp_path / "variant.yaml", {
        "name": "variant",
        "base": "scenarios/echo.yaml",  # relative to the including file
        "folds": {"k": 4},  # mappings merge: folds.seed and val_fraction stay the base's
        "data": {"test": []},  # a list is replaced whole: [] clears it
        "backbone": {"train": {"epochs": 3}, "task": "quality"},
        "strategies": [{"name": "independent"}, {"name": "alternating"},
                       {"name": "joint", "options": {"weighting": "uncertainty"}}],
    })
    want = load_experiment(data=base)
    got = load_experiment(child)
    assert got.name == "variant"
    assert got.folds.k == 4 and got.folds.val_fraction == want.folds.val_fraction
    assert got.data.test == [] and got.data.train == want.data.train
    assert got.backbone.train.epochs == 3 and got.backbone.task == "quality"
    assert got.backbone.train.batch_size == want.backbone.train.batch_size
    assert got.strategies[2].options == {"weighting": "uncertainty"}  # not merged: replaced
    assert got.tasks == want.tasks and got.baseline == want.baseline
    assert got.paper_reference == {}  # published figures belong to the file that writes them


def test_a_base_setting_can_be_dropped_and_name_must_be_written(tmp_path: Path) -> None:
    base = base_config()
    base["folds"]["run"] = 2
    write(tmp_path / "echo.yaml", base)
    child = write(tmp_path / "child.yaml", {"name": "child", "base": "echo.yaml",
                                            "folds": {"run": None}})
    assert load_experiment(child).folds.run is None  # null: the default applies again
    nameless = write(tmp_path / "nameless.yaml", {"base": "echo.yaml"})
    with pytest.raises(ConfigError) as err:
        load_experiment(nameless)
    assert err.value.key == "name" and err.value.file == str(nameless)


def test_files_that_include_each_other_are_refused(tmp_path: Path) -> None:
    write(tmp_path / "a.yaml", {**base_config(), "base": "b.yaml"})
    write(tmp_path / "b.yaml", {"name": "b", "base": "c.yaml"})
    write(tmp_path / "c.yaml", {"name": "c", "base": "a.yaml"})
    with pytest.raises(ConfigError) as err:
        load_experiment(tmp_path / "a.yaml")
    assert err.value.key == "base"
    assert "a.yaml -> b.yaml -> c.yaml -> a.yaml" in err.value.reason
    write(tmp_path / "self.yaml", {"name": "self", "base": "self.yaml"})
    assert refused_file(tmp_path / "self.yaml").key == "base"


def test_a_missing_base_and_bad_yaml_name_their_file(tmp_path: Path) -> None:
    child = write(tmp_path / "child.yaml", {"name": "c", "base": "nowhere.yaml"})
    err = refused_file(child)
    assert err.file == str(child) and err.key == "base" and "nowhere.yaml" in err.reason
    broken = tmp_path / "broken.yaml"
    broken.write_text("name: x\ntasks: [\n")
    write(tmp_path / "on_broken.yaml", {"name": "y", "base": "broken.yaml"})
    err = refused_file(tmp_path / "on_broken.yaml")
    assert err.file == str(broken) and "not valid YAML" in err.reason


def refused_file(path: Path) -> ConfigError:
    with pytest.raises(ConfigError) as err:
        load_experiment(path, check_paths=False)
    return err.value


def test_jsrt_organs_builds_on_cxr_public() -> None:
    """One backbone block by construction: jsrt_organs inherits cxr_public's and overrides the
    rest (its own data, no external test set, no published figures of cxr_public's tasks)."""
    raw = yaml.safe_load((SWEEPS / "jsrt_organs.yaml").read_text())
    assert raw["base"] == "cxr_public.yaml" and "backbone" not in raw
    organs, public = (load_experiment(SWEEPS / f"{n}.yaml", check_paths=False)
                      for n in ("jsrt_organs", "cxr_public"))
    assert organs.backbone == public.backbone and organs.data.pretrain == public.data.pretrain
    assert backbone_key(organs, 0, "pool") == backbone_key(public, 0, "pool")
    assert organs.data.test == [] and organs.paper_reference == {}
    assert [t.name for t in organs.tasks] == ["lung", "heart", "clavicle", "nodule"]
    assert organs.evaluation.keep_largest == 0 and organs.folds.k == 5
