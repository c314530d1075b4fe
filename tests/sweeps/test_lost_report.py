"""A trial whose last report Ray Train lost still gives it to Tune
(``sweeps.driver.report_lost_final``; the race is in Ray Train's worker poll)."""

from __future__ import annotations

from sweeps.driver import report_lost_final
from sweeps.worker import LAST_REPORT
from umsrep.runner.store import atomic_write_json

LAST = {"epoch": 3, "val_score": 0.71, "val/loss": 0.52, "stage": "f0-joint"}


def _calls(seen, tmp_path, payload=LAST):
    copy = tmp_path / "ray_train" / "sweep-joint-abc" / LAST_REPORT
    if payload is not None:
        atomic_write_json(payload, copy)
    sent: list[dict] = []
    lost = report_lost_final(seen, copy, report=sent.append)
    return lost, sent


def test_nothing_reaches_tune_twice_when_train_saw_the_last_epoch(tmp_path):
    lost, sent = _calls({**LAST, "checkpoint_dir_name": "checkpoint_x"}, tmp_path)
    assert not lost and sent == []


def test_a_trial_whose_only_report_was_lost_reports_it_itself(tmp_path):
    # Ray Train saw no report at all: its result has no metrics
    lost, sent = _calls(None, tmp_path)
    assert lost and sent == [LAST]
    assert sent[0]["val_score"] == 0.71  # the searched metric Tune would have missed


def test_a_lost_last_epoch_after_earlier_ones_is_reported(tmp_path):
    lost, sent = _calls({**LAST, "epoch": 2, "val_score": 0.69}, tmp_path)
    assert lost and sent == [LAST]


def test_a_pack_that_lost_its_last_stage_s_report_sends_it(tmp_path):
    # a packed Train run: its result ends at another stage's report (the same epoch number)
    lost, sent = _calls({**LAST, "stage": "f1-joint"}, tmp_path)
    assert lost and sent == [LAST]


def test_a_trial_that_never_reported_sends_nothing(tmp_path):
    lost, sent = _calls(None, tmp_path, payload=None)
    assert not lost and sent == []
