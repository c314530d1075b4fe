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
