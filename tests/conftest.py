"""Shared fixtures: one Ray session for the whole test run, and the real sample data folder."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
REAL_DATA = (REPO / ".." / "shared" / "data" / "real").resolve()

os.environ.setdefault("RAY_CHDIR_TO_TRIAL_DIR", "0")
os.environ.setdefault("RAY_TRAIN_ENABLE_STATE_ACTOR_RECONCILIATION", "0")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")


@pytest.fixture(scope="session")
def real_data() -> Path:
    if not REAL_DATA.is_dir():
        pytest.skip(f"real sample data not found at {REAL_DATA}")
    return REAL_DATA


@pytest.fixture(scope="session")
def ray_session():
    """One Ray session (2 CPUs) shared by every test that needs Ray."""
    ray = pytest.importorskip("ray")
    if not ray.is_initialized():
        # With the dashboard on, Ray Train's state API can clean up stopped trials' workers.
        ray.init(address="local", num_cpus=2, num_gpus=0, log_to_driver=False,
                 configure_logging=False,
                 runtime_env={"env_vars": {"RAY_CHDIR_TO_TRIAL_DIR": "0",
                                           "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": "0.1"}})
    yield ray
    ray.shutdown()
