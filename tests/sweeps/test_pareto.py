"""The configuration a multi-objective sweep keeps (sweeps/pareto.py), and the objectives an
experiment file may name (checked when it is loaded)."""

from __future__ import annotations

import copy

import numpy as np
import pandas as pd
import pytest

from sweeps.pareto import pareto_choice, pareto_front
from tests.runner.conftest import TINY
from umsrep.config import ConfigError
from umsrep.experiment import load_experiment


def test_the_front_is_every_trial_no_other_beats():
    values = np.array([[0.9, 0.1], [0.8, 0.3], [0.7, 0.2], [0.9, 0.1], [0.5, 0.5]])
    # row 2 is beaten by row 1 on both; rows 0 and 3 tie (neither beats the other)
    assert pareto_front(values) == [0, 1, 3, 4]


def test_the_kept_trial_has_the_best_rank_sum_on_the_front():
    # dice (max), loss (min): trial 0 best dice, worst loss; trial 1 second on both
    values = pd.DataFrame({"val/lung/dice": [0.95, 0.94, 0.90, 0.93],
                           "val/loss": [0.60, 0.20, 0.10, 0.30]})
    chosen, front = pareto_choice(values, ["max", "min"])
    assert front == [0, 1, 2]  # trial 3 is beaten by trial 1 on both
    # ranks: trial 0 1 + 4 = 5, trial 1 2 + 2 = 4, trial 2 4 + 1 = 5
    assert chosen == 1


def test_ties_go_to_the_first_objective_then_the_earlier_trial():
    values = pd.DataFrame({"a": [0.8, 0.9, 0.7], "b": [0.9, 0.8, 1.0]})
    # rank sums: trial 0 2 + 2, trial 1 1 + 3, trial 2 3 + 1: all 4; trial 1 leads on a
    assert pareto_choice(values, ["max", "max"]) == (1, [0, 1, 2])
    same = pd.DataFrame({"a": [0.5, 0.5], "b": [0.5, 0.5]})
    assert pareto_choice(same, ["max", "min"]) == (0, [0, 1])


def test_a_trial_without_every_value_takes_no_part():
    values = pd.DataFrame({"a": [np.nan, 0.5, 0.4], "b": [9.0, 0.5, 0.4]})
    chosen, front = pareto_choice(values, ["max", "max"])
    assert (chosen, front) == (1, [1])
    with pytest.raises(ValueError, match="no trial reported every objective"):
        pareto_choice(values.iloc[:1], ["max", "max"])
    with pytest.raises(ValueError, match="2 objectives but 1 modes"):
        pareto_choice(values, ["max"])


@pytest.fixture
def config() -> dict:
    cfg = copy.deepcopy(TINY)
    cfg["strategies"] = [{"name": "joint"}]
    cfg["search"] = {"num_samples": 2, "scheduler": "none", "applies_to": ["joint"],
                     "space": {"lr": {"type": "loguniform", "low": 1e-4, "high": 1e-2}}}
    return cfg


def _search(cfg: dict, **search) -> dict:
    return {**cfg, "search": {**cfg["search"], **search}}


def test_objectives_every_stage_reports_are_accepted(config):
    exp = load_experiment(data=_search(config, objectives=["val/lung/dice", "val/abnormal/auc",
                                                           "val/loss/lung", "val_score"],
                                       modes=["max", "max", "min", "max"]))
    assert exp.search.objective_modes() == (
        ["val/lung/dice", "val/abnormal/auc", "val/loss/lung", "val_score"],
        ["max", "max", "min", "max"])
    plain = load_experiment(data=config)
    assert plain.search.objective_modes() == (["val_score"], ["max"])


@pytest.mark.parametrize("search, message", [
    ({"objectives": ["val/lung/auc"]}, "lung \\(segmentation\\) reports iou, dice"),
    ({"metric": "val/lungs/dice"}, "not reported by a stage"),
    ({"objectives": ["val_score", "val/loss"], "modes": ["max"]}, "one mode per objective"),
    ({"objectives": ["val_score", "val/loss"], "modes": ["max", "min"], "scheduler": "asha"},
     "ASHA stops trials on one metric"),
    ({"objectives": []}, "at least one metric"),
])
def test_objectives_a_stage_does_not_report_are_refused_at_load(config, search, message):
    with pytest.raises(ConfigError, match=message):
        load_experiment(data=_search(config, **search))


def test_a_task_metric_is_refused_where_stages_train_one_task_each(config):
    cfg = {**config, "strategies": [{"name": "independent"}, {"name": "joint"}]}
    with pytest.raises(ConfigError, match="independent train\\(s\\) one task per stage"):
        load_experiment(data=_search(cfg, applies_to=None, metric="val/lung/dice"))
    load_experiment(data=_search(cfg, applies_to=["joint"], metric="val/lung/dice"))
    load_experiment(data=_search(cfg, applies_to=None, metric="val/loss"))
    one_stage = {**cfg, "strategies": [{"name": "independent", "options": {"one_stage": True}}]}
    load_experiment(data=_search(one_stage, applies_to=None, metric="val/lung/dice"))
