"""Synthetic spectral Doppler images with envelope masks, flow and quality labels.

Images are time (x, left to right) by velocity (y) around a bright horizontal baseline; each
column holds a speckled spectrum that fills the region between the baseline and the spectral
envelope. Flow types, in roughly the paper's 855:490:1099 mix:

- ``MV`` (mitral inflow, pulsed wave): per beat a triangular E wave then a smaller-or-larger A
  wave, both above the baseline, with a darker spectral window near the baseline;
- ``MA`` (mitral annulus, tissue Doppler): small s' above and e'/a' below the baseline;
- ``TR`` (tricuspid regurgitation, continuous wave): one large, rounded parabolic jet below the
  baseline per beat, densely filled.

The mask is the envelope region (between the baseline and the envelope, both sides). ``quality``
is good or low; low images have one or more of: heavy noise, gain too high (saturation), the
envelope clipped at the image edge, dropouts (dark time bands). As in the paper, only about a
third of the images carry a quality label (the rest are ``pd.NA``), though every image has one.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from umsrep.data.synthetic._common import (
    SyntheticBatch,
    assign_patients,
    blur_batch,
    col,
    patient_ids,
    to_uint8,
    unit_grid,
)

FLOWS: tuple[str, ...] = ("MV", "MA", "TR")
FLOW_PROBS: tuple[float, ...] = (855 / 2444, 490 / 2444, 1099 / 2444)
QUALITIES: tuple[str, ...] = ("good", "low")
LOW_QUALITY_RATE = 0.4  # share of low-quality images
QUALITY_LABELLED_RATE = 814 / 2444  # the paper's technician labelled 814 of 2444 images
DEGRADATIONS: tuple[str, ...] = ("noise", "gain", "clipping", "dropout")
_CHUNK = 128


def _bump(tau: np.ndarray, start, rise, fall) -> np.ndarray:
    """A wave [..., W] on beat-local time ``tau``: rises over ``rise``, falls over ``fall``."""
    x = tau - start
    up = np.clip(x / rise, 0, 1) ** 0.8
    down = np.clip(1 - (x - rise) / fall, 0, 1) ** 1.2
    return np.where(x < rise, up, down) * (x >= 0)


def _jet(tau: np.ndarray, start, duration) -> np.ndarray:
    """A rounded parabolic jet [..., W]: 0 at its ends, 1 at its middle."""
    x = (tau - start) / duration
    return np.clip(1 - (2 * x - 1) ** 2, 0, 1) ** 0.6


def _envelopes(p: dict[str, np.ndarray], size: int) -> tuple[np.ndarray, np.ndarray]:
    """Envelope heights in pixels above (``pos``) and below (``neg``) the baseline, [N, W]."""
    t = (np.arange(size, dtype=np.float32) + 0.5) / size
    period = p["period"][:, None]
    tau = np.mod(t[None, :] - p["phase"][:, None], period) / period
    flow = p["flow"][:, None]
    e = _bump(tau, p["e_start"][:, None], 0.09, p["e_fall"][:, None])
    a = _bump(tau, p["a_start"][:, None], 0.07, 0.1)
    mv = p["amp"][:, None] * np.maximum(e, p["a_ratio"][:, None] * a)
    s_wave = _bump(tau, 0.08, 0.08, 0.12)
    ma_pos = 0.6 * p["amp"][:, None] * s_wave
    ma_neg = p["amp"][:, None] * np.maximum(
        _bump(tau, p["e_start"][:, None], 0.05, 0.08),
        p["a_ratio"][:, None] * _bump(tau, p["a_start"][:, None], 0.04, 0.07),
    )
    tr = p["amp"][:, None] * _jet(tau, 0.05, p["jet_len"][:, None])
    pos = np.where(flow == 0, mv, np.where(flow == 1, ma_pos, 0.0))
    neg = np.where(flow == 1, ma_neg, np.where(flow == 2, tr, 0.0))
    room_up, room_down = p["baseline"] * size, (1 - p["baseline"]) * size
    # amplitudes are fractions of the room on that side; "clipping" pushes them past the edge
    return pos * room_up[:, None], neg * room_down[:, None]


def _draw_parameters(rng: np.random.Generator, n: int) -> dict[str, np.ndarray]:
    """Per-image parameters [N]: heart rate per patient, flow, shape, gain and degradations."""
    patient = assign_patients(rng, n, max_images=3)
    n_pat = int(patient[-1]) + 1
    p: dict[str, np.ndarray] = {"patient": patient}
    p["period"] = rng.uniform(0.4, 0.65, n_pat)[patient] * rng.uniform(0.95, 1.05, n)
    p["phase"] = rng.uniform(0, 0.65, n)
    flow = rng.choice(len(FLOWS), size=n, p=FLOW_PROBS)
    p["flow"] = flow
    baseline = {0: (0.6, 0.85), 1: (0.4, 0.65), 2: (0.12, 0.35)}
    amp = {0: (0.4, 0.8), 1: (0.3, 0.55), 2: (0.55, 0.9)}
    lo = np.select([flow == k for k in baseline], [baseline[k][0] for k in baseline])
    hi = np.select([flow == k for k in baseline], [baseline[k][1] for k in baseline])
    p["baseline"] = rng.uniform(lo, hi)
    lo = np.select([flow == k for k in amp], [amp[k][0] for k in amp])
    hi = np.select([flow == k for k in amp], [amp[k][1] for k in amp])
    p["amp"] = rng.uniform(lo, hi)
    p["e_start"], p["e_fall"] = rng.uniform(0.36, 0.44, n), rng.uniform(0.14, 0.22, n)
    p["a_start"] = p["e_start"] + 0.07 + p["e_fall"] + rng.uniform(0.0, 0.06, n)
    p["a_ratio"] = rng.uniform(0.5, 1.3, n)
    p["jet_len"] = rng.uniform(0.35, 0.5, n)
    p["fill"] = np.where(flow == 2, rng.uniform(0.55, 0.8, n), rng.uniform(0.15, 0.4, n))
    p["gain"] = rng.uniform(0.65, 1.05, n)
    p["noise"] = rng.uniform(0.02, 0.07, n)
    low = rng.random(n) < LOW_QUALITY_RATE
    p["low"] = low
    kinds = rng.random((n, len(DEGRADATIONS))) < 0.35
    kinds[np.arange(n), rng.integers(0, len(DEGRADATIONS), n)] = True  # at least one
    kinds &= low[:, None]
    for k, name in enumerate(DEGRADATIONS):
        p[f"low_{name}"] = kinds[:, k]
    p["noise"] = np.where(p["low_noise"], rng.uniform(0.25, 0.45, n), p["noise"])
    p["gain"] = np.where(p["low_gain"], rng.uniform(1.7, 2.6, n), p["gain"])
    p["amp"] = np.where(p["low_clipping"], rng.uniform(1.15, 1.5, n), p["amp"])
    p["labelled"] = rng.random(n) < QUALITY_LABELLED_RATE
    return p


def _render_chunk(
    p: dict[str, np.ndarray], rng: np.random.Generator, size: int
) -> tuple[np.ndarray, np.ndarray]:
    """Render one chunk: (float images [N, H, W] on 0-1, envelope masks {0, 1})."""
    n = len(p["flow"])
    _, v = unit_grid(size)
    y = v * size  # pixel rows, [1, H, 1]
    base = col(p["baseline"]) * size
    pos, neg = _envelopes(p, size)
    up = np.clip(base - y, 0, None)  # pixels above the baseline
    down = np.clip(y - base, 0, None)
    pos3, neg3 = pos[:, None, :], neg[:, None, :]
    mask = ((up > 0) & (up <= pos3) & (pos3 >= 1)) | ((down > 0) & (down <= neg3) & (neg3 >= 1))

    # relative velocity inside the envelope: 0 at the baseline, 1 at the envelope
    rel = np.where(up > 0, up / np.maximum(pos3, 1), down / np.maximum(neg3, 1))
    fill = col(p["fill"])
    profile = fill + (1 - fill) * np.clip(rel, 0, 1) ** 1.5
    speckle = rng.gamma(2.0, 0.5, (n, size, size)).astype(np.float32)
    speckle = blur_batch(speckle, 0.4 * size / 64, 0.9 * size / 64)  # streaks along time
    signal = blur_batch((profile * mask).astype(np.float32), 0.5 * size / 64)
    img = 0.85 * signal * speckle
    background = col(p["noise"]) * rng.gamma(1.5, 1 / 1.5, (n, size, size)).astype(np.float32)
    img = (img + background) * col(p["gain"])

    line = np.exp(-((y - base) ** 2) / (2 * (0.6 * size / 64) ** 2))
    img = np.maximum(img, 0.75 * line)
    dropout_cols = _dropout_columns(rng, p["low_dropout"], size)
    img = img * np.where(dropout_cols, rng.uniform(0.03, 0.2, (n, 1, 1)), 1.0)
    return img.astype(np.float32), mask


def _dropout_columns(rng: np.random.Generator, on: np.ndarray, size: int) -> np.ndarray:
    """Boolean [N, 1, W]: 2-5 dark time bands per image where ``on``, none elsewhere."""
    n = len(on)
    x = np.arange(size)[None, None, :]
    bands = np.zeros((n, 1, size), bool)
    for _ in range(5):
        start = rng.integers(0, size, (n, 1, 1))
        width = rng.integers(1, max(2, size // 16) + 1, (n, 1, 1))
        used = (rng.random((n, 1, 1)) < 0.7) & on[:, None, None]
        bands |= used & (x >= start) & (x < start + width)
    return bands


def generate_doppler(n: int, size: int = 64, seed: int = 0) -> SyntheticBatch:
    """Generate ``n`` Doppler-like spectral images of ``size`` x ``size`` pixels.

    Returns a batch with images uint8 [n, size, size] (0-255), envelope masks {0, 1} and labels
    with columns sample_id, patient_id, flow (MV/MA/TR), quality (good/low, ``pd.NA`` for
    about two thirds of the images).
    """
    if n < 1 or size < 16:
        raise ValueError(f"doppler synthesis needs n >= 1 and size >= 16, got n={n}, size={size}")
    rng = np.random.default_rng([seed, 0xD0])
    p = _draw_parameters(rng, n)
    images = np.empty((n, size, size), np.uint8)
    masks = np.empty((n, size, size), np.uint8)
    for start in range(0, n, _CHUNK):
        chunk = {k: val[start : start + _CHUNK] for k, val in p.items()}
        img, mask = _render_chunk(chunk, rng, size)
        images[start : start + _CHUNK] = to_uint8(img)
        masks[start : start + _CHUNK] = mask
    quality = pd.array(np.where(p["low"], "low", "good"), dtype="string")
    quality[~p["labelled"]] = pd.NA
    labels = pd.DataFrame(
        {
            "sample_id": [f"doppler-{i:05d}" for i in range(n)],
            "patient_id": patient_ids("doppler", p["patient"]),
            "flow": np.asarray(FLOWS)[p["flow"]],
            "quality": quality,
        }
    )
    return SyntheticBatch(images=images, masks=masks, labels=labels)
