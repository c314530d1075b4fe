import numpy as np
import pandas as pd
import pytest

from umsrep.data.splits import external_split, kfold_splits


def _index(n_patients=60, seed=0):
    rng = np.random.default_rng(seed)
    rows = []
    for p in range(n_patients):
        label = int(p % 4 == 0)  # 25% positive
        for j in range(int(rng.integers(1, 4))):
            rows.append({"sample_id": f"p{p}_{j}", "patient_id": f"p{p}", "abnormal": label,
                         "dataset": "shenzhen" if p < 45 else "montgomery"})
    return pd.DataFrame(rows)


def test_folds_are_patient_disjoint_and_cover_everything():
    index = _index()
    folds = kfold_splits(index, k=5, label_column="abnormal", seed=0)
    tests = np.concatenate([f.test for f in folds])
    assert sorted(tests.tolist()) == list(range(len(index)))
    pid = index["patient_id"].to_numpy()
    for f in folds:
        parts = [set(pid[f.train]), set(pid[f.val]), set(pid[f.test])]
        assert not (parts[0] & parts[1]) and not (parts[0] & parts[2]) and not (parts[1] & parts[2])
        assert len(f.train) + len(f.val) + len(f.test) == len(index)
        assert len(f.val) > 0


@pytest.mark.parametrize("seed", [0, 3, 5])
def test_folds_are_stratified(seed):
    """80 patients, 20 positive, 4 folds: each test fold holds exactly 5 positive patients, and
    every part's share of positive images is within 0.05 of the whole (unstratified folds of
    these seeds miss it by 0.15-0.24)."""
    index = _index(80)
    overall = index["abnormal"].mean()
    positive = index.groupby("patient_id")["abnormal"].first()
    for f in kfold_splits(index, k=4, label_column="abnormal", seed=seed):
        assert positive[index["patient_id"].iloc[f.test].unique()].sum() == 5
        for part in (f.train, f.val, f.test):
            assert abs(index["abnormal"].iloc[part].mean() - overall) < 0.05


def test_deterministic_for_a_seed_and_different_across_seeds():
    index = _index()
    a = kfold_splits(index, k=5, label_column="abnormal", seed=1)
    b = kfold_splits(index, k=5, label_column="abnormal", seed=1)
    c = kfold_splits(index, k=5, label_column="abnormal", seed=2)
    assert all(np.array_equal(x.test, y.test) and np.array_equal(x.val, y.val) for x, y in zip(a, b, strict=False))
    assert any(not np.array_equal(x.test, y.test) for x, y in zip(a, c, strict=False))


def test_too_few_patients_is_an_error():
    with pytest.raises(ValueError, match="patients cannot fill"):
        kfold_splits(_index(5), k=10)


def test_external_split_trains_on_one_dataset_and_tests_on_another():
    index = _index()
    fold = external_split(index, ["shenzhen"], ["montgomery"], label_column="abnormal")
    ds = index["dataset"].to_numpy()
    assert set(ds[fold.train]) == set(ds[fold.val]) == {"shenzhen"}
    assert set(ds[fold.test]) == {"montgomery"}
    pid = index["patient_id"].to_numpy()
    assert not set(pid[fold.train]) & set(pid[fold.val])
    with pytest.raises(ValueError, match="not in the index"):
        external_split(index, ["shenzhen"], ["kermany"])
