"""A torch Dataset over a preprocessing cache, with per-task labels and optional augmentation.

Normalization (the paper's "mean normalization", applied here at load time, after augmentation):
the cached pixels are scaled to 0-1 (``/255`` for uint8 caches, ``/65535`` for uint16) and each
image's own mean is subtracted, so every image has mean 0 on the 0-1 scale. The subtracted mean
is returned as ``image_mean`` so callers can undo it (``image + image_mean`` is back on 0-1).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset
from torchvision import tv_tensors
from torchvision.transforms import v2

from umsrep.data import MASK_COLUMN, is_mask_column
from umsrep.data.cache import Cache

# augment(image, mask) -> (image, mask); image tv_tensors.Image [1,S,S] float 0-1,
# mask tv_tensors.Mask [C,S,S] uint8 0/1 (C = 1, plus one channel per further mask column a
# task reads, so every mask moves with the image).
Augment = Callable[[tv_tensors.Image, tv_tensors.Mask], tuple[torch.Tensor, torch.Tensor]]


@dataclass(frozen=True)
class TaskLabel:
    """Where a task's target comes from.

    ``column``: a manifest label column, or for a segmentation task ``"mask"`` (the manifest's
    ``mask_path``) or ``"mask_<name>"`` (its ``mask_<name>_path``, e.g. ``mask_heart``).
    ``classes``: class names in index order; a value is matched by ``str(value)`` and values not
    listed are missing (-1). ``None``: the column's integer value is the class index.
    """

    column: str
    classes: tuple[str, ...] | None = None


def _label_array(index: pd.DataFrame, task: str, label: TaskLabel) -> np.ndarray:
    """int64 [N]: class index per row, -1 where the label is missing or not in ``classes``."""
    if is_mask_column(label.column):
        flag = f"has_{label.column}"
        if flag not in index.columns:
            known = sorted(c[len("has_"):] for c in index.columns if c.startswith("has_mask"))
            raise KeyError(f"task {task!r}: no mask column {label.column!r} in the cache; "
                           f"known: {known}")
        return np.where(index[flag].to_numpy(bool), 1, -1).astype(np.int64)
    if label.column not in index.columns:
        raise KeyError(
            f"task {task!r}: column {label.column!r} not in the cache index; "
            f"known: {sorted(index.columns)}"
        )
    col = index[label.column]
    if label.classes is not None:
        lookup = {name: i for i, name in enumerate(label.classes)}
        return np.array(
            [-1 if pd.isna(v) else lookup.get(str(v), -1) for v in col], dtype=np.int64
        )
    numeric = pd.to_numeric(col, errors="coerce").astype("Float64")
    is_int = numeric.notna() & (numeric == numeric.round()) & (numeric >= 0)
    return np.where(is_int.fillna(False), numeric.fillna(-1), -1).astype(np.int64)


class CachedDataset(Dataset):
    """Items of a cache: ``image`` [1,S,S] float32 mean-normalized, ``image_mean`` [],
    ``mask`` [1,S,S] float32 0/1 (zeros when absent), ``has_mask`` bool [], ``labels``
    {task: int64 [] (-1 = missing)}, ``sample_id`` str; and for each further mask column a
    task reads (``mask_heart``), ``<column>`` [1,S,S] and ``has_<column>`` the same way.
    """

    def __init__(
        self,
        cache: Cache,
        indices: Sequence[int] | None = None,
        tasks: Mapping[str, TaskLabel] | None = None,
        augment: Augment | None = None,
    ) -> None:
        self.cache = cache
        self.indices = np.arange(len(cache.index)) if indices is None else np.asarray(indices)
        self.augment = augment
        self.scale = 65535.0 if cache.images.dtype == np.uint16 else 255.0
        self.has_mask = cache.index["has_mask"].to_numpy(bool)
        self.sample_ids = cache.index["sample_id"].astype(str).tolist()
        self.labels = {t: _label_array(cache.index, t, lab) for t, lab in (tasks or {}).items()}
        self.extra_masks = sorted({lab.column for lab in (tasks or {}).values()
                                   if is_mask_column(lab.column) and lab.column != MASK_COLUMN})
        self.extra_has = {c: cache.index[f"has_{c}"].to_numpy(bool) for c in self.extra_masks}

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, item: int) -> dict:
        i = int(self.indices[item])
        image = torch.from_numpy(np.asarray(self.cache.images[i], dtype=np.float32))[None]
        image = image / self.scale
        masks = [self.cache.masks[i], *(self.cache.mask_array(c)[i] for c in self.extra_masks)]
        mask = torch.from_numpy(np.stack(masks))
        if self.augment is not None:
            image, mask = self.augment(tv_tensors.Image(image), tv_tensors.Mask(mask))
            image, mask = image.as_subclass(torch.Tensor), mask.as_subclass(torch.Tensor)
        mean = image.mean()
        item = {
            "image": image - mean,
            "image_mean": mean,
            "mask": mask[:1].to(torch.float32),
            "has_mask": torch.tensor(bool(self.has_mask[i])),
            "labels": {t: torch.tensor(arr[i]) for t, arr in self.labels.items()},
            "sample_id": self.sample_ids[i],
        }
        for k, column in enumerate(self.extra_masks, start=1):
            item[column] = mask[k : k + 1].to(torch.float32)
            item[f"has_{column}"] = torch.tensor(bool(self.extra_has[column][i]))
        return item


def _clamp01(x: tv_tensors.Image) -> tv_tensors.Image:
    # still an Image, so transforms composed after this one see the image as such
    return tv_tensors.wrap(x.clamp(0, 1), like=x)


class RandomAspect(v2.Transform):
    """Stretch one axis by a random factor, keeping the ``S x S`` size (centre crop / zero pad).

    Radiographs come with different aspect ratios and fields of view (Shenzhen is square,
    Montgomery 421x512); jittering the aspect teaches a head that lung shape varies with them.
    Image and mask get the same factor (the mask with nearest neighbour).
    """

    def __init__(self, ratio: tuple[float, float] = (0.85, 1.15)) -> None:
        super().__init__()
        self.ratio = (float(ratio[0]), float(ratio[1]))

    def make_params(self, flat_inputs: list) -> dict:
        r = float(torch.empty(()).uniform_(*self.ratio))
        return {"ratio": r, "axis": int(torch.randint(0, 2, ()))}

    def transform(self, inpt, params: dict):
        if not isinstance(inpt, (tv_tensors.Image, tv_tensors.Mask)):
            return inpt
        h, w = inpt.shape[-2:]
        size = [h, max(1, round(w * params["ratio"]))] if params["axis"] else \
            [max(1, round(h * params["ratio"])), w]
        out = v2.functional.resize(inpt, size, antialias=True)
        return v2.functional.center_crop(out, [h, w])


def build_cxr_augment(
    rotation: float = 5,
    translate: float = 0.05,
    scale: tuple[float, float] = (0.9, 1.1),
    brightness: float = 0.1,
    contrast: float = 0.1,
    aspect: tuple[float, float] | None = (0.85, 1.15),
    geometry: float = 0.5,
) -> v2.Compose:
    """Joint image/mask augmentation for chest X-rays (0-1 float image, 0/1 mask).

    With probability ``geometry``, aspect jitter (one axis stretched by ``aspect``,
    ``RandomAspect``) then a small affine (degrees, fraction of size, zoom factor), applied
    identically to image and mask (the mask with nearest neighbour); then brightness/contrast
    jitter on the image only. No horizontal flip: it would move the heart to the wrong side.
    The other images keep their pixels as a test image does (``umsrep.data.augment.CxrAugment``
    says why).
    """
    first = [RandomAspect(aspect)] if aspect else []
    moves = [*first, v2.RandomAffine(degrees=rotation, translate=(translate, translate),
                                     scale=scale)]
    return v2.Compose(
        [
            v2.RandomApply(moves, p=geometry) if geometry < 1 else v2.Compose(moves),
            v2.ColorJitter(brightness=brightness, contrast=contrast),
            v2.Lambda(_clamp01, tv_tensors.Image),
        ]
    )
