"""The manifest: one Parquet table per import, one row per image.

Columns (all written by ``save_manifest``, checked by ``load_manifest``):

=================  ================  =========================================================
column             dtype             meaning
=================  ================  =========================================================
sample_id          string, unique    image id taken from the file name (never from DICOM tags)
patient_id         string            patient id for patient-level splits (from file names)
dataset            string            dataset name, e.g. "shenzhen", "synthetic-cxr"
split              string, nullable  "train" / "val" / "test" as the dataset itself defines
image_path         string            absolute path of the image file
mask_path          string, nullable  absolute path of the binary mask (0/255 or 0/1 PNG)
=================  ================  =========================================================

Further segmentation masks (optional, nullable strings, absolute paths like ``mask_path``) are
columns ``mask_<name>_path``, e.g. JSRT's ``mask_heart_path`` and ``mask_clavicle_path``. A
segmentation task names its mask as ``mask`` (``mask_path``) or ``mask_<name>``
(``mask_<name>_path``); ``mask_columns`` lists a manifest's.

Label columns (nullable; a missing value is a missing label, never a guessed one):

- ``abnormal``  Int8 0/1 (Shenzhen, Montgomery, Kermany, RSNA ``Target``)
- ``diagnosis`` string normal / bacterial / viral (Kermany)
- ``boxes``     string, JSON list of ``[x, y, w, h]`` boxes in source pixels (RSNA; "[]" = none)
- ``nodule``    Int64 0/1 (JSRT: ``JPCLN`` 1, ``JPCNN`` 0; JSRT sets no ``abnormal``, so a TB task
  on ``abnormal`` never scores nodule labels when JSRT is an external lung test set)
- generic imports declare their own: integer-valued columns are Int64, others string.

Every other column is non-identifying metadata (``height``, ``width`` in source pixels,
``view_position``, ``modality``, ``bits_stored``, ...). The label column names are stored in the
Parquet key-value metadata under ``umsrep.label_columns`` (JSON list).
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from collections.abc import Sequence
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

REQUIRED_COLUMNS: tuple[str, ...] = (
    "sample_id",
    "patient_id",
    "dataset",
    "split",
    "image_path",
    "mask_path",
)
SPLITS = frozenset({"train", "val", "test"})
DIAGNOSES = frozenset({"normal", "bacterial", "viral"})
LABELS_KEY = b"umsrep.label_columns"
_STRING_COLUMNS = ("sample_id", "patient_id", "dataset", "split", "image_path", "mask_path")
_EXTRA_MASK = re.compile(r"^mask_[a-z0-9]+(?:_[a-z0-9]+)*_path$")


def mask_columns(columns: Sequence[str]) -> dict[str, str]:
    """Segmentation masks among ``columns``: ``{task column: manifest column}``, ``mask_path``
    first, e.g. ``{"mask": "mask_path", "mask_heart": "mask_heart_path"}``."""
    extra = sorted(c for c in columns if _EXTRA_MASK.match(c))
    return {"mask": "mask_path", **{c[: -len("_path")]: c for c in extra}}


def infer_label_dtype(col: pd.Series) -> pd.Series:
    """Nullable Int64 when every non-missing value is an integer, otherwise string."""
    values = col.dropna()
    values = values[values.astype(str).str.strip() != ""]
    numeric = pd.to_numeric(values, errors="coerce")
    if len(values) and numeric.notna().all() and (numeric == numeric.round()).all():
        out = pd.to_numeric(col.where(col.astype(str).str.strip() != ""), errors="coerce")
        return out.astype("Int64")
    return col.astype("string")


def _cast(df: pd.DataFrame, label_columns: Sequence[str]) -> pd.DataFrame:
    """Give the fixed columns their schema dtypes (nullable pandas extension types)."""
    df = df.copy()
    for col in _STRING_COLUMNS:
        if col not in df.columns:
            df[col] = pd.NA
        df[col] = df[col].astype("string")
    for col in list(mask_columns(df.columns).values())[1:]:
        df[col] = df[col].astype("string")
    if "abnormal" in df.columns:
        df["abnormal"] = pd.to_numeric(df["abnormal"], errors="raise").astype("Int8")
    for col in ("diagnosis", "boxes"):
        if col in df.columns:
            df[col] = df[col].astype("string")
    for col in label_columns:
        if col not in ("abnormal", "diagnosis", "boxes"):
            df[col] = infer_label_dtype(df[col])
    for col in ("height", "width", "bits_stored"):
        if col in df.columns:
            df[col] = pd.to_numeric(df[col]).astype("Int64")
    ordered = list(REQUIRED_COLUMNS) + [c for c in df.columns if c not in REQUIRED_COLUMNS]
    return df[ordered].reset_index(drop=True)


def save_manifest(df: pd.DataFrame, path: str | Path, label_columns: Sequence[str]) -> Path:
    """Validate ``df`` and write it atomically (temp file + ``os.replace``) as Parquet.

    ``label_columns`` are the task label columns; they are recorded in the file's metadata.
    """
    path = Path(path)
    missing = [c for c in label_columns if c not in df.columns]
    if missing:
        raise ValueError(f"{path}: label columns {missing} are not columns of the manifest")
    df = _cast(df, label_columns)
    validate_manifest(df, path, list(label_columns))
    table = pa.Table.from_pandas(df, preserve_index=False)
    meta = dict(table.schema.metadata or {})
    meta[LABELS_KEY] = json.dumps(list(label_columns)).encode()
    table = table.replace_schema_metadata(meta)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        pq.write_table(table, tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def _bad_rows(mask: pd.Series) -> str:
    rows = list(mask[mask].index[:5])
    return f"row(s) {rows}" + (" ..." if int(mask.sum()) > 5 else "")


def _check_boxes(value: str) -> bool:
    try:
        boxes = json.loads(value)
    except json.JSONDecodeError:
        return False
    return isinstance(boxes, list) and all(
        isinstance(b, list) and len(b) == 4 and all(isinstance(v, int | float) for v in b)
        for b in boxes
    )


def validate_manifest(df: pd.DataFrame, source: str | Path, label_columns: list[str]) -> None:
    """Raise ``ValueError`` naming the file, the column and the bad rows when ``df`` is invalid."""
    missing = [c for c in REQUIRED_COLUMNS if c not in df.columns]
    if missing:
        raise ValueError(f"{source}: missing required column(s) {missing}; re-run the import")
    for col in ("sample_id", "patient_id", "dataset", "image_path"):
        null = df[col].isna() | (df[col].astype("string") == "")
        if null.any():
            raise ValueError(f"{source}: column {col!r} is empty in {_bad_rows(null)}")
    dup = df["sample_id"].duplicated(keep=False)
    if dup.any():
        ids = sorted(set(df.loc[dup, "sample_id"]))[:5]
        raise ValueError(
            f"{source}: column 'sample_id' has duplicates {ids} in {_bad_rows(dup)}; "
            "sample ids must be unique"
        )
    bad = df["split"].notna() & ~df["split"].isin(SPLITS)
    if bad.any():
        raise ValueError(f"{source}: column 'split' must be train/val/test, {_bad_rows(bad)}")
    for col in ("image_path", *mask_columns(df.columns).values()):
        vals = df[col].dropna()
        rel = pd.Series([not os.path.isabs(p) for p in vals], index=vals.index, dtype=bool)
        if rel.any():
            raise ValueError(f"{source}: column {col!r} must hold absolute paths, {_bad_rows(rel)}")
    if "abnormal" in df.columns:
        bad = df["abnormal"].notna() & ~df["abnormal"].isin([0, 1])
        if bad.any():
            raise ValueError(f"{source}: column 'abnormal' must be 0/1, {_bad_rows(bad)}")
    if "diagnosis" in df.columns:
        bad = df["diagnosis"].notna() & ~df["diagnosis"].isin(DIAGNOSES)
        if bad.any():
            raise ValueError(
                f"{source}: column 'diagnosis' must be one of {sorted(DIAGNOSES)}, {_bad_rows(bad)}"
            )
    if "boxes" in df.columns:
        vals = df["boxes"]
        ok = [_check_boxes(v) for v in vals.fillna("[]")]
        bad = vals.notna() & ~pd.Series(ok, index=vals.index, dtype=bool)
        if bad.any():
            raise ValueError(
                f"{source}: column 'boxes' must be a JSON list of [x, y, w, h], {_bad_rows(bad)}"
            )
    unknown = [c for c in label_columns if c not in df.columns]
    if unknown:
        raise ValueError(f"{source}: label column(s) {unknown} recorded but absent")


def load_manifest(path: str | Path) -> pd.DataFrame:
    """Read and validate a manifest; the label column names are in ``df.attrs["label_columns"]``."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{path}: manifest not found; create it with `umsrep data import`")
    try:
        table = pq.read_table(path)
    except (pa.ArrowInvalid, OSError) as exc:
        raise ValueError(f"{path}: not a readable Parquet manifest ({exc})") from None
    labels = _labels_from_schema(table.schema, path)
    df = table.to_pandas()
    for col in (*_STRING_COLUMNS, *list(mask_columns(df.columns).values())[1:]):
        if col in df.columns:
            df[col] = df[col].astype("string")
    validate_manifest(df, path, labels)
    df.attrs["label_columns"] = labels
    return df


def _labels_from_schema(schema: pa.Schema, path: Path) -> list[str]:
    raw = (schema.metadata or {}).get(LABELS_KEY)
    if raw is None:
        raise ValueError(
            f"{path}: no '{LABELS_KEY.decode()}' metadata; write manifests with save_manifest"
        )
    return list(json.loads(raw))


def manifest_label_columns(df_or_path: pd.DataFrame | str | Path) -> list[str]:
    """The label column names of a loaded manifest (``attrs``) or of a manifest file."""
    if isinstance(df_or_path, pd.DataFrame):
        if "label_columns" not in df_or_path.attrs:
            raise ValueError("DataFrame has no attrs['label_columns']; load it with load_manifest")
        return list(df_or_path.attrs["label_columns"])
    path = Path(df_or_path)
    return _labels_from_schema(pq.read_schema(path), path)
