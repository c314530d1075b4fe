"""Recommendation rules that combine head outputs, declared in config (paper section 4.2.3).

A rule, as it appears in an experiment YAML::

    - name: analyse
      when: {flow: TR, quality: good}      # every condition must hold
      then: analyse
      else: reacquire                      # optional; a rule without it outputs None

A condition on a task is a class name (equality), a list of class names (membership), or a
mapping with ``equals`` or ``in`` and optionally ``min_score`` (the predicted class's
probability must be at least that; it needs ``scores``). Rules are applied in order, and a
later rule may name an earlier rule's output as if it were a task. A missing prediction
(None or NaN, e.g. a task not predicted for that image) makes its condition false.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import pandas as pd

_RULE_KEYS = ("name", "when", "then", "else")
_CONDITION_KEYS = ("equals", "in", "min_score")


def _refuse_unknown(found: Mapping[str, Any], known: Sequence[str], where: str) -> None:
    unknown = sorted(set(found) - set(known))
    if unknown:
        raise ValueError(
            f"{where}: unknown key(s) {', '.join(map(repr, unknown))}; allowed: {', '.join(known)}"
        )


def _is_missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


@dataclass(frozen=True)
class Condition:
    """``task``'s predicted class must be one of ``allowed`` (and score >= ``min_score``)."""

    task: str
    allowed: tuple[Hashable, ...]
    min_score: float | None = None

    @classmethod
    def from_config(cls, task: str, spec: Any, where: str) -> Condition:
        if isinstance(spec, Mapping):
            _refuse_unknown(spec, _CONDITION_KEYS, f"{where}: condition on {task!r}")
            if ("equals" in spec) == ("in" in spec):
                raise ValueError(
                    f"{where}: condition on {task!r} needs exactly one of 'equals', 'in'"
                )
            allowed = spec["in"] if "in" in spec else [spec["equals"]]
            min_score = spec.get("min_score")
            if min_score is not None and not 0.0 <= float(min_score) <= 1.0:
                raise ValueError(
                    f"{where}: min_score for {task!r} is {min_score}; use a probability in [0, 1]"
                )
            min_score = None if min_score is None else float(min_score)
        else:
            allowed, min_score = spec, None
        if isinstance(allowed, str) or not isinstance(allowed, Sequence):
            allowed = [allowed]
        if not allowed:
            raise ValueError(f"{where}: condition on {task!r} has an empty 'in' list")
        # class names are text (model.json, predictions.csv): YAML's `abnormal: 1` is class "1"
        return cls(task=task, allowed=tuple(str(a) for a in allowed), min_score=min_score)

    def holds(self, values: Mapping[str, Any], scores: Mapping[str, Any] | None) -> bool:
        value = values[self.task]
        if _is_missing(value) or str(value) not in self.allowed:
            return False
        if self.min_score is None:
            return True
        score = None if scores is None else scores.get(self.task)
        if score is None:
            raise KeyError(
                f"condition on {self.task!r} has min_score={self.min_score} but no score was "
                f"given for {self.task!r}; pass scores= with the predicted class's probability"
            )
        return not _is_missing(score) and float(score) >= self.min_score


@dataclass(frozen=True)
class Rule:
    """``then`` when every condition holds, else ``otherwise`` (config key ``else``)."""

    name: str
    when: tuple[Condition, ...]
    then: str
    otherwise: str | None = None

    @classmethod
    def from_dict(cls, config: Mapping[str, Any]) -> Rule:
        where = f"rule {config.get('name', '(unnamed)')!r}"
        _refuse_unknown(config, _RULE_KEYS, where)
        missing = [key for key in ("name", "when", "then") if key not in config]
        if missing:
            raise ValueError(f"{where}: missing key(s) {', '.join(missing)}")
        when = config["when"]
        if not isinstance(when, Mapping) or not when:
            raise ValueError(f"{where}: 'when' must map task names to conditions, got {when!r}")
        conditions = tuple(Condition.from_config(str(t), s, where) for t, s in when.items())
        return cls(str(config["name"]), conditions, str(config["then"]), config.get("else"))

    def evaluate(
        self, values: Mapping[str, Any], scores: Mapping[str, Any] | None = None
    ) -> str | None:
        """Output of this rule for one sample's predictions ``{task: class name}``."""
        for condition in self.when:
            if condition.task not in values:
                raise KeyError(
                    f"rule {self.name!r} needs a prediction for {condition.task!r}; "
                    f"available: {', '.join(sorted(map(str, values)))}"
                )
        met = all(condition.holds(values, scores) for condition in self.when)
        return self.then if met else self.otherwise


