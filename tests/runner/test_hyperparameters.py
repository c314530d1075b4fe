"""A sweep's hyperparameters become the experiment a stage reads (apply_hyperparameters)."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import pytest

from umsrep.experiment import load_experiment
from umsrep.runner.context import StageContext, backbone_store_key, with_hyperparameters
from umsrep.runner.hyperparameters import apply_hyperparameters
from umsrep.runner.plan import Stage


@pytest.fixture
def exp():
    from tests.runner.conftest import TINY

    return load_experiment(data=json.loads(json.dumps(TINY)), check_paths=False)


def test_training_settings_dropout_and_noise_replace_the_typed_config(exp):
    tuned = apply_hyperparameters(exp, {"lr": "0.01", "batch_size": 8.0, "epochs": 3,
                                        "dropout": 0.3, "noise_sigma_max": 25, "ema": "0.99"})
    assert (tuned.train.lr, tuned.train.batch_size, tuned.train.epochs) == (0.01, 8, 3)
    assert tuned.train.ema == 0.99
    assert tuned.train.patience == exp.train.patience
    assert tuned.backbone.train == exp.backbone.train  # part of the backbone's store key
    assert tuned.task("abnormal").head_kwargs == {"dropout": 0.3}
    assert tuned.task("lung").head_kwargs == {"skips": True}  # not a classification head
    assert tuned.backbone.noise.sigmas == [10.0, 20.0]
    assert apply_hyperparameters(exp, {"noise_sigma_max": 5}).backbone.noise.sigmas == [10.0]
    assert apply_hyperparameters(exp, {}) is exp


def test_loss_weights_and_ratio_go_to_their_strategy(exp):
    tuned = apply_hyperparameters(exp, {"weight/lung": 2, "alternating_ratio": 3})
    options = {s.name: s.options for s in tuned.strategies}
    assert options["joint"] == {"weights": {"lung": 2.0, "abnormal": 1.0}}
    assert options["alternating"] == {"ratios": {"lung": 3.0, "abnormal": 1.0}}
    assert options["independent"] == {}


def test_an_unknown_hyperparameter_is_refused(exp):
    with pytest.raises(ValueError, match="'lr_max'"):
        apply_hyperparameters(exp, {"lr_max": 1.0})


def test_a_tuned_noise_range_still_loads_the_planned_backbone(exp):
    index = pd.DataFrame({"abnormal": ["0", "1"], "has_mask": [True, False]})
    data = SimpleNamespace(index=index, pool_digest=lambda fold, columns=(): f"pool{fold}")
    ctx = StageContext(exp=exp, data=data, run_dir=Path("."), store_dir=Path("."))
    stage = Stage(id="f0-joint", fold=0, kind="head", strategy="joint", tasks=("lung",))
    planned = backbone_store_key(StageContext(exp=exp, data=data, run_dir=Path("."),
                                              store_dir=Path(".")), 0)
    tuned = with_hyperparameters(ctx, stage, {"noise_sigma_max": 20, "dropout": 0.2})
    assert tuned.exp.backbone.noise.sigmas == [10.0, 20.0]
    assert tuned.tasks["abnormal"].head_kwargs == {"dropout": 0.2}
    assert backbone_store_key(tuned, 0) == planned
    assert ctx.exp is exp  # the untuned context is left as it was


def test_a_strategy_has_its_own_training_settings_and_a_tuned_value_wins(exp):
    from dataclasses import replace

    from tests.runner.conftest import TINY
    from umsrep.config import ConfigError
    from umsrep.experiment import StrategyConfig, load_experiment

    cfg = json.loads(json.dumps(TINY))
    cfg["strategies"][0]["train"] = {"epochs": 5, "lr": 0.01}
    own = load_experiment(data=cfg, check_paths=False)
    ind = own.train_for("independent")
    assert (ind.epochs, ind.lr, ind.batch_size) == (5, 0.01, own.train.batch_size)
    assert own.train_for("joint") is own.train and own.train_for("baseline") is own.train
    tuned = apply_hyperparameters(own, {"lr": 0.003})
    assert (tuned.train_for("independent").lr, tuned.train_for("independent").epochs) == (0.003, 5)
    cfg["strategies"][0]["train"] = {"epoch": 5}
    with pytest.raises(ConfigError, match=r"strategies\[0\]\.train\.epoch\b.*unknown key"):
        load_experiment(data=cfg, check_paths=False)
    cfg["strategies"][0]["train"] = {"score_tasks": ["lungs"]}
    with pytest.raises(ConfigError, match=r"strategies\[0\]\.train\.score_tasks"):
        load_experiment(data=cfg, check_paths=False)
    assert replace(exp, strategies=[StrategyConfig("joint")]).train_for("joint") is exp.train


def test_a_searched_weight_average_decay_must_lie_below_one():
    from tests.runner.conftest import TINY
    from umsrep.config import ConfigError

    cfg = json.loads(json.dumps(TINY))
    cfg["search"] = {"num_samples": 2, "space": {"ema": {"type": "uniform", "low": 0.9,
                                                         "high": 1.0}}}
    with pytest.raises(ConfigError, match="search.space.ema"):
        load_experiment(data=cfg, check_paths=False)
    cfg["search"]["space"]["ema"] = {"type": "choice", "values": [0.0, 0.99]}
    assert load_experiment(data=cfg, check_paths=False).search.space["ema"].values == [0.0, 0.99]
