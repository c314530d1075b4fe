"""Every registry name and option of an experiment, checked when the file is loaded.

A mistyped head, loss, strategy, weighting or option is refused before any model is built or
torch imported (the names come from ``umsrep/catalog.py``), naming the dotted key, the bad
value and the closest known name::

    tasks[0].head: unknown head 'seg_cdea'; did you mean 'seg_cdae'? (known: classification, ...)
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from umsrep.catalog import PRESETS, registered
from umsrep.config import ConfigError, did_you_mean

if TYPE_CHECKING:
    from umsrep.experiment import BackboneConfig, Experiment, StrategyConfig
    from umsrep.tasks import Task

# keywords the factories are given from elsewhere in the experiment: not options to set again
# (the runner's build_backbone/build_head calls and kinds.fit_model's strategy call)
BACKBONE_SET = {"width": "backbone.width", "preset": "backbone.preset"}
HEAD_SET = {"num_classes": "the task's classes", "width": "backbone.width",
            "preset": "backbone.preset"}
STRATEGY_SET = {"optimizer": "train.optimizer", "lr": "train.lr",
                "weight_decay": "train.weight_decay", "precision": "train.precision",
                "noise_cfg": "backbone.noise", "noise_seed": "seed",
                "device": "the --device option (resources.use_gpu for a sweep)"}
# joint options that only one loss weighting reads (JointStrategy.__init__)
WEIGHTING_OPTIONS = {"weights": "fixed", "alpha": "gradnorm", "gradnorm_lr": "gradnorm",
                     "gradnorm_layer": "gradnorm"}


def unknown(what: str, value: Any, known: Iterable[str], of: str = "") -> str:
    """``unknown head 'x'; did you mean 'y'? (known: a, b)`` (``of``: ``" of head 'z'"``)."""
    known = sorted(known)
    return (f"unknown {what} {value!r}{of}{did_you_mean(value, known)} "
            f"(known: {', '.join(known) or 'none'})")


def check_name(key: str, kind: str, name: str) -> tuple[str, ...] | None:
    """Refuse ``name`` unless it is a registered ``kind``; returns the options it accepts."""
    table = registered(kind)
    if name not in table:
        raise ConfigError(key, unknown(kind, name, table))
    return table[name]


def check_options(key: str, options: Mapping[str, Any], accepted: tuple[str, ...] | None,
                  owner: str, set_elsewhere: Mapping[str, str]) -> None:
    """Refuse an option ``owner`` does not accept, or one the runner sets from another key."""
    for option in options:
        if option in set_elsewhere:
            raise ConfigError(f"{key}.{option}", f"set from {set_elsewhere[option]}, not as an "
                              f"option of {owner}")
        if accepted is not None and option not in accepted:
            allowed = [a for a in accepted if a not in set_elsewhere]
            raise ConfigError(f"{key}.{option}", unknown("option", option, allowed, f" of {owner}"))


def check_registered(exp: Experiment) -> None:
    """Check every registry name and option of ``exp``; raise ``ConfigError`` on the first bad
    one."""
    check_backbone(exp.backbone)
    for i, task in enumerate(exp.tasks):
        check_task(f"tasks[{i}]", task)
    names = [t.name for t in exp.tasks]
    for i, strategy in enumerate(exp.strategies):
        check_strategy(f"strategies[{i}]", strategy, names)


def check_backbone(bb: BackboneConfig) -> None:
    accepted = check_name("backbone.name", "backbone", bb.name)
    if bb.preset not in PRESETS:
        raise ConfigError("backbone.preset", unknown("preset", bb.preset, PRESETS))
    check_options("backbone.kwargs", bb.kwargs, accepted, f"backbone {bb.name!r}", BACKBONE_SET)
    check_name("backbone.head", "head", bb.head)


def check_task(key: str, task: Task) -> None:
    accepted = check_name(f"{key}.head", "head", task.head)
    check_options(f"{key}.head_kwargs", task.head_kwargs, accepted, f"head {task.head!r}",
                  HEAD_SET)
    accepted = check_name(f"{key}.loss", "loss", task.loss)
    check_options(f"{key}.loss_kwargs", task.loss_kwargs, accepted, f"loss {task.loss!r}", {})
    check_loss_values(f"{key}.loss_kwargs", task.loss_kwargs)


def check_loss_values(key: str, options: Mapping[str, Any]) -> None:
    """Every loss option is a number >= 0 (weights, a smoothing constant) and a label smoothing
    at most 1, refused here rather than by torch minutes into a run."""
    for option, value in options.items():
        if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
            raise ConfigError(f"{key}.{option}", f"must be a number >= 0, got {value!r}")
        if option == "label_smoothing" and value > 1:
            raise ConfigError(f"{key}.{option}", f"must lie in [0, 1], got {value!r}")


def check_strategy(key: str, strategy: StrategyConfig, tasks: list[str]) -> None:
    accepted = check_name(f"{key}.name", "strategy", strategy.name)
    options = strategy.options
    check_options(f"{key}.options", options, accepted, f"strategy {strategy.name!r}",
                  STRATEGY_SET)
    if "ratios" in options:
        check_ratios(f"{key}.options.ratios", options["ratios"], tasks)
    if strategy.name == "joint":
        check_joint(f"{key}.options", options, tasks)
    if "cache_views" in options:
        check_cache_views(f"{key}.options.cache_views", options["cache_views"], tasks)


def check_cache_views(key: str, views: Any, tasks: list[str]) -> None:
    """Independent: a whole number of replayed views >= 0, or one per configured task."""
    values = views.items() if isinstance(views, Mapping) else [(None, views)]
    if isinstance(views, Mapping):
        check_task_keys(key, views, tasks)
    for task, value in values:
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            where = key if task is None else f"{key}.{task}"
            raise ConfigError(where, f"expected a whole number of views >= 0 (0: no cache), "
                              f"got {value!r}")


def check_ratios(key: str, ratios: Any, tasks: list[str]) -> None:
    """Alternating: a positive number of batches per turn for exactly the configured tasks."""
    if not isinstance(ratios, Mapping):
        raise ConfigError(key, f"expected a mapping {{task: batches per turn}}, got {ratios!r}")
    check_task_keys(key, ratios, tasks)
    missing = [t for t in tasks if t not in ratios]
    if missing:
        raise ConfigError(key, f"gives no ratio for {', '.join(missing)}; give one per task")
    for task, value in ratios.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
            raise ConfigError(f"{key}.{task}", f"expected a positive number, got {value!r}")


def check_joint(key: str, options: Mapping[str, Any], tasks: list[str]) -> None:
    """Joint: a registered weighting, only its own options, weights of configured tasks."""
    weighting = options.get("weighting", "fixed")
    check_name(f"{key}.weighting", "loss weighting", weighting)
    for option, reader in WEIGHTING_OPTIONS.items():
        if option in options and reader != weighting:
            raise ConfigError(f"{key}.{option}", f"only the {reader!r} weighting reads "
                              f"{option}; this strategy's weighting is {weighting!r}")
    weights = options.get("weights")
    if weights is not None:
        if not isinstance(weights, Mapping):
            raise ConfigError(f"{key}.weights", f"expected a mapping {{task: weight}}, got "
                              f"{weights!r}")
        check_task_keys(f"{key}.weights", weights, tasks)
        for task, value in weights.items():
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ConfigError(f"{key}.weights.{task}", f"expected a number, got {value!r}")


def check_task_keys(key: str, mapping: Mapping[str, Any], tasks: list[str]) -> None:
    for name in mapping:
        if name not in tasks:
            raise ConfigError(f"{key}.{name}", unknown("task", name, tasks))
