"""Synthetic chest X-ray-like images with lung masks and pneumonia labels.

Each image is a frontal "chest": a bright body with a mediastinum and heart, two dark lung
fields (their union, minus the heart, is the mask), posterior ribs, lung markings, noise and a
random exposure (contrast, brightness, gamma). Labels mirror the paper's CXR tasks:

- ``diagnosis``: normal (about 1/2), bacterial (1/3: one or two focal dense consolidations
  inside a lung), viral (1/6: a diffuse bilateral reticular and hazy pattern);
- ``abnormal``: 1 when the diagnosis is not normal (the Shenzhen/Montgomery task).

Lesion strength varies from subtle to obvious, and exposure varies between images, so the
classes overlap in global intensity: a model has to look at texture and shape inside the lungs.
Images of one patient (1-2 per patient) share anatomy and diagnosis.
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
    smooth_noise,
    to_uint8,
    unit_grid,
)

DIAGNOSES: tuple[str, ...] = ("normal", "bacterial", "viral")
DIAGNOSIS_PROBS: tuple[float, ...] = (0.5, 1 / 3, 1 / 6)
_CHUNK = 128  # images rendered at once: bounds memory at large sizes


def _sigmoid_inside(d: np.ndarray, softness: float) -> np.ndarray:
    """Soft indicator of ``d <= 1`` (d: normalised squared radius of a shape)."""
    return 1.0 / (1.0 + np.exp(np.clip((d - 1.0) / softness, -30, 30)))


def _lung_radius(u, v, cx, cy, a, b, tilt) -> np.ndarray:
    """Normalised radius [N, H, W] of a lung: a tilted superellipse, narrow at the apex and wide
    at the base. All arguments broadcast; lengths are fractions of the image side."""
    x, y = u - cx, v - cy
    xr = x * np.cos(tilt) + y * np.sin(tilt)
    yr = -x * np.sin(tilt) + y * np.cos(tilt)
    width = a * (0.65 + 0.45 * np.clip((yr / b + 1.0) / 2.0, 0.0, 1.0))
    return np.abs(xr / width) ** 2.4 + np.abs(yr / b) ** 2.4


def _ellipse_radius(u, v, cx, cy, a, b, power: float = 2.0) -> np.ndarray:
    """Normalised radius of an axis-aligned (super)ellipse; power > 2 makes it boxier."""
    return np.abs((u - cx) / a) ** power + np.abs((v - cy) / b) ** power


def _draw_parameters(rng: np.random.Generator, n: int) -> dict[str, np.ndarray]:
    """Per-image parameters [N]: anatomy and diagnosis per patient, pose and exposure per image."""
    patient = assign_patients(rng, n, max_images=2)
    n_pat = int(patient[-1]) + 1 if n else 0
    per_patient = {
        "diagnosis": rng.choice(len(DIAGNOSES), size=n_pat, p=DIAGNOSIS_PROBS),
        "sep": rng.uniform(0.17, 0.21, n_pat),
        "lung_y": rng.uniform(0.43, 0.49, n_pat),
        "lung_a": rng.uniform(0.12, 0.155, n_pat),
        "lung_b": rng.uniform(0.25, 0.31, n_pat),
        "tilt": np.deg2rad(rng.uniform(3.0, 10.0, n_pat)),
        "heart_a": rng.uniform(0.13, 0.17, n_pat),
        "heart_b": rng.uniform(0.1, 0.13, n_pat),
        "heart_x": rng.uniform(0.55, 0.59, n_pat),
        "body_a": rng.uniform(0.42, 0.48, n_pat),
        "med_w": rng.uniform(0.035, 0.055, n_pat),
    }
    p = {k: val[patient] for k, val in per_patient.items()}
    p["patient"] = patient
    p["dx"], p["dy"] = rng.uniform(-0.03, 0.03, n), rng.uniform(-0.03, 0.03, n)
    p["scale"] = rng.uniform(0.93, 1.07, n)
    p["rot"] = np.deg2rad(rng.uniform(-4.0, 4.0, n))
    p["air"], p["body"] = rng.uniform(0.03, 0.12, n), rng.uniform(0.55, 0.68, n)
    p["depth"] = rng.uniform(0.28, 0.4, n)
    p["rib_amp"], p["rib_period"] = rng.uniform(0.04, 0.09, n), rng.uniform(0.075, 0.095, n)
    p["rib_phase"] = rng.uniform(0, 2 * np.pi, n)
    p["contrast"], p["bright"] = rng.uniform(0.8, 1.2, n), rng.uniform(-0.07, 0.07, n)
    p["gamma"] = np.exp(rng.uniform(-0.25, 0.25, n))
    p["noise"] = rng.uniform(0.008, 0.03, n)
    severity = rng.uniform(0.1, 1.0, n)
    bacterial, viral = p["diagnosis"] == 1, p["diagnosis"] == 2
    for k in (0, 1):  # up to two consolidations; the second only in about a third of cases
        present = bacterial & ((k == 0) | (rng.random(n) < 0.35))
        p[f"les{k}_amp"] = np.where(present, 0.08 + 0.26 * severity, 0.0)
        p[f"les{k}_side"] = rng.integers(0, 2, n)
        r, phi = 0.6 * np.sqrt(rng.random(n)), rng.uniform(0, 2 * np.pi, n)
        p[f"les{k}_ox"], p[f"les{k}_oy"] = r * np.cos(phi), r * np.sin(phi)
        p[f"les{k}_rad"] = rng.uniform(0.045, 0.09, n)
    p["viral_amp"] = np.where(viral, 0.05 + 0.15 * severity, 0.0)
    return p


def _render_chunk(
    p: dict[str, np.ndarray], rng: np.random.Generator, size: int
) -> tuple[np.ndarray, np.ndarray]:
    """Render the images of one parameter chunk: (float images [N, H, W] 0-1, masks {0,1})."""
    n = len(p["patient"])
    u0, v0 = unit_grid(size)
    # pose: rotate/scale/shift the sampling grid, so every shape below moves together
    cos, sin, s = np.cos(col(p["rot"])), np.sin(col(p["rot"])), col(p["scale"])
    x, y = u0 - 0.5 - col(p["dx"]), v0 - 0.5 - col(p["dy"])
    u, v = (cos * x + sin * y) / s + 0.5, (-sin * x + cos * y) / s + 0.5

    lung_y, a, b, tilt = col(p["lung_y"]), col(p["lung_a"]), col(p["lung_b"]), col(p["tilt"])
    centres = (0.5 - col(p["sep"]), 0.5 + col(p["sep"]))
    d_lungs = [
        _lung_radius(u, v, cx, lung_y, a, b, t)
        for cx, t in zip(centres, (tilt, -tilt), strict=True)
    ]
    d_heart = _ellipse_radius(
        u, v, col(p["heart_x"]), lung_y + 0.55 * b, col(p["heart_a"]), col(p["heart_b"])
    )
    in_med = np.abs(u - 0.5) < col(p["med_w"])
    mask = ((d_lungs[0] <= 1) | (d_lungs[1] <= 1)) & (d_heart > 1) & ~in_med

    soft = 0.12 * 64 / size + 0.05
    lung = np.maximum(*(_sigmoid_inside(d, soft) for d in d_lungs))
    heart = _sigmoid_inside(d_heart, soft)
    med = 1.0 / (1.0 + np.exp(np.clip((np.abs(u - 0.5) - col(p["med_w"])) / 0.01, -30, 30)))
    lung = lung * (1 - heart) * (1 - med)
    body = _sigmoid_inside(_ellipse_radius(u, v, 0.5, 0.62, col(p["body_a"]), 0.62, 3.0), 0.08)

    img = col(p["air"]) + body * (col(p["body"]) - col(p["air"]))
    img = img + 0.12 * np.maximum(med, heart) * body - col(p["depth"]) * lung
    phase = 2 * np.pi * (v - 0.3 * np.abs(u - 0.5)) / col(p["rib_period"]) + col(p["rib_phase"])
    ribs = np.clip((np.cos(phase) - 0.3) / 0.7, 0, 1) ** 2
    img = img + col(p["rib_amp"]) * ribs * (0.3 * body + 0.7 * lung) * (v < lung_y + 0.7 * b)
    markings = smooth_noise(rng, n, size, 0.02)
    img = img + 0.02 * markings * lung

    for k in (0, 1):
        side = p[f"les{k}_side"]
        cx = np.where(side == 0, 0.5 - p["sep"], 0.5 + p["sep"]) + p[f"les{k}_ox"] * p["lung_a"]
        cy = p["lung_y"] + p[f"les{k}_oy"] * p["lung_b"]
        rad = col(p[f"les{k}_rad"])
        blob = np.exp(-((u - col(cx)) ** 2 + (v - col(cy)) ** 2) / (2 * rad**2))
        blob = blob * (1 + 0.7 * smooth_noise(rng, n, size, 0.03))
        dense = np.clip((blob - 0.3) / 0.4, 0, 1)
        img = img + col(p[f"les{k}_amp"]) * dense * lung

    fine = rng.standard_normal((n, size, size)).astype(np.float32)
    lines = blur_batch(fine, 0.7 * size / 64) - blur_batch(fine, 2.0 * size / 64)
    reticular = np.clip(np.abs(lines) / (lines.std(axis=(1, 2), keepdims=True) + 1e-6) - 0.5, 0, 2)
    haze = 0.6 + 0.4 * smooth_noise(rng, n, size, 0.08)
    perihilar = 0.6 + 0.8 * np.clip(1 - np.abs(u - 0.5) / 0.35, 0, 1) * np.clip(v, 0, 1)
    img = img + col(p["viral_amp"]) * (0.45 * reticular + haze) * perihilar * lung

    img = np.clip(img, 0, 1) ** col(p["gamma"]) * col(p["contrast"]) + col(p["bright"])
    img = blur_batch(img.astype(np.float32), 0.5 * size / 64)
    img = img + col(p["noise"]) * rng.standard_normal((n, size, size)).astype(np.float32)
    return img, mask


def generate_cxr(n: int, size: int = 64, seed: int = 0) -> SyntheticBatch:
    """Generate ``n`` CXR-like images of ``size`` x ``size`` pixels, deterministic for a seed.

    Returns a batch with images uint8 [n, size, size] (0-255), lung masks {0, 1} of the same
    shape and labels with columns sample_id, patient_id, abnormal (Int64 0/1), diagnosis.
    """
    if n < 1 or size < 16:
        raise ValueError(f"cxr synthesis needs n >= 1 and size >= 16, got n={n}, size={size}")
    rng = np.random.default_rng([seed, 0xC0])
    p = _draw_parameters(rng, n)
    images = np.empty((n, size, size), np.uint8)
    masks = np.empty((n, size, size), np.uint8)
    for start in range(0, n, _CHUNK):
        chunk = {k: val[start : start + _CHUNK] for k, val in p.items()}
        img, mask = _render_chunk(chunk, rng, size)
        images[start : start + _CHUNK] = to_uint8(img)
        masks[start : start + _CHUNK] = mask
    diagnosis = np.asarray(DIAGNOSES)[p["diagnosis"]]
    labels = pd.DataFrame(
        {
            "sample_id": [f"cxr-{i:05d}" for i in range(n)],
            "patient_id": patient_ids("cxr", p["patient"]),
            "abnormal": pd.array((diagnosis != "normal").astype(int), dtype="Int64"),
            "diagnosis": diagnosis,
        }
    )
    return SyntheticBatch(images=images, masks=masks, labels=labels)
