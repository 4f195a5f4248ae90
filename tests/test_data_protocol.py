"""The fold protocol's one owner: ``read_fold`` gives what the hand-typed sequence gave, fold names."""

from __future__ import annotations

import hashlib

import pytest

from histobreast.data.protocol import experiment_splits, fold_records, read_fold, select_split, validation_split
from histobreast.data.splits import fold_name, fold_number
from histobreast.data.synthetic import synth_bach
from histobreast.data.task_records import experiment_records
from histobreast.errors import ConfigError
from histobreast.pipelines.config import parse_config

# (images, sha256 of the comma-joined ids) of fold 2's subsets, seed 3. The test images are those the
# hand-typed sequence records -> splits -> fold -> validation split -> test gave before the protocol
# had one owner; train/val changed once since, when the validation hold-out's seed became
# ``derive_seed(seed, fold)`` (it was ``seed * 1000 + fold``).
BEFORE = {
    "official": {"train": (33, "155f8ba27d3bccca"), "val": (11, "395fc4be083dbb0d"), "test": (40, "4830642373825609")},
    "patient": {"train": (41, "0b83b7227a48f29f"), "val": (12, "a830f8a2626f16f8"), "test": (31, "8966feab57861653")},
}


def _digest(records):
    ids = [r.image_id for r in records]
    return len(ids), hashlib.sha256(",".join(ids).encode()).hexdigest()[:16]


@pytest.fixture(scope="module")
def bach_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("bach")
    synth_bach(root, per_class=21, size=(32, 24), image_format="png", seed=0)
    return root


def _data(root, split):
    cfg = parse_config(
        {
            "name": "t",
            "seed": 3,
            "model": {"name": "resnet18"},
            "train": {"epochs": 1},
            "data": {"root": str(root), "task": "binary", "n_folds": 3, "val_fraction": 0.25, "split": split},
        }
    )
    return cfg.data, cfg.seed


@pytest.mark.parametrize("scheme", ["official", "patient"])
def test_read_fold_gives_the_splits_of_before(bach_root, scheme):
    data, seed = _data(bach_root, scheme)
    fold, classes = read_fold(data, seed, 2)
    assert classes == ["non-carcinoma", "carcinoma"] and fold.number == 2 and fold.split.name == "fold2"
    assert {name: _digest(getattr(fold, name)) for name in ("train", "val", "test")} == BEFORE[scheme]
    records, _ = experiment_records(data)  # the steps it owns, one by one
    split = experiment_splits(data, records, seed)[1]
    assert fold.training == select_split(split, records, "train")
    assert (fold.train, fold.val) == validation_split(data, fold.training, seed, 2)


def test_fold_records_checks_the_fold_and_can_evaluate_on_validation(bach_root):
    data, seed = _data(bach_root, "official")
    records, _ = experiment_records(data)
    splits = experiment_splits(data, records, seed)
    assert (
        fold_records(data, seed, 1, records, splits, evaluate="val").test
        == fold_records(data, seed, 1, records, splits).val
    )
    with pytest.raises(ConfigError, match=r"^--fold 4: the protocol has 3 folds$"):
        fold_records(data, seed, 4, records, splits, option="--fold")


def test_fold_names_are_made_and_parsed_in_one_place():
    assert fold_name(3) == "fold3" and fold_number("fold3") == 3 and fold_number(fold_name(12)) == 12
    assert [fold_number(n) for n in ("fold", "folds", "fold3x", "report", "3")] == [None] * 5
