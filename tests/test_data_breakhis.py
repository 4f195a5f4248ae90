"""BreaKHis: file-name parser (hypothesis round trip, malformed names), tree reader, official folds."""

from __future__ import annotations

import csv
import shutil
from collections import Counter
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from histobreast.data.breakhis import (
    BREAKHIS_SUBTYPES,
    DEFAULT_MICRONS_PER_PIXEL,
    MAGNIFICATIONS,
    BreakhisName,
    official_folds,
    parse_breakhis_name,
    read_breakhis,
    read_breakhis_folds,
    split_by_magnification,
    write_dsfold,
    write_kaggle_folds,
)
from histobreast.data.imageio import SkipReport
from histobreast.data.records import write_scale_file
from histobreast.data.synthetic import synth_breakhis
from histobreast.errors import DatasetError

BENIGN = ("A", "F", "PT", "TA")

names = st.builds(
    lambda subtype, year, slide, letters, mag, seq: BreakhisName(
        "SOB", "B" if subtype in BENIGN else "M", subtype, f"{year:02d}", f"{slide}{letters}", mag, seq
    ),
    st.sampled_from(BREAKHIS_SUBTYPES),
    st.integers(0, 99),
    st.integers(1, 99999),
    st.text("ABCDEFGH", max_size=2),
    st.sampled_from(MAGNIFICATIONS),
    st.integers(1, 999),
)


@settings(max_examples=500, deadline=None)
@given(names)
def test_parser_round_trips_generated_names(name: BreakhisName) -> None:
    assert parse_breakhis_name(name.filename) == name
    assert parse_breakhis_name(str(Path("/any/dir") / name.relpath)) == name  # a path parses by its name
    assert name.relpath.parts[-2] == f"{name.magnification}X"
    assert name.patient_id == f"{name.subtype}-{name.year}-{name.slide}"


@pytest.mark.parametrize(
    "bad, why",
    [
        ("SOB_B_A-14-22549AB-40-001.jpg", "not a BreaKHis file name"),
        ("SOB_B_A-14-22549AB-40-01.png", "not a BreaKHis file name"),
        ("SOB_B_A_14-22549AB-40-001.png", "not a BreaKHis file name"),
        ("sob_b_a-14-22549AB-40-001.png", "not a BreaKHis file name"),
        ("SOB_B_A-14-22549AB-50-001.png", "magnification 50"),
        ("SOB_B_A-14-22549AB-040-001.png", "magnification 040"),
        ("SOB_B_XX-14-22549AB-40-001.png", "unknown BreaKHis subtype 'XX'"),
        ("SOB_M_A-14-22549AB-40-001.png", "subtype A is benign"),
        ("SOB_B_DC-14-22549AB-40-001.png", "subtype DC is malignant"),
        ("notes.txt", "not a BreaKHis file name"),
    ],
)
def test_parser_rejects_malformed_names_naming_them(bad: str, why: str) -> None:
    with pytest.raises(DatasetError, match=why) as info:
        parse_breakhis_name(bad)
    assert str(info.value).startswith(bad)


@pytest.mark.realdata
def test_real_tree_matches_its_manifest(breakhis_dir: Path) -> None:
    records = read_breakhis(breakhis_dir)
    assert len(records) == 25
    assert len({r.patient_id for r in records}) == 18
    assert {r.magnification for r in records} == set(MAGNIFICATIONS)
    assert {r.subtype for r in records} == set(BREAKHIS_SUBTYPES)
    with (breakhis_dir / "manifest.csv").open(newline="") as fh:
        manifest = {row["filename"]: row for row in csv.DictReader(fh)}
    assert set(manifest) == {r.path.name for r in records}
    for record in records:
        row = manifest[record.path.name]
        assert record.label == row["binary_label"]
        assert record.subtype == row["tumor_code"]
        assert record.magnification == int(row["magnification"].removesuffix("X"))
        assert record.patient_id.split("-", 1)[1] == row["patient_id"]  # manifest ids omit the subtype
        assert record.microns_per_pixel == DEFAULT_MICRONS_PER_PIXEL[record.magnification]
    assert Counter(r.label for r in records) == {"benign": 16, "malignant": 9}
    assert Counter(r.magnification for r in records) == {40: 14, 100: 3, 200: 6, 400: 2}


@pytest.mark.realdata
def test_real_fold_files_give_the_stated_counts_and_never_leak(breakhis_dir: Path) -> None:
    folds = read_breakhis_folds(breakhis_dir / "mkfold")
    assert [f.name for f in folds] == [f"fold{i}" for i in range(1, 6)]
    counts = {mag: (len(s.ids("train")), len(s.ids("test"))) for mag, s in split_by_magnification(folds[0]).items()}
    assert counts == {40: (1250, 745), 100: (1321, 760), 200: (1269, 744), 400: (1165, 655)}  # SOURCE.md
    for fold in folds:
        assert len(fold.subsets) == 7909
        assert len(set(fold.patients.values())) == 82
        train = {fold.patients[i] for i in fold.ids("train")}
        test = {fold.patients[i] for i in fold.ids("test")}
        assert not train & test and (len(train), len(test)) == (54, 28)
    # 14-13412 is two patients (DC and LC), as the official folds count it: they split them in fold 1.
    sides = {folds[0].subsets[i] for i, p in folds[0].patients.items() if p in ("DC-14-13412", "LC-14-13412")}
    assert sides == {"train", "test"}


