"""Turns an experiment's data sources into one prepared cache and index sets.

Every source (an existing manifest, a raw folder through its importer, or synthetic data) becomes a
manifest; the union is prepared once into the shared preprocessing cache, and the run works on
positions in that cache: the backbone's pretraining pool, the fine-tuning set (split into folds)
and the external test set.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from umsrep.data.cache import load_cache, prepare_cache
from umsrep.data.importers import run_import
from umsrep.data.manifest import load_manifest, manifest_label_columns, save_manifest
from umsrep.data.splits import kfold_splits
from umsrep.data.synthetic import synthesize
from umsrep.experiment import Experiment, SourceConfig, resolve_path
from umsrep.runner.store import atomic_write_json

log = logging.getLogger(__name__)


@dataclass
class Fold:
    train: np.ndarray  # cache positions
    val: np.ndarray
    test: np.ndarray  # held-out fold (internal test)


@dataclass
class RunData:
    cache_path: Path
    index: pd.DataFrame  # the cache's index (one row per cached image)
    pretrain: np.ndarray  # cache positions of the backbone's pretraining pool ("" = train folds)
    train: np.ndarray  # cache positions of the fine-tuning set
    external: np.ndarray  # cache positions of the external test set (may be empty)
    folds: list[Fold]
    # pool_digest's answers, by (columns, pool positions): each pool image is hashed once
    _pool_digests: dict = field(default_factory=dict, init=False, repr=False, compare=False)

    def pool_for_fold(self, fold: int) -> np.ndarray:
        """Images the backbone of ``fold`` pretrains on: the pool, or the fold's training part."""
        if len(self.pretrain):
            return self.pretrain
        f = self.folds[fold]
        return np.concatenate([f.train, f.val])

    def pool_digest(self, fold: int, columns: Sequence[str] = ()) -> str:
        """Digest of what fold ``fold``'s backbone pretrains on (its store key's data part):
        each pool image's sample id and the bytes of its cached pixels, so a file replaced
        under the same name, or another dataset numbered alike, is another pool; ``columns``
        add what a supervised pretraining reads (a label's value, a mask column's pixels)."""
        pos = self.pool_for_fold(fold)
        memo_key = (tuple(columns), hashlib.sha256(pos.tobytes()).hexdigest())
        memo = self._pool_digests
        if memo_key not in memo:
            cache = load_cache(self.cache_path)
            masks = {c: cache.mask_array(c) for c in columns
                     if c == "mask" or c in cache.extra_masks}
            ids = self.index["sample_id"].astype(str).to_numpy()
            lines = []
            for i in pos:
                pixels = hashlib.blake2b(np.ascontiguousarray(cache.images[i]).tobytes(),
                                         digest_size=8)
                parts = [ids[i], pixels.hexdigest()]
                for c in columns:
                    if c in masks:
                        parts.append(hashlib.blake2b(np.ascontiguousarray(masks[c][i]).tobytes(),
                                                     digest_size=8).hexdigest())
                    else:
                        parts.append(str(self.index[c].iloc[i]))
                lines.append("\t".join(parts))
            memo[memo_key] = hashlib.sha256("\n".join(sorted(lines)).encode()).hexdigest()[:16]
        return memo[memo_key]


def source_manifest(exp: Experiment, src: SourceConfig, work: Path) -> Path:
    """Path of the manifest for one source, importing or synthesizing it when needed."""
    if src.manifest is not None:
        return resolve_path(exp, src.manifest)
    if src.synthetic is not None:

        out = work / "synthetic" / f"{src.synthetic}-n{src.n}-s{exp.data.image_size}-seed{src.seed}"
        manifest = out / "manifest.parquet"
        if not manifest.exists():
            log.info("generating synthetic %s data (%d images) in %s", src.synthetic, src.n, out)
            return Path(synthesize(src.synthetic, n=src.n, size=max(exp.data.image_size, 64),
                                   seed=src.seed, out_dir=out))
        return manifest

    raw = resolve_path(exp, src.path or "")
    digest = hashlib.sha256(f"{src.importer}:{raw}".encode()).hexdigest()[:12]
    # what the importer reads, as it is now: an added image or an edited labels file is
    # imported again, not served from the import of the folder as it was
    out = work / "imports" / f"{src.importer}-{digest}-{source_fingerprint(raw)[:8]}.parquet"
    if not out.exists() or _derived_files_missing(out):
        report = run_import(src.importer or "", raw, out)
        log.info("imported %s: %d images, %d quarantined (%s)", src.importer,
                 len(report.manifest), len(report.quarantine), report.quarantine_path)
    return out


def source_fingerprint(raw: Path) -> str:
    """SHA-256 (hex) of the relative name, size and mtime of ``raw`` (a file) or of every file
    under it (a folder): what an importer reads. A stat per file, no reading (~1 s per 100k)."""
    h = hashlib.sha256()
    raw = Path(raw)
    files = [raw] if raw.is_file() else sorted(p for p in raw.rglob("*") if p.is_file())
    for path in files:
        st = path.stat()
        name = path.name if path == raw else path.relative_to(raw).as_posix()
        h.update(f"{name}\t{st.st_size}\t{st.st_mtime_ns}\n".encode())
    return h.hexdigest()


