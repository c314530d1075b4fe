import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from umsrep.data.manifest import load_manifest, manifest_label_columns, save_manifest


def _frame(tmp_path, n=3):
    return pd.DataFrame({
        "sample_id": [f"s{i}" for i in range(n)],
        "patient_id": ["p0", "p0", "p1"][:n],
        "dataset": "toy",
        "split": ["train", None, "test"][:n],
        "image_path": [str(tmp_path / f"s{i}.png") for i in range(n)],
        "mask_path": [None] * n,
        "abnormal": [1, 0, None][:n],
        "diagnosis": ["normal", "viral", None][:n],
        "boxes": ["[[1, 2, 3, 4]]", "[]", None][:n],
        "grade": ["2", None, "7"][:n],
        "view_position": ["PA", "AP", "PA"][:n],
    })


def test_round_trip_keeps_types_and_label_columns(tmp_path):
    path = save_manifest(_frame(tmp_path), tmp_path / "m.parquet",
                         ["abnormal", "diagnosis", "boxes", "grade"])
    df = load_manifest(path)
    assert manifest_label_columns(df) == ["abnormal", "diagnosis", "boxes", "grade"]
    assert manifest_label_columns(path) == ["abnormal", "diagnosis", "boxes", "grade"]
    assert str(df["abnormal"].dtype) == "Int8" and df["abnormal"].isna().tolist() == [0, 0, 1]
    assert str(df["grade"].dtype) == "Int64" and df["grade"].tolist()[0] == 2
    assert pd.isna(df["split"][1]) and df["split"][2] == "test"
    assert not list(tmp_path.glob(".*tmp"))  # atomic write leaves no temp file


@pytest.mark.parametrize(
    ("column", "value", "message"),
    [
        ("abnormal", 3, "'abnormal' must be 0/1"),
        ("diagnosis", "fungal", "'diagnosis' must be one of"),
        ("split", "holdout", "'split' must be train/val/test"),
        ("image_path", "relative/x.png", "absolute paths"),
        ("boxes", "[[1, 2]]", "'boxes' must be a JSON list"),
        ("sample_id", "s0", "duplicates"),
    ],
)
def test_invalid_values_name_column_and_row(tmp_path, column, value, message):
    df = _frame(tmp_path)
    df[column] = df[column].astype(object)
    df.loc[2, column] = value
    with pytest.raises(ValueError, match=message) as err:
        save_manifest(df, tmp_path / "m.parquet", ["abnormal", "diagnosis", "boxes"])
    assert "row(s) [" in str(err.value) and "2" in str(err.value)


def test_load_rejects_missing_required_column(tmp_path):
    path = save_manifest(_frame(tmp_path), tmp_path / "m.parquet", ["abnormal"])
    table = pq.read_table(path)
    table = table.drop(["patient_id"])
    pq.write_table(table, path)
    with pytest.raises(ValueError, match=r"missing required column\(s\) \['patient_id'\]"):
        load_manifest(path)


def test_load_rejects_parquet_without_label_metadata(tmp_path):
    pq.write_table(pa.Table.from_pandas(_frame(tmp_path)), tmp_path / "raw.parquet")
    with pytest.raises(ValueError, match="umsrep.label_columns"):
        load_manifest(tmp_path / "raw.parquet")
