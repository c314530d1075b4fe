"""The METRICS registry: every name resolves, runs on its input kind, and kinds map to metrics."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from umsrep.metrics import KIND_METRICS, METRICS, metric_input, metrics_for_kind

_RNG = np.random.default_rng(0)
_LABELS = np.array([0, 1, 1, 0, 1, 0])
_INPUTS = {
    "labels": (_LABELS, np.array([0, 1, 0, 0, 1, 1])),
    "scores": (_LABELS, np.array([0.1, 0.8, 0.4, 0.3, 0.9, 0.6])),
    "masks": (_RNG.random((2, 8, 8)) < 0.5, _RNG.random((2, 8, 8)) < 0.5),
    "images": (_RNG.random((1, 1, 176, 176)), _RNG.random((1, 1, 176, 176))),
}


def test_registry_holds_every_paper_metric() -> None:
    assert METRICS.names() == sorted(
        ["accuracy", "f1", "mcc", "auc", "iou", "dice", "pixel_accuracy", "psnr", "ssim", "ms_ssim"]
    )
    registered_by_kind = {name for names in KIND_METRICS.values() for name in names}
    assert registered_by_kind == set(METRICS.names())


@pytest.mark.parametrize("name", METRICS.names())
def test_each_metric_runs_on_its_input_kind(name: str) -> None:
    truth, prediction = _INPUTS[metric_input(name)]
    value = METRICS.get(name)(truth, prediction)
    assert isinstance(value, float)
    assert np.isfinite(value)
    # the same inputs on both sides is a perfect score (psnr: infinite)
    perfect = METRICS.get(name)(truth, truth if metric_input(name) != "scores" else truth * 1.0)
    assert perfect == pytest.approx(1.0) or (name == "psnr" and perfect == float("inf"))


def test_metrics_for_kind(caplog: pytest.LogCaptureFixture, monkeypatch) -> None:
    monkeypatch.setattr("umsrep.metrics._MS_SSIM_SAID", set())  # as in a fresh process
    assert metrics_for_kind("classification") == ["accuracy", "f1", "mcc", "auc"]
    assert metrics_for_kind("segmentation") == ["iou", "dice", "pixel_accuracy"]
    assert metrics_for_kind("denoise", image_size=256) == ["psnr", "ssim", "ms_ssim"]
    with caplog.at_level(logging.INFO, logger="umsrep.metrics"):
        assert metrics_for_kind("denoise", image_size=64) == ["psnr", "ssim"]
    assert "176 px minimum" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="umsrep.metrics"):  # every epoch asks again
        assert metrics_for_kind("denoise", image_size=64) == ["psnr", "ssim"]
    assert "176 px minimum" not in caplog.text  # said once
    with pytest.raises(KeyError, match="known: classification, denoise, segmentation"):
        metrics_for_kind("detection")
    with pytest.raises(KeyError, match="unknown metric"):
        metric_input("bleu")
