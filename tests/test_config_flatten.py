"""umsrep.config.flatten: the flat keys Optuna's search space (``/``) and MLflow's parameter
names (``.``) take."""

from umsrep.config import flatten


def test_flatten_joins_nested_keys_with_the_separator():
    nested = {"lr": 0.01, "weight": {"lung": 1.0, "abnormal": {"x": 2}}, "empty": {}}
    assert flatten(nested) == {"lr": 0.01, "weight/lung": 1.0, "weight/abnormal/x": 2}
    assert flatten(nested, sep=".") == {"lr": 0.01, "weight.lung": 1.0, "weight.abnormal.x": 2}
    assert flatten({}) == {}