@pytest.mark.realdata
def test_real_tree_is_covered_by_the_official_folds(breakhis_dir: Path) -> None:
    records = read_breakhis(breakhis_dir)
    folds = official_folds(records, breakhis_dir)
    assert all(sorted(f.subsets) == sorted(r.image_id for r in records) for f in folds)


def test_kaggle_folds_csv_round_trip(tmp_path: Path) -> None:
    synth_breakhis(tmp_path / "tree", patients_per_subtype=2, images_per_magnification=1, size=(16, 12), seed=3)
    folds = read_breakhis_folds(tmp_path / "tree")
    kaggle = write_kaggle_folds(folds, tmp_path / "Folds.csv")
    with kaggle.open(newline="") as fh:
        first = next(csv.DictReader(fh))
    assert first["filename"].startswith("BreaKHis_v1/histology_slides/breast/")
    again = read_breakhis_folds(kaggle)
    assert [(f.name, dict(f.subsets), dict(f.patients)) for f in again] == [
        (f.name, dict(f.subsets), dict(f.patients)) for f in folds
    ]
    (tmp_path / "only_kaggle").mkdir()
    shutil.copy(kaggle, tmp_path / "only_kaggle" / "Folds.csv")
    assert [f.name for f in read_breakhis_folds(tmp_path / "only_kaggle")] == [f.name for f in folds]


def test_fold_file_errors_name_file_and_line(tmp_path: Path) -> None:
    good = "SOB_B_A-14-22549AB-40-001.png|40|1|train\n"
    cases = {
        "wrong_fields.txt": (good + "SOB_B_A-14-22549AB-40-002.png|40|1\n", ":2: expected"),
        "wrong_group.txt": (good + "SOB_B_A-14-22549AB-40-002.png|40|1|val\n", ":2: group must be"),
        "wrong_mag.txt": (good + "SOB_B_A-14-22549AB-40-002.png|100|1|test\n", ":2: magnification 100 disagrees"),
        "bad_name.txt": ("SOB_B_A-14-22549AB-40-1.png|40|1|train\n", ":1: SOB_B_A-14-22549AB-40-1.png: not a"),
        "twice.txt": (good + good, "listed twice"),
        "leak.txt": (good + "SOB_B_A-14-22549AB-100-001.png|100|1|test\n", "A-14-22549AB"),
    }
    for name, (text, message) in cases.items():
        (tmp_path / name).write_text(text)
        with pytest.raises(Exception, match=message) as info:
            read_breakhis_folds(tmp_path / name)
        assert str(tmp_path / name) in str(info.value)


def _tiny_tree(tmp_path: Path) -> Path:
    synth_breakhis(
        tmp_path, patients_per_subtype=1, images_per_magnification=1, magnifications=(40,), size=(16, 12), seed=1
    )
    return tmp_path


def test_reader_rejects_misnamed_and_misplaced_files_or_skips_them(tmp_path: Path) -> None:
    root = _tiny_tree(tmp_path)
    good = sorted(root.rglob("*.png"))
    bad_name = good[0].with_name("SOB_B_A-14-1-40-1.png")
    shutil.copy(good[0], bad_name)
    with pytest.raises(DatasetError, match="not a BreaKHis file name") as info:
        read_breakhis(root)
    assert str(bad_name) in str(info.value)
    misplaced = good[1].parent.parent / "100X" / good[1].name
    misplaced.parent.mkdir()
    shutil.move(good[1], misplaced)
    skip = SkipReport()
    records = read_breakhis(root, skip=skip)
    assert len(records) == len(good) - 1
    assert sorted(e.path for e in skip) == sorted([bad_name, misplaced])
    assert any("folder 100X disagrees" in line for line in skip.lines())


def test_scale_file_and_argument_override_the_defaults(tmp_path: Path) -> None:
    root = _tiny_tree(tmp_path)
    records = read_breakhis(root)  # synth at 16 px wide wrote histobreast.json
    assert records[0].microns_per_pixel == pytest.approx(DEFAULT_MICRONS_PER_PIXEL[40] * 700 / 16)
    write_scale_file(root, {40: 2.0, 100: 1.0, 200: 0.5, 400: 0.25})
    assert {r.microns_per_pixel for r in read_breakhis(root)} == {2.0}
    assert {r.microns_per_pixel for r in read_breakhis(root, microns_per_pixel=3.0)} == {3.0}
    with pytest.raises(DatasetError, match="no BreaKHis images found"):
        read_breakhis(root, magnifications=[100])  # the tree holds 40X only


def test_write_dsfold_round_trip(tmp_path: Path) -> None:
    synth_breakhis(tmp_path / "tree", patients_per_subtype=2, images_per_magnification=1, size=(16, 12))
    fold = read_breakhis_folds(tmp_path / "tree")[2]
    again = read_breakhis_folds(write_dsfold(fold, tmp_path / "dsfold3.txt", 3))
    assert again[0].name == "fold3" and dict(again[0].subsets) == dict(fold.subsets)
