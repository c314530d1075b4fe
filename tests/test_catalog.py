"""``umsrep/catalog.py`` (what experiment files are checked against without importing torch)
says what the live registries say, as ``inspect.signature`` reads them."""

from __future__ import annotations

import pprint

import pytest

from umsrep.catalog import CATALOG, PRESETS, accepted_options, derive_catalog, registered
from umsrep.validate import BACKBONE_SET, HEAD_SET, STRATEGY_SET, WEIGHTING_OPTIONS


def test_the_catalog_is_what_the_registries_accept() -> None:
    live = derive_catalog()
    assert live == CATALOG, (
        "umsrep/catalog.py is out of date; set CATALOG to:\n"
        + pprint.pformat(live, width=100, sort_dicts=True)
    )


def test_presets_are_the_models_presets() -> None:
    from umsrep.models.presets import PRESET_WIDTHS

    assert PRESETS == tuple(sorted(PRESET_WIDTHS))


def test_what_the_runner_sets_is_accepted_by_the_targets() -> None:
    """The keywords validate.py refuses as "set elsewhere" are ones the factories really take,
    so the refusal message is right (and nothing the runner passes is left unchecked)."""
    import inspect

    from umsrep.models import build_backbone, build_head

    for strategy in CATALOG["strategy"].values():
        assert set(STRATEGY_SET) <= set(strategy)
    assert set(BACKBONE_SET) <= set(inspect.signature(build_backbone).parameters)
    assert set(HEAD_SET) <= set(inspect.signature(build_head).parameters)


def test_weighting_options_are_joint_options_of_registered_weightings() -> None:
    assert set(WEIGHTING_OPTIONS) <= set(CATALOG["strategy"]["joint"])
    assert set(WEIGHTING_OPTIONS.values()) <= set(CATALOG["loss weighting"])


def test_kwargs_are_followed_into_base_classes() -> None:
    class Base:
        def __init__(self, model, *, lr: float = 1.0, seed: int = 0) -> None: ...

    class Child(Base):
        def __init__(self, model, *, ratios=None, **kw) -> None: ...

    class Open:
        def __init__(self, **kw) -> None: ...

    assert accepted_options(Child, ("model",)) == ("lr", "ratios", "seed")
    assert accepted_options(Open) is None  # an open **kwargs: any keyword


def test_a_head_registered_at_run_time_is_known_once_its_registry_is_imported() -> None:
    from umsrep.models import HEADS

    name = "test_catalog_probe"
    assert name not in registered("head")

    @HEADS.register(name)
    def build_probe(backbone, *, num_classes, width, gain: float = 1.0):
        raise AssertionError("never built by the check")

    try:
        assert registered("head")[name] == ("gain",)
    finally:
        HEADS._items.pop(name)
    with pytest.raises(KeyError):
        HEADS.get(name)