def _derived_files_missing(manifest: Path) -> bool:
    """True when a stored import names files it wrote itself (merged masks in
    ``<manifest>.masks/``) that are gone, e.g. after the cache folder was moved or pruned:
    the import is then redone instead of quarantining every image whose mask it cannot find."""
    derived = Path(str(manifest.with_suffix("")) + ".masks")
    df = pd.read_parquet(manifest)
    for col in [c for c in df.columns if c == "mask_path" or c.startswith("mask_")]:
        for value in df[col].dropna().astype(str):
            if Path(value).name and Path(value).parent.name == derived.name \
                    and not Path(value).exists():
                log.info("%s: %s is gone; importing again", manifest.name, value)
                return True
    return False


def _load_source(exp: Experiment, src: SourceConfig, work: Path) -> pd.DataFrame:
    df = load_manifest(source_manifest(exp, src, work))
    if src.split is not None:
        df = df[df["split"].astype("string") == src.split]
    if src.require_mask:
        df = df[df["mask_path"].notna()]
    if df.empty:
        raise ValueError(f"data source {src} has no images after filtering")
    return df


def materialize(exp: Experiment, num_workers: int | None = None) -> RunData:
    """Import/synthesize every source, prepare the shared cache and split the folds."""

    work = Path(exp.data.cache_dir).expanduser().resolve()
    sections: dict[str, list[pd.DataFrame]] = {"pretrain": [], "train": [], "test": []}
    for section in sections:
        for i, src in enumerate(getattr(exp.data, section)):
            df = _load_source(exp, src, work)
            sections[section].append(df.assign(_source=f"{section}{i}"))
    combined = pd.concat([df for dfs in sections.values() for df in dfs], ignore_index=True)
    combined = combined.drop_duplicates("image_path").reset_index(drop=True)
    dup = combined["sample_id"].duplicated(keep=False)
    if dup.any():  # two sources used the same file stem: qualify by source
        combined.loc[dup, "sample_id"] = (
            combined.loc[dup, "_source"] + ":" + combined.loc[dup, "sample_id"].astype(str)
        )
    combined = combined.drop(columns="_source")
    label_columns = [c for c in combined.columns if c not in _BASE_COLUMNS and c in _label_columns(sections)]
    # every column counts: a corrected label is another manifest (and, through it, another
    # cache index), never the stale copy of an earlier run under the same name
    digest = hashlib.sha256(pd.util.hash_pandas_object(
        combined.astype("string").fillna("<NA>"), index=False).values.tobytes())
    digest.update(json.dumps([list(combined.columns), sorted(label_columns)]).encode())
    manifest_path = work / "manifests" / f"{exp.name}-{digest.hexdigest()[:16]}.parquet"
    if not manifest_path.exists():
        save_manifest(combined, manifest_path, label_columns)
    cache = load_cache(prepare_cache(manifest_path, size=exp.data.image_size,
                                     out=work / "cache", workers=num_workers,
                                     fit=exp.data.fit, contrast=exp.data.contrast))
    index = cache.index
    pos = {p: i for i, p in enumerate(index["image_path"].astype(str))}

    def positions(section: str) -> np.ndarray:
        paths = [p for df in sections[section] for p in df["image_path"].astype(str)]
        return np.array(sorted({pos[p] for p in paths if p in pos}), dtype=np.int64)

    train = positions("train")
    sub = index.iloc[train].reset_index(drop=True)
    splits = kfold_splits(sub, k=exp.folds.k, label_column=exp.folds.stratify,
                          seed=exp.folds.seed, val_fraction=exp.folds.val_fraction)
    folds = [Fold(train[s.train], train[s.val], train[s.test]) for s in splits]
    return RunData(cache_path=Path(cache.path) if hasattr(cache, "path") else work / "cache",
                   index=index, pretrain=positions("pretrain"), train=train,
                   external=positions("test"), folds=folds)


_BASE_COLUMNS = {"sample_id", "patient_id", "dataset", "split", "image_path", "mask_path"}


def _label_columns(sections: dict[str, list[pd.DataFrame]]) -> set[str]:
    cols: set[str] = set()
    for dfs in sections.values():
        for df in dfs:
            cols |= set(manifest_label_columns(df))
    return cols


def save_run_data(data: RunData, run_dir: Path) -> None:
    """Positions and folds of a run, so Ray workers reuse them instead of re-splitting."""

    arrays = {"pretrain": data.pretrain, "train": data.train, "external": data.external}
    for i, f in enumerate(data.folds):
        arrays |= {f"fold{i}_train": f.train, f"fold{i}_val": f.val, f"fold{i}_test": f.test}
    run_dir.mkdir(parents=True, exist_ok=True)
    tmp = run_dir / "data.tmp.npz"
    np.savez(tmp, **arrays)
    tmp.replace(run_dir / "data.npz")
    atomic_write_json({"cache": str(data.cache_path), "folds": len(data.folds)},
                      run_dir / "data.json")


def load_run_data(run_dir: Path) -> RunData:
    meta = json.loads((run_dir / "data.json").read_text())
    arrays = np.load(run_dir / "data.npz")
    folds = [Fold(arrays[f"fold{i}_train"], arrays[f"fold{i}_val"], arrays[f"fold{i}_test"])
             for i in range(meta["folds"])]
    cache = load_cache(meta["cache"])
    return RunData(cache_path=Path(meta["cache"]), index=cache.index,
                   pretrain=arrays["pretrain"], train=arrays["train"],
                   external=arrays["external"], folds=folds)
