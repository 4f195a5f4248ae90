"""Splits: leakage refused naming the patient, patient-level and bagging splits, split files; folder reader."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from histobreast.data.folder import read_folder
from histobreast.data.readers import make_splits, read_dataset
from histobreast.data.records import ImageRecord
from histobreast.data.splits import (
    Split,
    bagging_splits,
    check_no_leakage,
    patient_split,
    read_splits_csv,
    split_from_records,
    write_splits_csv,
)
from histobreast.errors import DatasetError, SplitLeakageError


def _records(patients_per_label: int = 6, images: int = 3, labels: tuple[str, ...] = ("a", "b")) -> list[ImageRecord]:
    return [
        ImageRecord(
            path=Path(f"{label}{p}_{i}.png"),
            label=label,
            patient_id=f"{label}{p}",
            microns_per_pixel=0.5,
            source="folder",
        )
        for label in labels
        for p in range(patients_per_label)
        for i in range(images)
    ]


def test_leaking_split_is_refused_naming_the_patient() -> None:
    records = _records()
    with pytest.raises(SplitLeakageError, match=r"leaky: 1 patient\(s\) on more than one side: a0 \(train \+ val\)"):
        split_from_records("leaky", {"train": records[:2], "val": records[2:]})
    with pytest.raises(SplitLeakageError, match="a0"):
        check_no_leakage({"train": records[:1], "test": records[1:3]})
    with pytest.raises(SplitLeakageError, match="b5"):
        Split("s", {"x1": "train", "x2": "test"}, {"x1": "b5", "x2": "b5"})
    with pytest.raises(DatasetError, match="is in both 'train' and 'val'"):
        split_from_records("twice", {"train": records[:3], "val": records[:3]})


def test_patient_split_is_stratified_patient_disjoint_and_seeded() -> None:
    records = _records(patients_per_label=10)
    split = patient_split(records, seed=1)
    assert split.subset_names == ["train", "val", "test"]
    for subset in split.subset_names:  # every class in every subset
        assert {r.label for r in split.select(records, subset)} == {"a", "b"}
    fractions = {"train": 0.7, "val": 0.15, "test": 0.15}
    for label in ("a", "b"):  # each class's share of a subset is off by less than one patient (3 images)
        for subset, fraction in fractions.items():
            count = sum(r.label == label for r in split.select(records, subset))
            assert abs(count - fraction * 30) < 3
    assert patient_split(records, seed=1) == split and patient_split(records, seed=2) != split
    with pytest.raises(DatasetError, match="too few"):
        patient_split(_records(patients_per_label=1))


def test_bagging_gives_k_disjoint_subsets_and_model_k_validates_on_subset_k() -> None:
    records = _records(patients_per_label=10)
    bags = bagging_splits(records, k=5, seed=0)
    assert [b.name for b in bags] == [f"bag{j}" for j in range(1, 6)]
    held = [set(b.ids("val")) for b in bags]
    assert all(not held[i] & held[j] for i in range(5) for j in range(i + 1, 5))
    assert set().union(*held) == {r.image_id for r in records}
    for j, bag in enumerate(bags):
        assert set(bag.ids("train")) == set().union(*(held[i] for i in range(5) if i != j))
        assert {r.label for r in bag.select(records, "val")} == {"a", "b"}  # stratified


def test_split_file_round_trip_and_errors(tmp_path: Path) -> None:
    splits = bagging_splits(_records(), k=3, seed=0) + [patient_split(_records(), seed=0)]
    path = write_splits_csv(splits, tmp_path / "splits.csv")
    again = read_splits_csv(path)
    assert [(s.name, dict(s.subsets), dict(s.patients)) for s in again] == [
        (s.name, dict(s.subsets), dict(s.patients)) for s in splits
    ]
    assert not list(tmp_path.glob(".splits.csv.*"))  # atomic write left no temporary file
    lines = path.read_text().splitlines()
    leaky = tmp_path / "leaky.csv"
    leaky.write_text("\n".join(lines + ["bag1,extra_image,a0,val"]) + "\n")  # a0 trains in bag1
    with pytest.raises(SplitLeakageError, match=r"leaky.csv: bag1: .*a0"):
        read_splits_csv(leaky)
    broken = tmp_path / "broken.csv"
    broken.write_text("split,image_id,subset\n")
    with pytest.raises(DatasetError, match=r"broken.csv: missing columns \['patient_id'\]"):
        read_splits_csv(broken)


def test_select_refuses_records_of_another_patient_definition() -> None:
    records = _records()
    split = patient_split(records, {"train": 0.5, "test": 0.5})
    other = [
        ImageRecord(path=r.path, label=r.label, patient_id="someone", microns_per_pixel=0.5, source="folder")
        for r in records
    ]
    with pytest.raises(DatasetError, match="differs from split"):
        split.select(other, "train")


def _folder_tree(root: Path) -> Path:
    for label, names in {"tumour": ["t1", "t2", "t3"], "normal": ["n1", "sub/n2"]}.items():
        for name in names:
            path = root / label / f"{name}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(np.full((8, 8, 3), 128, np.uint8)).save(path)
    return root


def test_folder_reader_with_patients_csv(tmp_path: Path) -> None:
    root = _folder_tree(tmp_path / "own")
    with pytest.raises(DatasetError, match="scale unknown"):
        read_folder(root)
    records = read_folder(root, microns_per_pixel=0.5)
    assert [(r.label, r.patient_id) for r in records] == [
        ("normal", "n1"),
        ("normal", "n2"),
        ("tumour", "t1"),
        ("tumour", "t2"),
        ("tumour", "t3"),
    ]
    (root / "patients.csv").write_text(
        "image,patient,label\nnormal/n1.png,P1,normal\nn2.png,P1,normal\n"
        "tumour/t1.png,P2,tumour\nt2.png,P2,\nt3.png,P3,tumour\n"
    )
    records = read_dataset(root, "folder", microns_per_pixel=0.5)
    assert Counter(r.patient_id for r in records) == {"P1": 2, "P2": 2, "P3": 1}
    (root / "patients.csv").write_text("image,patient,label\nnormal/n1.png,P1,tumour\n")
    with pytest.raises(DatasetError, match=r"n1.png: in folder normal/ but .*patients.csv:2 says tumour"):
        read_folder(root, microns_per_pixel=0.5)
    (root / "patients.csv").write_text("image,patient\nnormal/n1.png,P1\n")
    with pytest.raises(DatasetError, match=r"n2.png: not listed in"):
        read_folder(root, microns_per_pixel=0.5)
    (root / "patients.csv").write_text("image,who\n")
    with pytest.raises(DatasetError, match=r"missing columns \['patient'\]"):
        read_folder(root, microns_per_pixel=0.5)


def test_make_splits_dispatches_every_scheme() -> None:
    records = _records(patients_per_label=10)
    assert [s.name for s in make_splits(records, "bagging", k=3)] == ["bag1", "bag2", "bag3"]
    assert [s.name for s in make_splits(records, "patient")] == ["patient"]
    with pytest.raises(DatasetError, match="need image numbers"):
        make_splits(records, "contiguous")
    with pytest.raises(DatasetError, match="fold files"):
        make_splits(records, "official")
    with pytest.raises(DatasetError, match="unknown split scheme"):
        make_splits(records, "random")


@pytest.mark.parametrize("scheme", ["contiguous", "bagging"])
@pytest.mark.parametrize("k", [-1, 0, 1])
def test_fewer_than_two_parts_is_refused_in_words(scheme: str, k: int) -> None:
    with pytest.raises(DatasetError, match=rf"need k >= 2, got k = {k}"):
        make_splits(_records(patients_per_label=10), scheme, k=k)
