"""BACH reader: real copies, label-file disagreements, scale inference, pseudo-patients, contiguous folds."""

from __future__ import annotations

import shutil
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from histobreast.data.bach import BACH_CLASSES, bach_patient_id, read_bach
from histobreast.data.imageio import SkipReport
from histobreast.data.records import ImageRecord, write_scale_file
from histobreast.data.splits import bagging_splits, check_no_leakage, contiguous_folds
from histobreast.errors import DatasetError


def _tree(root: Path, names: dict[str, list[int]], width: int = 32, csv_lines: list[str] | None = None) -> Path:
    """A BACH tree of flat grey images; ``csv_lines`` (when given) becomes the ground-truth CSV."""
    photos = root / "ICIAR2018_BACH_Challenge" / "Photos"
    prefixes = {"Normal": "n", "Benign": "b", "InSitu": "is", "Invasive": "iv"}
    for label, numbers in names.items():
        (photos / label).mkdir(parents=True, exist_ok=True)
        for number in numbers:
            Image.fromarray(np.full((width * 3 // 4, width, 3), 200, np.uint8)).save(
                photos / label / f"{prefixes[label]}{number:03d}.png"
            )
    if csv_lines is not None:
        (photos / "microscopy_ground_truth.csv").write_text("\n".join(csv_lines) + "\n")
    return photos


@pytest.mark.realdata
def test_real_bach_copies(bach_dir: Path) -> None:
    records = read_bach(bach_dir)
    assert len(records) == 268
    assert Counter(r.label for r in records) == {"Normal": 77, "Benign": 52, "InSitu": 70, "Invasive": 69}
    assert {r.microns_per_pixel for r in records} == {0.84}  # inferred from the common 1024-pixel width
    assert records[0].patient_id == "Normal:001-010" and records[0].index == 1


@pytest.mark.realdata
def test_real_bach_contiguous_folds_keep_number_blocks_together(bach_dir: Path) -> None:
    records = read_bach(bach_dir)
    folds = contiguous_folds(records, k=5)
    assert len(folds) == 5
    by_id = {r.image_id: r for r in records}
    tested = Counter()
    for fold in folds:
        train = {fold.patients[i] for i in fold.ids("train")}
        test = {fold.patients[i] for i in fold.ids("test")}
        assert not train & test
        tested.update(fold.ids("test"))
        for label in BACH_CLASSES:  # the held-out images of a class are one run of consecutive present numbers
            present = sorted(r.index for r in records if r.label == label)
            held = sorted(by_id[i].index for i in fold.ids("test") if by_id[i].label == label)
            start = present.index(held[0])
            assert present[start : start + len(held)] == held
    assert set(tested) == set(by_id) and set(tested.values()) == {1}  # each image tested exactly once


def test_csv_disagreement_is_an_error_naming_the_file(tmp_path: Path) -> None:
    photos = _tree(
        tmp_path, {"Normal": [1, 2], "Benign": [1]}, csv_lines=["n001.tif,Normal", "n002.tif,Normal", "b001.tif,Benign"]
    )
    assert len(read_bach(tmp_path)) == 3
    shutil.copy(photos / "Benign" / "b001.png", photos / "Normal" / "b002.png")  # prefix b in Normal/
    with pytest.raises(DatasetError, match=r"b002.png: prefix 'b' means Benign, but the file is in Normal/"):
        read_bach(tmp_path)
    (photos / "Normal" / "b002.png").unlink()
    (photos / "microscopy_ground_truth.csv").write_text("n001.tif,Normal\nn002.tif,Normal\n")
    with pytest.raises(DatasetError, match=r"b001.png: not listed in .*microscopy_ground_truth.csv"):
        read_bach(tmp_path)
    (photos / "microscopy_ground_truth.csv").write_text("n001.tif,Normal\nn002.tif,Benign\nb001.tif,Benign\n")
    with pytest.raises(
        DatasetError,
        match=r"microscopy_ground_truth.csv:2: n002.tif is labelled Benign, but its "
        r"prefix means Normal",
    ):
        read_bach(tmp_path)
    (photos / "microscopy_ground_truth.csv").write_text("n001.tif,Normal\nn002.tif,Normal,extra\n")
    with pytest.raises(DatasetError, match=r"microscopy_ground_truth.csv:2: expected"):
        read_bach(tmp_path)


def test_bad_files_are_skipped_only_on_request(tmp_path: Path) -> None:
    photos = _tree(tmp_path, {"InSitu": [1, 2, 3]})
    (photos / "InSitu" / "is004.png").write_bytes(b"")
    (photos / "InSitu" / "weird.png").write_bytes(b"x")
    (photos / "stray.png").write_bytes(b"x")
    with pytest.raises(DatasetError):
        read_bach(tmp_path)
    skip = SkipReport()
    records = read_bach(tmp_path, skip=skip)
    assert [r.image_id for r in records] == ["is001", "is002", "is003"]
    assert sorted(e.path.name for e in skip) == ["is004.png", "stray.png", "weird.png"]


def test_scale_argument_file_and_width_inference(tmp_path: Path) -> None:
    _tree(tmp_path / "w2048", {"Normal": [1]}, width=2048)
    assert read_bach(tmp_path / "w2048")[0].microns_per_pixel == 0.42
    _tree(tmp_path / "w1024", {"Normal": [1, 2]}, width=1024)
    assert read_bach(tmp_path / "w1024")[0].microns_per_pixel == 0.84
    assert read_bach(tmp_path / "w1024", microns_per_pixel=0.5)[0].microns_per_pixel == 0.5
    write_scale_file(tmp_path / "w1024", 0.9)
    assert read_bach(tmp_path / "w1024")[0].microns_per_pixel == 0.9
    _tree(tmp_path / "mixed", {"Normal": [1], "Benign": [1]}, width=64)
    _tree(tmp_path / "mixed", {"Benign": [2]}, width=128)
    with pytest.raises(DatasetError, match=r"different widths \[64, 128\].*microns_per_pixel"):
        read_bach(tmp_path / "mixed")
    assert read_bach(tmp_path / "mixed", microns_per_pixel=1.0)[0].microns_per_pixel == 1.0


def test_pseudo_patients_are_blocks_of_consecutive_numbers() -> None:
    assert bach_patient_id("Normal", 1) == bach_patient_id("Normal", 10) == "Normal:001-010"
    assert bach_patient_id("Normal", 11) == "Normal:011-020"
    assert bach_patient_id("Invasive", 7, block_size=5) == "Invasive:006-010"
    with pytest.raises(DatasetError):
        bach_patient_id("Normal", 1, block_size=0)


def test_contiguous_folds_refuse_too_few_blocks_and_records_without_numbers(tmp_path: Path) -> None:
    records = [
        ImageRecord(
            path=Path(f"n{i:03d}.png"),
            label="Normal",
            patient_id=bach_patient_id("Normal", i),
            microns_per_pixel=0.42,
            source="bach",
            index=i,
        )
        for i in range(1, 31)
    ]
    with pytest.raises(DatasetError, match="3 patient blocks, fewer than 5 folds"):
        contiguous_folds(records, k=5)
    folds = contiguous_folds(records, k=3)
    assert [fold.ids("test") for fold in folds] == [[f"n{i:03d}" for i in range(s, s + 10)] for s in (1, 11, 21)]
    with pytest.raises(DatasetError, match="need image numbers"):
        contiguous_folds(
            [ImageRecord(path=Path("x.png"), label="a", patient_id="p", microns_per_pixel=1, source="folder")], k=2
        )


def test_contiguous_bagging_spreads_a_class_with_too_few_blocks(caplog) -> None:
    def records(label: str, count: int) -> list[ImageRecord]:
        return [
            ImageRecord(
                path=Path(f"{label[0].lower()}{i:03d}.png"),
                label=label,
                patient_id=bach_patient_id(label, i),
                microns_per_pixel=0.42,
                source="bach",
                index=i,
            )
            for i in range(1, count + 1)
        ]

    training = records("Normal", 50) + records("Benign", 40)  # Benign: 4 blocks for 5 members
    with caplog.at_level("WARNING"):
        splits = bagging_splits(training, k=5, contiguous=True)
    assert "'Benign' has 4 patient blocks, fewer than 5 parts" in caplog.text
    benign_val = [[i for i in split.ids("val") if i.startswith("b")] for split in splits]
    assert [len(ids) for ids in benign_val] == [10, 10, 10, 10, 0]  # parts 0, 1, 2, 3 (= i * 5 // 4)
    assert sorted(i for ids in benign_val for i in ids) == sorted(r.image_id for r in training if r.label == "Benign")
    assert all(len([i for i in split.ids("val") if i.startswith("n")]) == 10 for split in splits)
    for split in splits:
        check_no_leakage(split)
    assert len([i for i in splits[4].ids("train") if i.startswith("b")]) == 40  # member 5 trains on all of Benign
    # four classes of one block each, cut in two: two classes per part, not all in the first
    with caplog.at_level("WARNING"):
        halves = bagging_splits([r for label in ("A", "B", "C", "D") for r in records(label, 10)], k=2, contiguous=True)
    assert [len(split.ids("val")) for split in halves] == [20, 20]
    assert {i[0] for i in halves[0].ids("val")} == {"a", "c"} and {i[0] for i in halves[1].ids("val")} == {"b", "d"}
