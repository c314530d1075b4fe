"""Input conversion shared by the metric functions (numpy or torch in, checked tensors out)."""

from __future__ import annotations

import numpy as np
import torch

ArrayLike = np.ndarray | torch.Tensor


def to_tensor(values: ArrayLike | list, name: str) -> torch.Tensor:
    """Return ``values`` as a CPU tensor, detached; lists and numpy arrays are accepted."""
    if isinstance(values, torch.Tensor):
        return values.detach().cpu()
    array = np.asarray(values)
    if array.dtype == object:
        raise ValueError(f"{name}: expected numbers, got an object array; convert labels to ints")
    array = np.ascontiguousarray(array)
    if not array.flags.writeable:  # e.g. a read-only view of the memory-mapped cache
        array = array.copy()
    return torch.from_numpy(array)


def to_numpy(values: ArrayLike | list) -> np.ndarray:
    """Return ``values`` as a numpy array (detached, on the CPU)."""
    if isinstance(values, torch.Tensor):
        return values.detach().cpu().numpy()
    return np.asarray(values)


def check_same_length(a: torch.Tensor, b: torch.Tensor, names: tuple[str, str]) -> None:
    if a.shape[0] != b.shape[0]:
        raise ValueError(
            f"{names[0]} has {a.shape[0]} samples but {names[1]} has {b.shape[0]}; "
            "pass one value per sample in both"
        )
    if a.shape[0] == 0:
        raise ValueError(f"{names[0]} is empty; a metric needs at least one sample")


def labels_to_long(values: ArrayLike | list, name: str) -> torch.Tensor:
    """Class labels ``[N]`` (ints 0..C-1, or bools) as a long tensor; refuses fractions."""
    tensor = to_tensor(values, name).reshape(-1)
    if tensor.is_floating_point():
        if torch.isnan(tensor).any():
            raise ValueError(f"{name}: contains NaN labels; drop samples without a label first")
        if not torch.equal(tensor, tensor.round()):
            raise ValueError(
                f"{name}: expected integer class labels, got fractional values; "
                "pass argmax(logits) or threshold probabilities first"
            )
    tensor = tensor.long()
    if (tensor < 0).any():
        raise ValueError(f"{name}: negative class label {int(tensor.min())}; labels are 0..C-1")
    return tensor
