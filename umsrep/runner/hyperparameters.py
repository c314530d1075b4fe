"""Tuned hyperparameters applied to the experiment, once, before a stage runs.

A sweep (``sweeps/driver.py``) gives a stage a flat dict of ``search.space`` keys: a trial's
sample, or the best one for every fold. ``apply_hyperparameters`` turns it into the
experiment that stage reads (``dataclasses.replace`` on the typed config); nothing below
``umsrep.runner.stage.run_stage`` sees the dict.

===================  ===================================================================
key                  what it replaces
===================  ===================================================================
lr, batch_size,      ``train.<key>``: the fine-tuning and baseline stages' settings (the
optimizer,           searched stages; a backbone's ``backbone.train`` is part of its store
weight_decay,        key and is never tuned), over a strategy's own ``train`` setting of
epochs, ema          the same key
dropout              ``head_kwargs.dropout`` of every classification task
noise_sigma_max      ``backbone.noise.sigmas``: those at most this (the smallest if none)
alternating_ratio    the ``alternating`` strategy's ``ratios``: the first task this many
                     batches per turn, the others 1
weight/<task>        the ``joint`` strategy's fixed ``weights`` (others: ``loss_weight``)
===================  ===================================================================
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from umsrep.experiment import SEARCHABLE, Experiment, StrategyConfig

TRAIN_KEYS = {"lr": float, "batch_size": int, "optimizer": str, "weight_decay": float,
              "epochs": int, "ema": float}


def apply_hyperparameters(exp: Experiment, params: dict[str, Any] | None) -> Experiment:
    """``exp`` with ``params`` (``search.space`` keys, see the module doc) applied."""
    if not params:
        return exp
    unknown = sorted(k for k in params if k not in SEARCHABLE and not k.startswith("weight/"))
    if unknown:
        raise ValueError(f"hyperparameters {unknown} are not searchable; use "
                         f"{', '.join(SEARCHABLE)} or weight/<task>")
    train = {k: cast(params[k]) for k, cast in TRAIN_KEYS.items() if k in params}
    if train:
        exp = replace(exp, train=replace(exp.train, **train))
    if "dropout" in params:
        exp = replace(exp, tasks=[
            replace(t, head_kwargs={**t.head_kwargs, "dropout": params["dropout"]})
            if t.kind == "classification" else t for t in exp.tasks])
    if "noise_sigma_max" in params:
        noise = exp.backbone.noise
        sigmas = [s for s in noise.sigmas if s <= params["noise_sigma_max"]] or noise.sigmas[:1]
        exp = replace(exp, backbone=replace(exp.backbone, noise=replace(noise, sigmas=sigmas)))
    return replace(exp, strategies=[_strategy(s, exp, params) for s in exp.strategies])


def _strategy(s: StrategyConfig, exp: Experiment, params: dict[str, Any]) -> StrategyConfig:
    if s.train:  # a tuned value wins over the strategy's own
        s = replace(s, train={k: v for k, v in s.train.items() if k not in params})
    weights = {k[len("weight/"):]: float(v) for k, v in params.items() if k.startswith("weight/")}
    if s.name == "joint" and weights:
        base = {t.name: t.loss_weight for t in exp.tasks}
        return replace(s, options={**s.options,
                                   "weights": {**base, **s.options.get("weights", {}), **weights}})
    if s.name == "alternating" and "alternating_ratio" in params:
        r = float(params["alternating_ratio"])
        ratios = {t.name: (r if i == 0 else 1.0) for i, t in enumerate(exp.tasks)}
        return replace(s, options={**s.options, "ratios": ratios})
    return s
