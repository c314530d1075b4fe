"""A one-task experiment small enough for real Ray Train + Tune runs on 2 CPUs."""

from __future__ import annotations

import copy

import pytest

SMOKE = {
    "name": "raysmoke",
    "seed": 0,
    "data": {
        "image_size": 32,
        "train": [{"synthetic": "cxr", "n": 40, "seed": 0}],
        "test": [{"synthetic": "cxr", "n": 12, "seed": 5}],
    },
    "folds": {"k": 2, "run": 1, "seed": 0, "val_fraction": 0.2, "stratify": "abnormal"},
    "backbone": {"name": "cdae", "preset": "tiny", "pretrain": "none"},
    "tasks": [{"name": "abnormal", "kind": "classification", "column": "abnormal"}],
    "strategies": [{"name": "joint"}],
    "baseline": {"enabled": False},
    "train": {"epochs": 2, "batch_size": 16, "max_steps_per_epoch": 2, "patience": 0},
    "search": {"num_samples": 2, "applies_to": ["joint"], "scheduler": "none",
               "space": {"lr": {"type": "loguniform", "low": 0.0005, "high": 0.005}}},
    "resources": {"num_workers": 1, "cpus_per_worker": 0.75, "cpus_per_trial": 0.25,
                  "max_failures": 2},
}


@pytest.fixture
def smoke_config(tmp_path_factory) -> dict:
    cfg = copy.deepcopy(SMOKE)
    cfg["data"]["cache_dir"] = str(tmp_path_factory.mktemp("ray-cache"))
    return cfg
