"""Published figures: which labels are anchors, which split each belongs to, and that an
experiment file may carry an anchor's split."""

from pathlib import Path

import pytest
import yaml

from analysis.reference import anchor_table, anchors_for, paper_frame, strategy_references
from umsrep.config import ConfigError
from umsrep.experiment import load_experiment

SWEEPS = Path(__file__).resolve().parents[2] / "sweeps"
STRATEGIES = {"independent", "alternating", "joint", "baseline"}
PAPER = {
    "lung": {
        "independent": {"dice": 0.96, "minutes": 8.11},
        "unet_montgomery_binseg": {"dice": 0.942, "split": "test:montgomery"},
        "unet_any": {"dice": 0.93, "minutes": 25.0},
    },
    "total": {"shared": {"minutes": 312.82, "trainable_params": 1882279}},
}


def test_anchors_are_the_labels_that_are_no_strategy_without_their_costs():
    got = anchor_table(PAPER, STRATEGIES, "test").to_dict("records")
    assert got == [
        {
            "task": "lung",
            "label": "unet_montgomery_binseg",
            "split": "test:montgomery",
            "metric": "dice",
            "value": 0.942,
        },
        {"task": "lung", "label": "unet_any", "split": "test", "metric": "dice", "value": 0.93},
    ]
    # a strategy the run did not train is a published model beside ours too
    labels = set(anchor_table(PAPER, {"independent", "baseline"}, "test")["label"])
    assert labels == {"unet_montgomery_binseg", "unet_any"}
    assert anchor_table(None, STRATEGIES, "test").empty


def test_each_split_gets_its_own_figures():
    anchors = anchor_table(PAPER, STRATEGIES, "test")
    assert anchors_for(anchors, "lung", "test:montgomery") == {
        "unet_montgomery_binseg": {"dice": 0.942}
    }
    assert anchors_for(anchors, "lung", "test") == {"unet_any": {"dice": 0.93}}
    assert anchors_for(anchors, "lung", "test:jsrt") == {}
    on_test = strategy_references(PAPER, "lung", "test", "test")
    assert on_test["independent"] == {"dice": 0.96, "minutes": 8.11}
    assert "unet_montgomery_binseg" not in on_test


def test_paper_frame_keeps_the_split_out_of_the_metrics():
    frame = paper_frame(PAPER, "test")
    assert "split" not in set(frame["metric"])
    row = frame[frame["strategy"] == "unet_montgomery_binseg"].iloc[0]
    assert (row["split"], row["metric"], row["value"]) == ("test:montgomery", "dice", 0.942)
    assert frame["value"].map(type).eq(float).all()


def test_cxr_public_anchors_name_their_dataset():
    exp = load_experiment(SWEEPS / "cxr_public.yaml", check_paths=False)
    anchors = anchor_table(exp.paper_reference, STRATEGIES, "test")
    got = set(anchors[["label", "split", "metric", "value"]].itertuples(index=False))
    assert got == {
        ("unet_montgomery_binseg", "test:montgomery", "dice", 0.942),
        ("unet_jsrt_binseg", "test:jsrt", "dice", 0.945),
    }


@pytest.mark.parametrize("figures", [{"dice": "0.94"}, {"dice": 0.94, "split": 1}])
def test_experiment_takes_a_string_only_as_split(figures):
    data = yaml.safe_load((SWEEPS / "cxr_public.yaml").read_text())
    data["paper_reference"]["lung"]["unet"] = figures
    with pytest.raises(ConfigError, match=r"paper_reference\.lung\.unet\."):
        load_experiment(data=data, check_paths=False)
