"""Heads on a frozen backbone for the cost of the heads: replayed batches, remembered features.

A frozen backbone in eval mode maps an image to the same features every time, so training a
head on it spends most of each step on work already done: loading and augmenting the batch,
and the backbone's forward pass. Two pieces remove that work (``independent`` strategy,
``options: {cache_views: V}``):

- ``BatchReplay`` records the batches of the first ``V`` epochs (``V`` augmented views of every
  training image) and, from epoch ``V`` on, replays epoch ``e``'s batches from view ``e mod V``,
  in a new seeded order: no loading, decoding or augmentation after the first ``V`` epochs.
- ``FeatureMemo`` stands in for the frozen backbone's ``forward_features``: features are
  remembered by the content of the input batch (a BLAKE2 digest of its bytes, with its shape,
  dtype, memory format and autocast state), so a replayed batch, and every validation batch
  after the first validation, costs no backbone pass at all. It computes afresh, and remembers
  nothing, whenever the backbone could change the answer (training mode, a parameter that
  requires grad, an input that does). Memory is capped (``max_mb``); past the cap it computes.
  ``keep_last=k`` keeps only the ``k`` deepest maps (the rest come back as ``None``) when the
  heads read no others: a classification head on the deepest map stores 1/15 of the ``cdae``
  pyramid (8k values of 123k per 128 px image). A tensor seen before, still alive and not
  changed in place since (its version counter), is not hashed again: a replayed batch is the
  recorded tensor itself on the CPU, and hashing it was ~8 % of a cached TB head's stage.

The recorded batches are capped too (``max_mb``): a training set whose ``V`` views do not fit
is not replayed (each epoch loads afresh, as without the cache; the memo still serves
validation) rather than filling the machine's memory.

Replay trades augmentation diversity for time: a head sees ``V`` draws of each image instead of
one per epoch. A stage resumed from a checkpoint records its ``V`` views again from there.
"""

from __future__ import annotations

import hashlib
import logging
import weakref
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import torch
from torch import nn

logger = logging.getLogger(__name__)

Batch = dict[str, Any]


def tensor_digest(x: torch.Tensor) -> bytes:
    """A 16-byte BLAKE2 digest of ``x``'s values (its bytes in contiguous order)."""
    data = x.detach().contiguous().cpu().reshape(-1).view(torch.uint8).numpy()
    return hashlib.blake2b(data, digest_size=16).digest()


class FeatureMemo:
    """``memo(x) -> list of feature maps``: ``backbone.forward_features(x)``, remembered.

    ``install()`` puts the memo in place of the backbone's ``forward_features`` (an instance
    attribute: the state dict and the module tree are untouched); ``remove()`` restores it and
    forgets everything. ``hits`` / ``misses`` count the calls that used / computed features.
    """

    def __init__(self, backbone: nn.Module, max_mb: float = 4096.0,
                 keep_last: int | None = None) -> None:
        if keep_last is not None and keep_last < 1:
            raise ValueError(f"keep_last must be >= 1 or None, got {keep_last}")
        self.backbone = backbone
        self.keep_last = keep_last
        self.max_bytes = int(max_mb * 2**20)
        self.bytes = 0
        self.hits = 0
        self.misses = 0
        self._store: dict[tuple, tuple[torch.Tensor | None, ...]] = {}
        # id(tensor) -> (weak reference, version, digest): digests of tensors still alive
        self._digests: dict[int, tuple[weakref.ref, int, bytes]] = {}
        self._compute: Callable[[torch.Tensor], list[torch.Tensor]] | None = None
        self._full_logged = False
        self._previous: Callable | None = None

    def install(self) -> FeatureMemo:
        if self._compute is None:
            # a memo already in place (or any instance override) is what remove() puts back
            self._previous = vars(self.backbone).get("forward_features")
            self._compute = self.backbone.forward_features
            self.backbone.forward_features = self  # type: ignore[method-assign]
        return self

    def remove(self) -> None:
        if self._compute is not None:
            if self._previous is None:
                vars(self.backbone).pop("forward_features", None)
            else:
                self.backbone.forward_features = self._previous  # type: ignore[method-assign]
            self._compute = None
        self._store.clear()
        self._digests.clear()
        self.bytes = 0

    def frozen(self, x: torch.Tensor) -> bool:
        """Whether the backbone's answer depends on ``x`` alone (eval mode, nothing to train)."""
        return (not self.backbone.training and not x.requires_grad
                and not any(p.requires_grad for p in self.backbone.parameters()))

    def key(self, x: torch.Tensor) -> tuple:
        device = x.device.type
        amp = torch.is_autocast_enabled(device)
        return (tuple(x.shape), str(x.dtype), device,
                x.is_contiguous(memory_format=torch.channels_last) and x.dim() == 4,
                amp, str(torch.get_autocast_dtype(device)) if amp else "", self.digest(x))

    def digest(self, x: torch.Tensor) -> bytes:
        """``tensor_digest(x)``, hashed once per live tensor and version (an in-place change
        bumps ``x._version``; a dead tensor's id is forgotten with it). A write the counter
        does not see (through ``x.data`` or a NumPy view of ``x``) is not seen here either:
        the replayed batches are never written that way."""
        if x.is_inference():  # no version counter to tell an in-place change: hash each time
            return tensor_digest(x)
        known = self._digests.get(id(x))
        if known is not None and known[0]() is x and known[1] == x._version:
            return known[2]
        value = tensor_digest(x)
        ident = id(x)
        ref = weakref.ref(x, lambda _, ident=ident: self._forget(ident))
        self._digests[ident] = (ref, x._version, value)
        return value

    def _forget(self, ident: int) -> None:
        known = self._digests.get(ident)
        if known is not None and known[0]() is None:
            del self._digests[ident]

    def __call__(self, x: torch.Tensor) -> list[torch.Tensor]:
        compute = self._compute or self.backbone.forward_features
        if not self.frozen(x):
            return compute(x)
        key = self.key(x)
        found = self._store.get(key)
        if found is not None:
            self.hits += 1
            return list(found)
        self.misses += 1
        with torch.no_grad():
            feats = [f.detach() for f in compute(x)]
        if self.keep_last is not None:
            drop = max(len(feats) - self.keep_last, 0)
            feats = [None] * drop + feats[drop:]
        size = sum(f.numel() * f.element_size() for f in feats if f is not None)
        if self.bytes + size <= self.max_bytes:
            self._store[key] = tuple(feats)
            self.bytes += size
        elif not self._full_logged:
            logger.info("feature memo full (%.0f MB): further batches are computed each time",
                        self.bytes / 2**20)
            self._full_logged = True
        return feats


