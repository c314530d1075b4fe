"""Numeric precision of a training step: fp32, bf16 autocast, or fp16 autocast + GradScaler.

``train.precision`` in an experiment file is one of ``auto | fp32 | bf16 | fp16``:

- ``auto`` (default): the fastest choice that keeps the metrics. On CUDA, bf16 autocast where
  the GPU supports it (Ampere and newer), else fp16 with a GradScaler. On a CPU, bf16 autocast
  only when the CPU computes bf16 natively (AVX-512 BF16 or AMX); elsewhere fp32, because
  emulated bf16 is far slower than fp32 (an AVX2-only AMD EPYC trained the CDAE at 128 px at
  22 images/s in fp32 and 1 image/s under bf16 autocast, ``bench/train_bench.py``).
- ``bf16`` / ``fp16``: asked for explicitly. fp16 on a CPU falls back to fp32 (with a warning):
  CPU fp16 autocast exists but is slow without AMX-FP16, and it needs a GradScaler too.

Losses are always computed in fp32 (``compute_losses`` casts the outputs) and weights stay fp32:
autocast only runs the convolutions and matmuls in the lower precision.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Literal

import torch

log = logging.getLogger(__name__)

Precision = Literal["auto", "fp32", "bf16", "fp16"]
PRECISIONS = ("auto", "fp32", "bf16", "fp16")


@dataclass(frozen=True)
class StepPrecision:
    """What a strategy does with a precision name on a device."""

    name: str  # the resolved name: fp32 | bf16 | fp16
    dtype: torch.dtype | None  # autocast dtype; None = no autocast
    scaler: bool  # fp16 on CUDA: scale the loss (GradScaler)

    @property
    def autocast(self) -> bool:
        return self.dtype is not None


def cpu_has_native_bf16() -> bool:
    """True when this CPU computes bf16 in hardware (AVX-512 BF16 or AMX tiles)."""
    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(bool(getattr(torch.cpu, name, lambda: False)()) for name in checks)


def resolve_precision(precision: str, device: str | torch.device) -> StepPrecision:
    """The autocast dtype and scaler for ``precision`` on ``device`` (see the module doc)."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision {precision!r} is unknown; use one of {', '.join(PRECISIONS)}")
    kind = torch.device(device).type
    fp32 = StepPrecision("fp32", None, False)
    if precision == "fp32":
        return fp32
    if kind == "cuda":
        bf16_ok = torch.cuda.is_available() and torch.cuda.is_bf16_supported()
        if precision in ("auto", "bf16") and bf16_ok:
            return StepPrecision("bf16", torch.bfloat16, False)
        if precision == "bf16":
            log.warning("this GPU has no bf16: training in fp16 with a GradScaler instead")
        return StepPrecision("fp16", torch.float16, True)
    if kind != "cpu":
        return fp32
    if precision == "fp16":
        log.warning("fp16 on the CPU is not supported by umsrep: training in fp32")
        return fp32
    if precision == "auto" and not cpu_has_native_bf16():
        return fp32
    if precision == "bf16" and not cpu_has_native_bf16():
        log.warning("this CPU has no native bf16 (AVX-512 BF16/AMX): bf16 autocast is emulated "
                    "and much slower than fp32; use precision auto or fp32")
    return StepPrecision("bf16", torch.bfloat16, False)
