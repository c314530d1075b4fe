"""Test helpers (imported by tests/strategies and tests/train): tiny multi-task models and data shaped like ``CachedDataset`` batches (32 px, tiny widths)."""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from umsrep.models import MultiTaskModel, build_backbone, build_head
from umsrep.noise import NoiseConfig
from umsrep.tasks import Task

# One thread: the test machine's 2 cores are shared, and small convs gain nothing from more.
torch.set_num_threads(1)

SIZE = 32
TASKS = (
    Task(name="lung", kind="segmentation", column="mask", head="seg_cdae"),
    Task(name="abnormal", kind="classification", column="abnormal", classes=("normal", "abn")),
    Task(name="denoise", kind="denoise"),
)
NOISE = NoiseConfig(kinds=("gaussian",), sigmas=(20.0,))


class ToyCxr(Dataset):
    """Items like ``CachedDataset``: a bright square (the 'lung' mask) on a noisy background;
    ``abnormal`` = 1 when a dark spot sits inside the square. ``missing`` is the fraction of
    samples whose classification label is -1 and whose mask is absent."""

    def __init__(self, n: int, seed: int = 0, missing: float = 0.0, size: int = SIZE) -> None:
        rng = np.random.default_rng(seed)
        self.images = rng.uniform(0.1, 0.3, (n, 1, size, size)).astype(np.float32)
        self.masks = np.zeros((n, 1, size, size), np.float32)
        self.labels = rng.integers(0, 2, n)
        for i in range(n):
            a, b = rng.integers(2, size // 3, 2)
            self.masks[i, 0, a : a + size // 2, b : b + size // 2] = 1
            self.images[i, 0][self.masks[i, 0] > 0] += 0.5
            if self.labels[i]:
                self.images[i, 0, a + 4 : a + 8, b + 4 : b + 8] = 0.05
        self.has_mask = rng.uniform(size=n) >= missing
        self.labels = np.where(rng.uniform(size=n) < missing, -1, self.labels)
        self.ids = [f"toy-{seed}-{i}" for i in range(n)]

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i: int) -> dict:
        image = torch.from_numpy(self.images[i])
        mean = image.mean()
        return {
            "image": image - mean,
            "image_mean": mean,
            "mask": torch.from_numpy(self.masks[i]) * float(self.has_mask[i]),
            "has_mask": torch.tensor(bool(self.has_mask[i])),
            "labels": {
                "abnormal": torch.tensor(int(self.labels[i])),
                "lung": torch.tensor(1 if self.has_mask[i] else -1),
            },
            "sample_id": self.ids[i],
        }


def make_model(tasks=TASKS, seed: int = 0) -> MultiTaskModel:
    torch.manual_seed(seed)
    backbone = build_backbone("cdae", preset="tiny")
    heads = {
        t.name: build_head(t.head, backbone, num_classes=t.num_classes, preset="tiny")
        for t in tasks
    }
    return MultiTaskModel(backbone, heads)


def make_loaders(n=(8, 12, 6), batch_size=4, shared=False, missing=0.0, seed=0, tasks=TASKS):
    """One loader per task (different sizes), or one shared loader for every task."""
    if shared:
        loader = DataLoader(ToyCxr(n[0], seed, missing), batch_size=batch_size, shuffle=True)
        return {t.name: loader for t in tasks}
    return {
        t.name: DataLoader(ToyCxr(k, seed + i, missing), batch_size=batch_size, shuffle=True)
        for i, (t, k) in enumerate(zip(tasks, n, strict=False))
    }


def snapshot(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Parameters and buffers (BN running stats included), cloned."""
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def changed(before: dict[str, torch.Tensor], module: torch.nn.Module) -> set[str]:
    now = module.state_dict()
    return {k for k, v in before.items() if not torch.equal(v, now[k])}
