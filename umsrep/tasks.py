"""A target task: what a head predicts, from which label column, with which loss.

A ``Task`` reads its target out of a batch produced by ``umsrep.data.dataset.CachedDataset``
through a default-collate DataLoader::

    batch = {
        "image": Tensor [B, 1, S, S] float (per-image mean-centred, 0-1 pixel scale),
        "image_mean": Tensor [B],
        "mask": Tensor [B, 1, S, S] float 0/1,
        "has_mask": Tensor [B] bool,
        "mask_<name>", "has_mask_<name>": the same, per further mask a task reads (mask_heart),
        "labels": {task name: Tensor [B] int64, -1 where the label is missing},
        "sample_id": list[str],
    }
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from umsrep.config import ConfigError, from_dict
from umsrep.data import is_mask_column

if TYPE_CHECKING:  # annotations only: an experiment file's tasks load without torch
    import torch

TaskKind = Literal["classification", "segmentation", "denoise"]

_DEFAULT_HEAD = {
    "classification": "classification",
    "segmentation": "seg_cdae",
    "denoise": "denoise",
}
_DEFAULT_LOSS = {"classification": "cross_entropy", "segmentation": "bce_dice", "denoise": "mse"}


#: Task kind -> the validation metrics its stages report (``val/<task>/<metric>``), in report
#: order; ``umsrep.metrics`` computes them.
KIND_METRICS: dict[str, tuple[str, ...]] = {
    "classification": ("accuracy", "f1", "mcc", "auc"),
    "segmentation": ("iou", "dice", "pixel_accuracy"),
    "denoise": ("psnr", "ssim", "ms_ssim"),
}


@dataclass(frozen=True)
class Task:
    """One target task of a multi-task model, and an experiment file's ``tasks:`` entry.

    ``column`` is the label column (classification), ``"mask"`` or ``"mask_<name>"``
    (segmentation: the manifest's ``mask_path`` / ``mask_<name>_path``, e.g. ``mask_heart``) or
    ``""`` (denoise). ``classes`` lists label values in class-index order (classification only;
    ``None`` in an experiment file: the runner takes the label column's values, ``build_tasks``).
    ``head``/``loss`` default to the kind's usual head and loss (``classification`` /
    ``cross_entropy``, ``seg_cdae`` / ``bce_dice``, ``denoise`` / ``mse``); ``loss_kwargs`` are
    the loss's own options (``bce_dice``: ``w_bce``, ``w_dice``, ``smooth``; ``cross_entropy``:
    ``label_smoothing``), checked against ``umsrep/catalog.py`` when the file is loaded.
    """

    name: str
    kind: TaskKind
    column: str = ""
    classes: tuple[str, ...] | None = None
    head: str = ""
    head_kwargs: dict[str, Any] = field(default_factory=dict, hash=False)
    loss: str = ""
    loss_kwargs: dict[str, Any] = field(default_factory=dict, hash=False)
    loss_weight: float = 1.0  # joint strategy, fixed weighting

    def __post_init__(self) -> None:
        """Kind-based defaults and the checks that need no data. A mistake raises
        ``ConfigError`` naming the field and the task (an experiment file's loader puts
        ``tasks[i].`` before the field)."""
        if self.kind not in _DEFAULT_HEAD:
            self._refuse("kind", f"{self.kind!r} is not one of {', '.join(_DEFAULT_HEAD)}")
        if not self.head:
            object.__setattr__(self, "head", _DEFAULT_HEAD[self.kind])
        if not self.loss:
            object.__setattr__(self, "loss", _DEFAULT_LOSS[self.kind])
        if self.classes is not None:
            object.__setattr__(self, "classes", tuple(str(c) for c in self.classes))
        if self.kind == "segmentation" and not self.column:
            object.__setattr__(self, "column", "mask")
        if self.kind == "classification":
            if not self.column:
                self._refuse("column", "a classification task needs a label column")
            if self.classes is not None and len(self.classes) < 2:
                self._refuse("classes", "give at least two classes (label values in class-index "
                             f"order), got {list(self.classes)}")
            if self.head.startswith("seg"):
                self._refuse("head", f"{self.head!r} is a segmentation head")
        if self.kind == "segmentation":
            if not is_mask_column(self.column):
                self._refuse("column", "a segmentation task's target is 'mask' or 'mask_<name>' "
                             f"(a manifest column mask_<name>_path), got {self.column!r}")
            if self.head == "classification":
                self._refuse("head", "a segmentation task needs a segmentation head")
        if self.kind == "denoise" and self.column:
            self._refuse("column", "a denoise task has no label column")
        if self.loss_weight < 0:
            self._refuse("loss_weight", "must be >= 0")

    def _refuse(self, field_name: str, reason: str) -> None:
        raise ConfigError(field_name, f"task {self.name!r}: {reason}")

    @classmethod
    def from_dict(cls, data: dict[str, Any], key: str = "task") -> Task:
        """Build a Task from a mapping; unknown keys raise ``ConfigError`` naming the key."""
        return from_dict(cls, data, key)

    @property
    def num_classes(self) -> int:
        """Head output channels: ``len(classes)`` for classification, 1 otherwise."""
        if self.kind != "classification":
            return 1
        if self.classes is None:
            raise ValueError(f"task {self.name!r}: its classes are not known yet (an "
                             "experiment's task gets them from the data: build_tasks)")
        return len(self.classes)

    def target(self, batch: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
        """``(target, valid)`` of this task in ``batch``; ``valid`` is a ``[B]`` bool tensor.

        classification: int64 class indices ``[B]`` from ``labels[name]`` (or
        ``labels[column]``); missing labels are -1 and invalid;
        segmentation: the mask ``[B, 1, S, S]`` (0/1) under ``column``, valid where
        ``has_<column>``;
        denoise: the clean image ``[B, 1, S, S]``, all valid (the noisy input is made by the
        training step).
        """
        image = batch["image"]
        if self.kind == "denoise":
            return image, image.new_ones(image.shape[0]).bool()
        if self.kind == "segmentation":
            if self.column not in batch:
                raise KeyError(f"task {self.name!r}: the batch has no mask {self.column!r}; "
                               "give the dataset this task's TaskLabel")
            return batch[self.column], batch[f"has_{self.column}"].bool()
        labels = batch.get("labels", {})
        key = self.name if self.name in labels else self.column
        if key not in labels:
            known = ", ".join(sorted(labels)) or "(none)"
            raise KeyError(
                f"task {self.name!r}: the batch has no labels under {self.name!r} or "
                f"{self.column!r} (has: {known}); give the dataset this task's label column"
            )
        y = labels[key].long()
        return y, (y >= 0) & (y < self.num_classes)

    def num_valid(self, batch: dict[str, Any]) -> int:
        """Number of samples of ``batch`` that carry a target for this task."""
        return int(self.target(batch)[1].sum())