def load_rules(configs: Sequence[Mapping[str, Any]]) -> list[Rule]:
    """Rules from a config list, refusing duplicate names."""
    rules = [Rule.from_dict(config) for config in configs]
    names = [rule.name for rule in rules]
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        raise ValueError(f"recommendation rules: duplicate name(s) {', '.join(duplicates)}")
    return rules


def check_rules(rules: Sequence[Rule], classes: Mapping[str, Sequence[str] | None]) -> None:
    """Refuse a rule ``umsrep predict`` could never apply as meant: a condition on something
    that is neither a classification task (``classes``: its class names, None where the data
    will name them) nor an earlier rule, or on a class the task does not have."""
    earlier: set[str] = set()
    for rule in rules:
        for condition in rule.when:
            where = f"rule {rule.name!r}: condition on {condition.task!r}"
            if condition.task in earlier:
                continue
            if condition.task not in classes:
                known = ", ".join([*classes, *earlier])
                raise ValueError(f"{where}: not a classification task nor an earlier rule "
                                 f"(known: {known})")
            names = classes[condition.task]
            unknown = [a for a in condition.allowed if names is not None and a not in names]
            if unknown:
                raise ValueError(f"{where}: {', '.join(map(repr, unknown))} is not one of its "
                                 f"classes {', '.join(map(repr, names))}")
        earlier.add(rule.name)


def _apply_one(
    rules: Sequence[Rule], values: Mapping[str, Any], scores: Mapping[str, Any] | None
) -> dict[str, str | None]:
    context = dict(values)
    outputs: dict[str, str | None] = {}
    for rule in rules:
        outputs[rule.name] = context[rule.name] = rule.evaluate(context, scores)
    return outputs


def apply_rules(
    rules: Sequence[Rule],
    predictions: Mapping[str, Any] | pd.DataFrame,
    scores: Mapping[str, Any] | pd.DataFrame | None = None,
) -> dict[str, str | None] | pd.DataFrame:
    """Apply rules in order to one sample or to a table of samples.

    Args:
        rules: from ``Rule.from_dict`` / ``load_rules``.
        predictions: ``{task: class name}`` for one sample, or a DataFrame with one column per
            task and one row per sample.
        scores: optional probabilities of the predicted classes, shaped like ``predictions``;
            needed only by conditions with ``min_score``.

    Returns:
        ``{rule name: output}`` for a mapping; for a DataFrame, a DataFrame with the same index
        and one column per rule.
    """
    if not isinstance(predictions, pd.DataFrame):
        return _apply_one(rules, predictions, scores)
    if scores is not None and not isinstance(scores, pd.DataFrame):
        raise TypeError(
            "apply_rules: with a DataFrame of predictions, scores must be a DataFrame too"
        )
    if scores is not None and not scores.index.equals(predictions.index):
        raise ValueError(
            "apply_rules: scores and predictions must have the same index (one row per sample)"
        )
    rows = []
    for position, values in enumerate(predictions.to_dict(orient="records")):
        row_scores = None if scores is None else scores.iloc[position].to_dict()
        rows.append(_apply_one(rules, values, row_scores))
    return pd.DataFrame(rows, index=predictions.index, columns=[rule.name for rule in rules])