class BatchReplay:
    """Epoch ``e < views``: the loaders' batches, recorded; epoch ``e >= views``: the batches
    recorded in epoch ``e mod views``, shuffled (``seed`` and ``e``) within each loader.

    ``epoch(loaders)`` yields one ``{loader_id: batch}`` per step, like iterating the loaders
    side by side (a loader that is spent drops out). Past ``max_mb`` of recorded tensors the
    recording is dropped and every later epoch iterates the loaders (``given_up``)."""

    def __init__(self, views: int, seed: int = 0, max_mb: float = 4096.0) -> None:
        if views < 1:
            raise ValueError(f"replay needs views >= 1, got {views}")
        self.views = views
        self.seed = seed
        self.max_bytes = int(max_mb * 2**20)
        self.bytes = 0
        self.given_up = False
        self.epochs = 0
        self._recorded: list[dict[int, list[Batch]]] = []

    def epoch(self, loaders: Mapping[int, Any]) -> Iterator[dict[int, Batch]]:
        e = self.epochs
        self.epochs += 1
        if self.given_up:
            streams = {k: iter(loader) for k, loader in loaders.items()}
        elif e < self.views:
            record: dict[int, list[Batch]] = {k: [] for k in loaders}
            self._recorded.append(record)
            streams = {k: self._recorder(iter(loader), record[k]) for k, loader in loaders.items()}
        else:
            record = self._recorded[e % self.views]
            g = torch.Generator()
            g.manual_seed(self.seed * 100_003 + e)
            streams = {}
            for k in loaders:
                kept = record.get(k, [])
                order = torch.randperm(len(kept), generator=g).tolist()
                streams[k] = iter([kept[i] for i in order])
        while streams:
            item: dict[int, Batch] = {}
            for k in list(streams):
                batch = next(streams[k], None)
                if batch is None:
                    del streams[k]
                else:
                    item[k] = batch
            if item:
                yield item

    def _recorder(self, it: Iterator[Batch], into: list[Batch]) -> Iterator[Batch]:
        for batch in it:
            if not self.given_up:
                self.bytes += batch_bytes(batch)
                if self.bytes > self.max_bytes:
                    logger.warning("replay: %d views of the training batches exceed %.0f MB; "
                                   "each epoch loads its batches instead", self.views,
                                   self.max_bytes / 2**20)
                    self.given_up = True
                    self._recorded.clear()
                    self.bytes = 0
                else:
                    into.append(batch)
            yield batch


def batch_bytes(batch: Any) -> int:
    """Bytes held by the tensors of ``batch`` (nested dicts and lists included)."""
    if isinstance(batch, torch.Tensor):
        return batch.numel() * batch.element_size()
    if isinstance(batch, Mapping):
        return sum(batch_bytes(v) for v in batch.values())
    if isinstance(batch, (list, tuple)):
        return sum(batch_bytes(v) for v in batch)
    return 0
