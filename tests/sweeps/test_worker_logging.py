"""Ray Train's per-report INFO lines are dropped from the log; its warnings are kept."""

from __future__ import annotations

import logging

import pytest


def test_ray_train_per_report_lines_are_dropped_but_warnings_kept(caplog):
    ctx = pytest.importorskip("ray.train.v2._internal.execution.context")
    storage = pytest.importorskip("ray.train.v2._internal.execution.storage")
    from sweeps.worker import quiet_ray_train_logs

    quiet_ray_train_logs()
    quiet_ray_train_logs()  # idempotent: one filter per logger
    caplog.set_level(logging.INFO)
    # the very logger objects Ray's modules log through (context.py names its by file path)
    ctx.logger.info("Reporting training result 3: TrainingReport(...) from rank 0")
    storage.logger.info("Checkpoint successfully created at: Checkpoint(...)")
    ctx.logger.warning("Reporting training result took long")  # a warning passes
    ctx.logger.info("something else Ray says")
    messages = [r.getMessage() for r in caplog.records]
    assert messages == ["Reporting training result took long", "something else Ray says"]
    assert sum(type(f).__name__ == "_DropPerReportLines" for f in ctx.logger.filters) == 1
