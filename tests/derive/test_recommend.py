"""Recommendation rules: truth tables, lists, score thresholds, chaining and strict config."""

from __future__ import annotations

import pandas as pd
import pytest

from umsrep.derive import Rule, apply_rules, load_rules

ANALYSE = {
    "name": "analyse",
    "when": {"flow": "TR", "quality": "good"},
    "then": "analyse",
    "else": "reacquire",
}


@pytest.mark.parametrize(
    ("flow", "quality", "expected"),
    [
        ("TR", "good", "analyse"),
        ("TR", "poor", "reacquire"),
        ("MV", "good", "reacquire"),
        ("MA", "poor", "reacquire"),
    ],
)
def test_paper_rule_truth_table(flow: str, quality: str, expected: str) -> None:
    rules = load_rules([ANALYSE])
    assert apply_rules(rules, {"flow": flow, "quality": quality}) == {"analyse": expected}


def test_dataframe_in_dataframe_out_keeps_index() -> None:
    predictions = pd.DataFrame(
        {"flow": ["TR", "TR", "MV", None], "quality": ["good", "poor", "good", "good"]},
        index=["a.png", "b.png", "c.png", "d.png"],
    )
    out = apply_rules(load_rules([ANALYSE]), predictions)
    assert list(out.index) == ["a.png", "b.png", "c.png", "d.png"]
    # a missing prediction makes its condition false
    assert out["analyse"].tolist() == ["analyse", "reacquire", "reacquire", "reacquire"]


def test_membership_and_missing_else() -> None:
    rule = Rule.from_dict({"name": "valve", "when": {"flow": ["MV", "MA"]}, "then": "mitral"})
    assert rule.evaluate({"flow": "MA"}) == "mitral"
    assert rule.evaluate({"flow": "TR"}) is None
    in_form = Rule.from_dict({"name": "valve", "when": {"flow": {"in": ["MV"]}}, "then": "mitral"})
    assert in_form.evaluate({"flow": "MV"}) == "mitral"
    assert in_form.evaluate({"flow": float("nan")}) is None


def test_min_score_threshold() -> None:
    rules = load_rules(
        [
            {
                "name": "confident_tr",
                "when": {"flow": {"equals": "TR", "min_score": 0.8}},
                "then": "yes",
                "else": "no",
            }
        ]
    )
    predictions = pd.DataFrame({"flow": ["TR", "TR", "MV"]})
    scores = pd.DataFrame({"flow": [0.95, 0.6, 0.99]})
    assert apply_rules(rules, predictions, scores)["confident_tr"].tolist() == ["yes", "no", "no"]
    assert apply_rules(rules, {"flow": "TR"}, {"flow": 0.8}) == {"confident_tr": "yes"}
    with pytest.raises(KeyError, match="no score was given for 'flow'"):
        apply_rules(rules, {"flow": "TR"})


def test_later_rules_see_earlier_outputs() -> None:
    rules = load_rules(
        [
            ANALYSE,
            {
                "name": "measure",
                "when": {"analyse": "analyse", "flow": "TR"},
                "then": "peak_velocity",
            },
        ]
    )
    assert apply_rules(rules, {"flow": "TR", "quality": "good"}) == {
        "analyse": "analyse",
        "measure": "peak_velocity",
    }
    assert apply_rules(rules, {"flow": "TR", "quality": "poor"})["measure"] is None


def test_unknown_keys_are_refused_by_name() -> None:
    with pytest.raises(
        ValueError, match=r"rule 'analyse': unknown key\(s\) 'otherwise', 'priority'"
    ):
        Rule.from_dict({**ANALYSE, "otherwise": "x", "priority": 1})
    with pytest.raises(ValueError, match=r"condition on 'flow': unknown key\(s\) 'eq'"):
        Rule.from_dict({"name": "r", "when": {"flow": {"eq": "TR"}}, "then": "x"})


def test_malformed_rules_are_refused() -> None:
    with pytest.raises(ValueError, match="missing key"):
        Rule.from_dict({"name": "r", "when": {"flow": "TR"}})
    with pytest.raises(ValueError, match="'when' must map"):
        Rule.from_dict({"name": "r", "when": {}, "then": "x"})
    with pytest.raises(ValueError, match="exactly one of 'equals', 'in'"):
        Rule.from_dict({"name": "r", "when": {"flow": {"min_score": 0.5}}, "then": "x"})
    with pytest.raises(ValueError, match="probability in"):
        Rule.from_dict(
            {"name": "r", "when": {"flow": {"equals": "TR", "min_score": 80}}, "then": "x"}
        )
    with pytest.raises(ValueError, match="duplicate name"):
        load_rules([ANALYSE, ANALYSE])


def test_missing_task_names_what_is_available() -> None:
    with pytest.raises(KeyError, match="needs a prediction for 'quality'; available: flow"):
        apply_rules(load_rules([ANALYSE]), {"flow": "TR"})


def test_a_numeric_class_in_yaml_matches_the_predicted_class_name():
    """YAML reads `abnormal: 1` as the int 1; predicted classes are names ("1"): it must fire."""
    rules = load_rules([{"name": "refer", "when": {"abnormal": 1}, "then": "refer",
                         "else": "routine"},
                        {"name": "urgent", "when": {"abnormal": {"in": [1, 2]}}, "then": "now"}])
    out = apply_rules(rules, {"abnormal": "1"})
    assert out == {"refer": "refer", "urgent": "now"}
    assert apply_rules(rules, {"abnormal": "0"}) == {"refer": "routine", "urgent": None}


def test_a_rule_predict_could_not_apply_is_refused_when_the_file_loads():
    import copy

    import pytest

    from tests.runner.conftest import TINY
    from umsrep.config import ConfigError
    from umsrep.experiment import load_experiment

    def with_rules(rules, classes=None):
        cfg = copy.deepcopy(TINY)
        if classes is not None:
            cfg["tasks"][1]["classes"] = classes
        return {**cfg, "rules": rules}

    good = [{"name": "refer", "when": {"abnormal": 1}, "then": "refer"},
            {"name": "again", "when": {"refer": "refer"}, "then": "x"}]
    load_experiment(data=with_rules(good))
    load_experiment(data=with_rules(good, classes=["0", "1"]))
    for rules, classes, message in [
        ([{"name": "r", "when": {"abnormal": 1}, "then": "x", "bogus": 3}], None, "bogus"),
        ([{"name": "r", "when": {"abnormality": 1}, "then": "x"}], None,
         "'abnormality': not a classification task nor an earlier rule"),
        ([{"name": "r", "when": {"lung": 1}, "then": "x"}], None, "not a classification task"),
        ([{"name": "r", "when": {"abnormal": 2}, "then": "x"}], ["0", "1"],
         "'2' is not one of its classes"),
        ([{"name": "r", "when": {"later": "x"}, "then": "x"},
          {"name": "later", "when": {"abnormal": 1}, "then": "x"}], None, "'later'"),
    ]:
        with pytest.raises(ConfigError, match=message):
            load_experiment(data=with_rules(rules, classes))
