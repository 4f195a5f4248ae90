"""Bagging: voting rules on hand-made numbers, the ensemble folder, and an ensemble of pruned members."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from degenerate_inputs import assert_predict_flags_degenerate_inputs
from histobreast.data.splits import read_splits_csv
from histobreast.data.synthetic import synth_bach
from histobreast.data.task_records import experiment_records
from histobreast.errors import CheckpointError, ConfigError
from histobreast.pipelines import get_pipeline
from histobreast.pipelines.bagging import (
    combine_predictions,
    ensemble_options,
    evaluate_ensemble,
    held_out_records,
    predict_ensemble,
    read_ensemble_folder,
    save_ensemble_folder,
    train_ensemble,
)
from histobreast.pipelines.config import EnsembleOptions
from histobreast.pipelines.package import load_model_folder
from histobreast.pipelines.pruning import channel_widths
from histobreast.predictions import Predictions
from tiny_system_a import one_torch_thread, tiny_zhu_config  # noqa: F401 (autouse fixture)

# Three members, two images. Image 0: members 1 and 2 say class 0, member 3 is very sure of class 1,
# so the sum and majority rules pick class 0 but the max rule picks class 1. Image 1: unanimous.
MEMBERS = {
    "m1": [[0.90, 0.10], [0.40, 0.60]],
    "m2": [[0.60, 0.40], [0.30, 0.70]],
    "m3": [[0.05, 0.95], [0.45, 0.55]],
}


def _predictions(probs) -> Predictions:
    return Predictions(
        classes=["benign", "malignant"],
        image_ids=["a", "b"],
        probs=np.asarray(probs),
        labels=np.array([0, 1]),
        patient_ids=["p1", "p2"],
    )


@pytest.mark.parametrize(
    ("rule", "expected", "winners"),
    [
        ("sum", [[1.55 / 3, 1.45 / 3], [1.15 / 3, 1.85 / 3]], [0, 1]),
        ("max", [[0.90 / 1.85, 0.95 / 1.85], [0.45 / 1.15, 0.70 / 1.15]], [1, 1]),
        ("majority", None, [0, 1]),
    ],
)
def test_each_voting_rule_on_hand_made_members(rule, expected, winners) -> None:
    fused = combine_predictions({name: _predictions(p) for name, p in MEMBERS.items()}, rule)
    if expected is not None:
        np.testing.assert_allclose(fused.probs, expected, rtol=1e-6)
    np.testing.assert_allclose(fused.probs.sum(axis=1), 1.0)
    assert fused.predicted.tolist() == winners
    np.testing.assert_allclose(fused.extra["uncertainty"], [1 / 3, 0.0])  # one of three members dissents on image 0


def test_members_must_predict_the_same_images() -> None:
    other = _predictions(MEMBERS["m1"])
    other.image_ids = ["a", "c"]
    with pytest.raises(CheckpointError, match="m2"):
        combine_predictions({"m1": _predictions(MEMBERS["m1"]), "m2": other})


def test_ensemble_folder_is_checked(tmp_path) -> None:
    with pytest.raises(CheckpointError, match="not a model folder"):
        save_ensemble_folder(tmp_path / "ens", [tmp_path / "ens" / "nothing"])
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "model.json").write_text("{}")
    with pytest.raises(CheckpointError, match="inside the ensemble folder"):
        save_ensemble_folder(tmp_path / "ens", [outside])
    with pytest.raises(CheckpointError, match="not an ensemble folder"):
        read_ensemble_folder(tmp_path)
    (tmp_path / "ens").mkdir()
    (tmp_path / "ens" / "ensemble.json").write_text(
        '{"format": "histobreast-ensemble", "members": ["../x"], "rule": "sum"}'
    )
    with pytest.raises(CheckpointError, match="outside"):
        read_ensemble_folder(tmp_path / "ens")
    (tmp_path / "ens" / "ensemble.json").write_text(
        '{"format": "histobreast-ensemble", "members": ["a"], "rule": "vote"}'
    )
    with pytest.raises(ConfigError, match="vote"):
        read_ensemble_folder(tmp_path / "ens")


def test_options_and_overrides(tmp_path) -> None:
    cfg = tiny_zhu_config(tmp_path, ensemble={"members": 3, "rule": "max"})
    assert ensemble_options(cfg) == EnsembleOptions(members=3, rule="max")
    assert ensemble_options(cfg, members=5, rule=None).members == 5
    with pytest.raises(ConfigError, match="ensemble.members"):
        ensemble_options(cfg, members=1)


@pytest.fixture(scope="module")
def bach(tmp_path_factory):
    """A synthetic BACH tree with three 10-image patient blocks per class: two to bag, one to test."""
    root = tmp_path_factory.mktemp("bach")
    synth_bach(root, per_class=30, size=(64, 48))
    records, classes = experiment_records(tiny_zhu_config(root).data)
    train = [r for r in records if r.index <= 20]
    test = [r for r in records if r.index > 27]
    return root, train, test, classes


def test_ensemble_of_pruned_members_trains_loads_and_predicts(bach, tmp_path) -> None:
    root, train, test, classes = bach
    cfg = tiny_zhu_config(root)
    options = EnsembleOptions(members=2, rule="sum", prune_ratio=0.5)
    folder = train_ensemble(cfg, train, classes, tmp_path / "ens", options=options, test_records=test)

    # Member j validated on subset j and trained on the others; the subsets partition the training set.
    splits = read_splits_csv(folder / "bagging_splits.csv")
    vals = [set(s.ids("val")) for s in splits]
    assert not vals[0] & vals[1] and vals[0] | vals[1] == {r.image_id for r in train}
    assert all(set(s.ids("train")) == vals[1 - j] for j, s in enumerate(splits))
    # BACH: contiguous image-number ranges per original class (the binary task merges two numberings).
    for val in vals:
        for original in ("Normal", "Benign", "InSitu", "Invasive"):
            numbers = sorted(r.index for r in train if r.image_id in val and r.extra["original_label"] == original)
            assert numbers == list(range(numbers[0], numbers[0] + len(numbers)))

    ensemble = read_ensemble_folder(folder)
    assert ensemble.member_names() == ["member1/pruned", "member2/pruned"]
    for member in ensemble.members:
        pruned, unpruned = load_model_folder(member), load_model_folder(member.parent / "model")
        assert pruned.info["pruning"]["ratio"] == 0.5
        widths, full = channel_widths(pruned.model), channel_widths(unpruned.model)
        assert widths["global_branch."]["4e"] < full["global_branch."]["4e"]
    with pytest.raises(CheckpointError, match="ensemble"):
        load_model_folder(folder)
    assert_predict_flags_degenerate_inputs(folder, train[0].path, tmp_path)  # pruned members keep training_inputs

    result = predict_ensemble(folder, test, device="cpu")
    direct = {
        name: get_pipeline("zhu2019").predict_records(member, test, device="cpu")["hybrid"]
        for name, member in zip(ensemble.member_names(), ensemble.members)
    }
    for name in direct:
        np.testing.assert_allclose(result.members[name].probs, direct[name].probs, rtol=1e-6)
    np.testing.assert_allclose(result.ensemble.probs, np.mean([p.probs for p in direct.values()], axis=0), rtol=1e-6)

    assert [r.image_id for r in held_out_records(folder)] == [r.image_id for r in test]
    metrics = evaluate_ensemble(folder, test, tmp_path / "evaluation", rule="majority", device="cpu")
    assert metrics["rule"] == "majority" and set(metrics["members"]) == set(direct)
    best = max(m["metrics"]["image_level_accuracy"] for m in metrics["members"].values())
    assert metrics["gain_over_best_member"] == pytest.approx(
        metrics["ensemble"]["metrics"]["image_level_accuracy"] - best
    )
    with (tmp_path / "evaluation" / "predictions.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == len(test) and all(float(row["uncertainty"]) in (0.0, 0.5) for row in rows)
    assert (tmp_path / "evaluation" / "members" / "member1_pruned.csv").is_file()
    assert "best member" in (tmp_path / "evaluation" / "report" / "report.md").read_text()
    summary = json.loads((tmp_path / "evaluation" / "summary.json").read_text())
    assert summary["gain_over_best_member"] == pytest.approx(metrics["gain_over_best_member"])
    assert summary["images"] == len(test) and set(summary["members"]) == set(direct)
