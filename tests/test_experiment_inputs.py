"""Config -> records, classes, protocol splits, validation subsets and stain targets."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from histobreast.data.protocol import experiment_splits, validation_split
from histobreast.data.splits import Split, write_splits_csv
from histobreast.data.synthetic import synth_bach, synth_breakhis
from histobreast.data.task_records import experiment_records
from histobreast.errors import ConfigError, DatasetError
from histobreast.pipelines.config import parse_config
from histobreast.pipelines.experiment_checks import check_saved_predictions
from histobreast.predictions import Predictions
from histobreast.preprocess.stain import ReinhardNormalizer
from histobreast.preprocess.stain_target import fit_stain_normalizer


def _cfg(data, **sections):
    return parse_config({"name": "t", "model": {"name": "resnet18"}, "train": {"epochs": 1}, "data": data, **sections})


@pytest.fixture(scope="module")
def bach_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("bach")
    synth_bach(root, per_class=21, size=(96, 72), image_format="png")
    return root


@pytest.fixture(scope="module")
def breakhis_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("breakhis")
    synth_breakhis(root, patients_per_subtype=1, images_per_magnification=2, magnifications=(40, 100), size=(70, 46))
    return root


def test_bach_binary_task_and_contiguous_folds(bach_root):
    cfg = _cfg({"root": str(bach_root), "task": "binary", "n_folds": 3})
    records, classes = experiment_records(cfg.data)
    assert classes == ["non-carcinoma", "carcinoma"] and len(records) == 84
    assert {r.extra["original_label"] for r in records if r.label == "carcinoma"} == {"InSitu", "Invasive"}
    splits = experiment_splits(cfg.data, records, cfg.seed)
    assert [s.name for s in splits] == ["fold1", "fold2", "fold3"]
    tested = [i for s in splits for i in s.ids("test")]
    assert sorted(tested) == sorted(r.image_id for r in records)  # every image tested exactly once
    for split in splits:  # each class's test images are one contiguous range of numbers
        for prefix in ("n", "b", "is", "iv"):
            numbers = sorted(int(i[len(prefix) :]) for i in split.ids("test") if i.rstrip("0123456789") == prefix)
            assert numbers == list(range(numbers[0], numbers[-1] + 1))


def test_breakhis_official_folds_per_magnification(breakhis_root):
    cfg = _cfg({"root": str(breakhis_root), "magnification": 40})
    records, classes = experiment_records(cfg.data)
    assert classes == ["benign", "malignant"] and {r.magnification for r in records} == {40}
    splits = experiment_splits(cfg.data, records, cfg.seed)
    assert len(splits) == 5 and all(set(s.subsets) == {r.image_id for r in records} for s in splits)
    subtypes, subtype_classes = experiment_records(_cfg({"root": str(breakhis_root), "task": "subtype"}).data)
    assert subtype_classes == ["A", "F", "PT", "TA", "DC", "LC", "MC", "PC"]
    assert [r.label for r in subtypes] == [r.subtype for r in subtypes]
    assert experiment_records(_cfg({"root": str(breakhis_root), "task": "binary"}).data)[1] == ["benign", "malignant"]


def test_validation_split_is_patient_disjoint(bach_root):
    cfg = _cfg({"root": str(bach_root), "val_fraction": 0.25})
    records, _ = experiment_records(cfg.data)
    train, val = validation_split(cfg.data, records, cfg.seed)
    assert val and len(train) + len(val) == len(records)
    assert not {r.patient_id for r in train} & {r.patient_id for r in val}
    assert validation_split(_cfg({"root": str(bach_root), "val_fraction": 0.0}).data, records, 0) == (records, [])


def test_stain_target_fitted_on_a_training_image(bach_root, tmp_path):
    cfg = _cfg({"root": str(bach_root)}, preprocess={"stain": {"method": "reinhard", "target": "train"}})
    records, _ = experiment_records(cfg.data)
    normalizer = fit_stain_normalizer(cfg.preprocess.stain, records[:10], cfg.seed)
    assert isinstance(normalizer, ReinhardNormalizer) and normalizer.target_std.shape == (3,)
    saved = normalizer.save(tmp_path / "target.json")
    cfg_file = _cfg({"root": str(bach_root)}, preprocess={"stain": {"method": "reinhard", "target": str(saved)}})
    assert fit_stain_normalizer(cfg_file.preprocess.stain, records).to_dict() == normalizer.to_dict()
    assert fit_stain_normalizer(_cfg({"root": str(bach_root)}).preprocess.stain, records) is None
    wrong = _cfg({"root": str(bach_root)}, preprocess={"stain": {"method": "macenko", "target": str(saved)}})
    with pytest.raises(ConfigError, match="reinhard target"):
        fit_stain_normalizer(wrong.preprocess.stain, records)


def test_clear_errors(bach_root, tmp_path):
    with pytest.raises(ConfigError, match="data.root"):
        experiment_records(_cfg({}).data)
    with pytest.raises(DatasetError, match="not found"):
        experiment_records(_cfg({"root": str(tmp_path / "absent")}).data)
    with pytest.raises(ConfigError, match="data.task"):
        experiment_records(_cfg({"root": str(bach_root), "task": "subtype"}).data)
    with pytest.raises(ConfigError, match="not among the classes"):
        experiment_records(_cfg({"root": str(bach_root), "classes": ["Normal", "Benign"]}).data)
    with pytest.raises(ConfigError, match="magnification"):
        experiment_records(_cfg({"root": str(bach_root), "magnification": 40}).data)


@pytest.mark.realdata
def test_real_bach_binary_folds(bach_dir):
    from histobreast.pipelines.config import load_config

    cfg = load_config(
        Path(__file__).resolve().parents[1] / "configs" / "zhu2019" / "bach_binary.yaml", [f"data.root={bach_dir}"]
    )
    records, classes = experiment_records(cfg.data)
    splits = experiment_splits(cfg.data, records, cfg.seed)
    assert len(records) == 268 and classes == ["non-carcinoma", "carcinoma"]
    assert sorted(i for s in splits for i in s.ids("test")) == sorted(r.image_id for r in records)
    assert all(abs(len(s.ids("test")) - 268 / 5) < 8 for s in splits)


@pytest.mark.realdata
def test_real_breakhis_official_folds(breakhis_dir):
    cfg = _cfg({"root": str(breakhis_dir)})
    records, classes = experiment_records(cfg.data)
    splits = experiment_splits(cfg.data, records, cfg.seed)
    assert classes == ["benign", "malignant"] and len(splits) == 5
    assert all(set(s.subsets) == {r.image_id for r in records} for s in splits)


def test_system_b_view_rows_are_checked_by_the_image_they_come_from(tmp_path: Path) -> None:
    """``histobreast evaluate`` on a System B run: its patch table's ``n001/raw`` rows belong to n001."""
    split = Split("fold1", {"n001": "test", "n002": "train"}, {"n001": "P1", "n002": "P2"})
    write_splits_csv([split], tmp_path / "splits.csv")

    def views(*ids: str) -> Predictions:
        return Predictions(
            ["a", "b"], list(ids), np.full((len(ids), 2), 0.5), np.zeros(len(ids), int), ["P1"] * len(ids)
        )

    check_saved_predictions(tmp_path, {1: {"patch": views("n001/raw", "n001/rot90/1")}}, "test")
    with pytest.raises(DatasetError, match=r"'n002/raw' is not in fold 1's test set .*train image"):
        check_saved_predictions(tmp_path, {1: {"patch": views("n001/raw", "n002/raw")}}, "test")
    with pytest.raises(DatasetError, match=r"'n003/raw' is not in fold 1's test set .*absent"):
        check_saved_predictions(tmp_path, {1: {"patch": views("n003/raw")}}, "test")
