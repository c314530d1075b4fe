"""A tiny experiment (synthetic CXR, 32 px, tiny widths, 1 epoch) shared by the runner tests."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch

TINY = {
    "name": "tiny",
    "seed": 0,
    "data": {
        "image_size": 32,
        "pretrain": [{"synthetic": "cxr", "n": 40, "seed": 3}],
        "train": [{"synthetic": "cxr", "n": 48, "seed": 0}],
        "test": [{"synthetic": "cxr", "n": 16, "seed": 5}],
    },
    "folds": {"k": 2, "seed": 0, "val_fraction": 0.2, "stratify": "abnormal"},
    "backbone": {"name": "cdae", "preset": "tiny", "pretrain": "denoise",
                 "train": {"epochs": 1, "batch_size": 16, "max_steps_per_epoch": 2}},
    "tasks": [
        {"name": "lung", "kind": "segmentation", "column": "mask", "head": "seg_cdae",
         "head_kwargs": {"skips": True}, "loss": "bce_dice"},
        {"name": "abnormal", "kind": "classification", "column": "abnormal"},
    ],
    "strategies": [{"name": "independent"}, {"name": "alternating"}, {"name": "joint"}],
    "baseline": {"enabled": True, "arch": "same", "denoiser": True},
    "train": {"epochs": 2, "batch_size": 16, "max_steps_per_epoch": 2},
    "resources": {"num_workers": 1, "cpus_per_worker": 0.75, "cpus_per_trial": 0.25},
}


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)


@pytest.fixture(scope="session")
def tiny_cache(tmp_path_factory) -> Path:
    """One preprocessing cache/backbone store for every runner test (session scoped)."""
    return tmp_path_factory.mktemp("umsrep-cache")


@pytest.fixture
def tiny_config(tiny_cache) -> dict:
    cfg = copy.deepcopy(TINY)
    cfg["data"]["cache_dir"] = str(tiny_cache)
    return cfg
