"""What an experiment file may name: each registered backbone, head, loss, strategy and joint
loss weighting, with the options (keyword arguments) it accepts.

The registries are filled by importing the modules that define their items, and those import
torch: seconds on an idle machine, a minute on a busy one. An experiment file is checked when it
is loaded (``umsrep/validate.py``), before anything heavy is imported, so that check reads this
table. ``derive_catalog()`` computes it from the live registries with ``inspect.signature``,
following ``**kwargs`` into the base classes' ``__init__``; ``tests/test_catalog.py`` fails,
printing the table to paste here, whenever the two disagree (a new head, a renamed option).
"""

from __future__ import annotations

import importlib
import inspect
import sys
from collections.abc import Callable
from typing import Any

# {registry kind: {registered name: options it accepts}}; None would mean "any keyword" (an
# open **kwargs). The arguments in CONTRACT_ARGUMENTS are passed by the factories, not options.
CATALOG: dict[str, dict[str, tuple[str, ...] | None]] = {
    "backbone": {
        "cdae": ("channels", "in_chans"),
        "echo_cnn": ("channels", "dilations", "in_chans"),
        "resnet18": ("in_chans", "state_dict_path"),
        "resnet34": ("in_chans", "state_dict_path"),
    },
    "head": {
        "classification": ("conv_channels", "convs", "crop", "dilate", "dropout", "grid", "guide",
                           "hidden", "levels", "pool"),
        "denoise": (),
        "seg_cdae": ("skips",),
        "seg_dilated": ("source",),
        "seg_echo": (),
    },
    "loss": {
        "bce_dice": ("smooth", "w_bce", "w_dice"),
        "cross_entropy": ("label_smoothing",),
        "mse": (),
    },
    "strategy": {
        "alternating": ("device", "lr", "noise_cfg", "noise_seed", "noisy_inputs", "optimizer",
                        "precision", "ratios", "weight_decay"),
        "independent": ("cache_mb", "cache_views", "device", "lr", "noise_cfg", "noise_seed",
                        "noisy_inputs", "one_stage", "optimizer", "precision", "weight_decay"),
        "joint": ("alpha", "device", "gradnorm_layer", "gradnorm_lr", "lr", "noise_cfg",
                  "noise_seed", "noisy_inputs", "optimizer", "precision", "weight_decay",
                  "weighting", "weights"),
    },
    "loss weighting": {
        "fixed": ("weights",),
        "gradnorm": ("alpha", "lr"),
        "uncertainty": (),
    },
}

PRESETS = ("default", "paper", "tiny")  # umsrep.models.presets.PRESET_WIDTHS

# what each kind's factory passes itself (the contracts in the registries' docstrings)
CONTRACT_ARGUMENTS: dict[str, tuple[str, ...]] = {
    "backbone": ("width",),  # build_backbone resolves it from preset and width
    "head": ("backbone", "num_classes", "width"),
    "loss": ("output", "target", "valid"),
    "strategy": ("model", "tasks"),
    "loss weighting": ("task_names",),
}

# where each registry lives: (module, attribute)
_REGISTRIES: dict[str, tuple[str, str]] = {
    "backbone": ("umsrep.models._factory", "BACKBONES"),
    "head": ("umsrep.models._factory", "HEADS"),
    "loss": ("umsrep.losses", "LOSSES"),
    "strategy": ("umsrep.strategies", "STRATEGIES"),
    "loss weighting": ("umsrep.strategies.weighting", "WEIGHTINGS"),
}


def _init_chain(obj: Any) -> list[Callable[..., Any]]:
    """The callables whose keywords ``obj(...)`` accepts, in the order **kwargs passes them on:
    a function itself, or a class's own ``__init__`` then those of its bases."""
    if not inspect.isclass(obj):
        return [obj]
    return [k.__dict__["__init__"] for k in obj.__mro__
            if "__init__" in k.__dict__ and k is not object]


def accepted_options(obj: Any, contract: tuple[str, ...] = ()) -> tuple[str, ...] | None:
    """Keyword names ``obj`` accepts, less ``contract``; a ``**kwargs`` is followed into the next
    base class's ``__init__`` (it is passed on with ``super().__init__``). None: any keyword."""
    names: set[str] = set()
    for fn in _init_chain(obj):
        params = inspect.signature(fn).parameters.values()
        names |= {p.name for p in params
                  if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) and p.name != "self"}
        if not any(p.kind is p.VAR_KEYWORD for p in params):
            return tuple(sorted(names - set(contract)))
    return None


def _describe(registry: Any, kind: str) -> dict[str, tuple[str, ...] | None]:
    return {name: accepted_options(registry.get(name), CONTRACT_ARGUMENTS[kind])
            for name in registry}


def derive_catalog() -> dict[str, dict[str, tuple[str, ...] | None]]:
    """``CATALOG`` as the live registries say it is (imports torch and every registered item)."""
    # the packages whose imports fill the registries (torch: kept off the load path)
    for package in ("umsrep.models", "umsrep.losses", "umsrep.strategies"):
        importlib.import_module(package)
    return {kind: _describe(getattr(sys.modules[module], attr), kind)
            for kind, (module, attr) in _REGISTRIES.items()}


def registered(kind: str) -> dict[str, tuple[str, ...] | None]:
    """``CATALOG[kind]``, plus items registered at run time when their registry is already
    imported (e.g. a head registered in a notebook); never imports a registry itself."""
    table = dict(CATALOG[kind])
    module_name, attr = _REGISTRIES[kind]
    module = sys.modules.get(module_name)
    registry = getattr(module, attr, None) if module is not None else None
    if registry is not None:
        for name in registry:
            if name not in table:
                table[name] = accepted_options(registry.get(name), CONTRACT_ARGUMENTS[kind])
    return table


if __name__ == "__main__":  # python -m umsrep.catalog: the table as the registries have it
    import pprint

    pprint.pprint(derive_catalog(), width=100, sort_dicts=True)
