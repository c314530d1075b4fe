"""A stage's model folders: the scored weights and the other epoch's (``train.checkpoint``).

``checkpoint/`` holds the weights the stage was scored with: the best validation epoch's
(``train.checkpoint: best``, the default) or the last epoch's (``last``). The other is kept in
``checkpoint_last/`` or ``checkpoint_best/``, a model folder of the same form (``model.pt`` +
``model.json``, whose ``checkpoint`` and ``epoch`` say which weights it holds), so both can be
applied with ``umsrep predict`` and compared.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from umsrep.runner.store import atomic_write_json


def save_model_dir(path: Path, model, meta: dict[str, Any]) -> None:
    """A self-describing model folder: ``model.pt`` (state dict) + ``model.json`` (how to build)."""
    path.mkdir(parents=True, exist_ok=True)
    tmp = path / "model.pt.tmp"
    torch.save(model.state_dict(), tmp)
    tmp.replace(path / "model.pt")
    atomic_write_json(meta, path / "model.json")


def scored_epochs(fit_result, settings) -> dict[str, Any]:
    """Which weights ``checkpoint/`` holds (``train.checkpoint``) and the epochs of both."""
    epochs = {"best": int(fit_result.best_epoch), "last": int(fit_result.last_epoch)}
    scored = getattr(settings, "checkpoint", "best")
    if epochs["best"] < 0:  # nothing validated: the loop's last weights are all there is
        scored = "last"
    out = {"scored_checkpoint": scored, "scored_epoch": epochs[scored],
           "best_epoch": epochs["best"], "last_epoch": epochs["last"]}
    if getattr(fit_result, "best_epochs", None):  # heads chosen each on its own
        out["best_epochs"] = {k: int(v) for k, v in fit_result.best_epochs.items()}
    return out


def save_checkpoints(folder: Path, model, meta: dict[str, Any], fit_result, settings,
                     other_threshold: dict[str, float] | None = None) -> None:
    """``folder/checkpoint/``: the scored weights (``train.checkpoint``); the other epoch's in
    ``checkpoint_last/`` or ``checkpoint_best/``, a model folder ``umsrep predict`` takes too,
    with its own thresholds (``other_threshold``, chosen for those weights) where given."""
    info = scored_epochs(fit_result, settings)
    scored = info["scored_checkpoint"]
    heads = {"head_epochs": info["best_epochs"]} if "best_epochs" in info else {}
    save_model_dir(folder / "checkpoint", model,
                   {**meta, "checkpoint": scored, "epoch": info["scored_epoch"],
                    **(heads if scored == "best" else {})})
    if fit_result.other_weights is None:
        return
    other = "last" if scored == "best" else "best"
    path = folder / f"checkpoint_{other}"
    path.mkdir(parents=True, exist_ok=True)
    torch.save(fit_result.other_weights, path / "model.pt.tmp")
    (path / "model.pt.tmp").replace(path / "model.pt")
    own = {"threshold": dict(other_threshold)} if other_threshold is not None else {}
    atomic_write_json({**meta, "checkpoint": other, "epoch": info[f"{other}_epoch"], **own,
                       **(heads if other == "best" else {})}, path / "model.json")
