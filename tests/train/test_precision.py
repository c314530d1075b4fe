"""``train.precision``: what each name becomes on a CPU with and without native bf16 and on
GPUs with and without bf16 (the hardware is simulated: the checks are monkeypatched)."""

from __future__ import annotations

import logging

import pytest
import torch

from umsrep import precision as prec
from umsrep.precision import StepPrecision, cpu_has_native_bf16, resolve_precision

FP32 = StepPrecision("fp32", None, False)
BF16 = StepPrecision("bf16", torch.bfloat16, False)
FP16_SCALED = StepPrecision("fp16", torch.float16, True)


@pytest.fixture
def cpu_bf16(monkeypatch):
    def set_native(native: bool) -> None:
        monkeypatch.setattr(prec, "cpu_has_native_bf16", lambda: native)
    return set_native


@pytest.fixture
def gpu(monkeypatch):
    def set_bf16(bf16: bool) -> None:
        monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
        monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: bf16)
    return set_bf16


@pytest.mark.parametrize("native, expected", [(True, BF16), (False, FP32)])
def test_auto_on_a_cpu_is_bf16_only_where_the_cpu_computes_it(cpu_bf16, native, expected,
                                                             caplog):
    cpu_bf16(native)
    with caplog.at_level(logging.WARNING, logger=prec.__name__):
        assert resolve_precision("auto", "cpu") == expected
    assert not caplog.records


def test_bf16_asked_for_on_a_cpu_without_it_is_kept_with_a_warning(cpu_bf16, caplog):
    cpu_bf16(False)
    with caplog.at_level(logging.WARNING, logger=prec.__name__):
        assert resolve_precision("bf16", "cpu") == BF16
    assert "no native bf16" in caplog.text


@pytest.mark.parametrize("native", [True, False])
def test_fp16_on_a_cpu_falls_back_to_fp32_with_a_warning(cpu_bf16, native, caplog):
    cpu_bf16(native)
    with caplog.at_level(logging.WARNING, logger=prec.__name__):
        assert resolve_precision("fp16", "cpu") == FP32
    assert "fp16 on the CPU" in caplog.text


@pytest.mark.parametrize("device", ["cpu", "cuda", "cuda:1", "mps"])
def test_fp32_is_fp32_everywhere(device, gpu, cpu_bf16):
    gpu(True)
    cpu_bf16(True)
    assert resolve_precision("fp32", device) == FP32


@pytest.mark.parametrize("name", ["auto", "bf16"])
def test_a_gpu_with_bf16_autocasts_to_bf16_without_a_scaler(gpu, name):
    gpu(True)
    assert resolve_precision(name, "cuda") == BF16


def test_a_gpu_without_bf16_gets_fp16_and_a_grad_scaler(gpu, caplog):
    gpu(False)
    assert resolve_precision("auto", "cuda:0") == FP16_SCALED
    assert resolve_precision("fp16", "cuda") == FP16_SCALED
    with caplog.at_level(logging.WARNING, logger=prec.__name__):
        assert resolve_precision("bf16", "cuda") == FP16_SCALED
    assert "no bf16" in caplog.text


def test_fp16_on_a_gpu_with_bf16_stays_fp16_as_asked(gpu):
    gpu(True)
    assert resolve_precision("fp16", "cuda") == FP16_SCALED


def test_another_device_trains_in_fp32(cpu_bf16):
    cpu_bf16(True)
    assert resolve_precision("auto", "mps") == FP32
    assert not FP32.autocast and BF16.autocast


def test_an_unknown_precision_is_refused():
    with pytest.raises(ValueError, match="fp8"):
        resolve_precision("fp8", "cpu")


@pytest.mark.parametrize("avx512_bf16, amx, expected", [
    (True, False, True), (False, True, True), (False, False, False)])
def test_native_bf16_is_avx512_bf16_or_amx(monkeypatch, avx512_bf16, amx, expected):
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: avx512_bf16,
                        raising=False)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: amx, raising=False)
    assert cpu_has_native_bf16() is expected


def test_a_strategy_scales_the_loss_only_under_fp16_on_a_gpu(cpu_bf16):
    """The strategy's GradScaler follows the resolved precision: off on a CPU whatever was
    asked (fp16 there trains in fp32)."""
    from toy_multitask import TASKS, make_model

    from umsrep.strategies import build_strategy

    cpu_bf16(True)
    for name in ("fp16", "bf16", "auto", "fp32"):
        strategy = build_strategy("joint", make_model(TASKS[:2]), TASKS[:2], precision=name)
        assert not strategy.scaler.is_enabled()
        assert strategy.amp == (name in ("bf16", "auto"))
