"""Synthetic H&E trees: real names and layouts, consistent patients and folds, deterministic pixels,
classes that differ in nuclear density."""

from __future__ import annotations

from collections import Counter, defaultdict
from pathlib import Path

import numpy as np
import pytest

from histobreast.data.bach import read_bach
from histobreast.data.breakhis import MAGNIFICATIONS, parse_breakhis_name, read_breakhis, read_breakhis_folds
from histobreast.data.imageio import read_rgb
from histobreast.data.synthetic import plan_breakhis, render_he, synth_bach, synth_breakhis
from histobreast.errors import DatasetError
from histobreast.preprocess.krem import detect_nuclei


def test_synthetic_breakhis_tree_reads_back_with_consistent_patients_and_folds(tmp_path: Path) -> None:
    written = synth_breakhis(tmp_path, patients_per_subtype=2, images_per_magnification=2, size=(24, 16), seed=5)
    records = read_breakhis(tmp_path)
    assert records == sorted(written, key=lambda r: r.path)  # names parse into the same records
    assert all(parse_breakhis_name(r.path.name).filename == r.path.name for r in records)
    patients = {r.patient_id for r in records}
    assert len(patients) == 16
    for patient in patients:  # every patient has 2 images at every magnification
        assert Counter(r.magnification for r in records if r.patient_id == patient) == {m: 2 for m in MAGNIFICATIONS}
    folds = read_breakhis_folds(tmp_path / "mkfold")
    assert [f.name for f in folds] == [f"fold{i}" for i in range(1, 6)]
    for fold in folds:
        assert set(fold.subsets) == {r.image_id for r in records}
        assert {r.patient_id: fold.patients[r.image_id] for r in records} == {
            r.patient_id: r.patient_id for r in records
        }
        test_share = len(fold.ids("test")) / len(records)
        assert 0.2 <= test_share <= 0.4
        assert {r.label for r in records if fold.subsets[r.image_id] == "test"} == {"benign", "malignant"}
    assert len({tuple(f.ids("test")) for f in folds}) == 5  # five different random splits


def test_synthetic_bach_tree_reads_back(tmp_path: Path) -> None:
    written = synth_bach(tmp_path, per_class=4, size=(64, 48), image_format="jpg", seed=2)
    records = read_bach(tmp_path)
    assert records == written
    assert {r.microns_per_pixel for r in records} == {0.42 * 2048 / 64}
    truth = (tmp_path / "ICIAR2018_BACH_Challenge" / "Photos" / "microscopy_ground_truth.csv").read_text().split()
    assert len(truth) == 16 and truth[0] == "n001.jpg,Normal"
    assert read_rgb(records[0].path).shape == (48, 64, 3)


def test_pixels_depend_only_on_seed_and_file_name(tmp_path: Path) -> None:
    a = synth_bach(tmp_path / "a", per_class=3, size=(40, 30), image_format="png", classes=("Benign",), seed=1)
    b = synth_bach(tmp_path / "b", per_class=3, size=(40, 30), image_format="png", classes=("Benign",), seed=1)
    c = synth_bach(tmp_path / "c", per_class=3, size=(40, 30), image_format="png", classes=("Benign",), seed=2)
    assert all(np.array_equal(read_rgb(x.path), read_rgb(y.path)) for x, y in zip(a, b))
    assert not np.array_equal(read_rgb(a[0].path), read_rgb(c[0].path))


@pytest.mark.realdata
def test_plan_from_real_fold_files_has_every_name_and_patient(breakhis_dir: Path) -> None:
    plan = plan_breakhis(from_folds=breakhis_dir / "mkfold")
    listed = read_breakhis_folds(breakhis_dir / "mkfold")[0].subsets
    assert len(plan) == 7909 and len({n.patient_id for n in plan}) == 82
    assert {n.filename[:-4] for n in plan} == set(listed)
    assert {n.relpath.as_posix() for n in plan} >= {
        p.relative_to(breakhis_dir).as_posix() for p in breakhis_dir.rglob("*.png")
    }  # real tree paths


def _fold_subset(breakhis_dir: Path, out: Path, patients: set[str]) -> Path:
    """Fold files holding only ``patients``' lines of the real ones (a fast stand-in for all 7,909)."""
    out.mkdir()
    for path in sorted((breakhis_dir / "mkfold").glob("dsfold*.txt")):
        lines = [
            line
            for line in path.read_text().splitlines()
            if parse_breakhis_name(line.split("|")[0]).patient_id in patients
        ]
        (out / path.name).write_text("\n".join(lines) + "\n")
    return out


@pytest.mark.realdata
def test_synth_from_fold_files_writes_exactly_their_names_and_folds(breakhis_dir: Path, tmp_path: Path) -> None:
    source = _fold_subset(breakhis_dir, tmp_path / "folds", {"DC-14-13412", "LC-14-13412", "F-14-25197"})
    written = synth_breakhis(tmp_path / "tree", from_folds=source, size=(14, 10))
    expected = read_breakhis_folds(source)
    assert {r.image_id for r in read_breakhis(tmp_path / "tree")} == set(expected[0].subsets)
    assert len({r.patient_id for r in written}) == 3
    copied = read_breakhis_folds(tmp_path / "tree" / "mkfold")
    assert [(f.name, dict(f.subsets)) for f in copied] == [(f.name, dict(f.subsets)) for f in expected]


@pytest.mark.slow
@pytest.mark.realdata
@pytest.mark.timeout(900)
def test_synth_from_all_real_fold_files(breakhis_dir: Path, tmp_path: Path) -> None:
    """All 7,909 images at 28x18 (40-70 s on 2 shared cores)."""
    written = synth_breakhis(tmp_path, from_folds=breakhis_dir / "mkfold", size=(28, 18))
    records = read_breakhis(tmp_path, verify=False)
    assert len(records) == len(written) == 7909
    assert len({r.patient_id for r in records}) == 82
    assert len(read_breakhis_folds(tmp_path)) == 5


def _mean_nuclei(tissue: str, size: tuple[int, int], mpp: float, images: int = 3) -> float:
    counts = [len(detect_nuclei(render_he(tissue, size, mpp, np.random.default_rng(i)), mpp)) for i in range(images)]
    return float(np.mean(counts))


def test_malignant_classes_have_more_nuclei_than_benign_ones() -> None:
    """KREM's nuclei detector (System B) counts more nuclei in carcinoma than in benign/normal tissue.

    BACH at half our real copies' size (512x384, 1.68 µm/px); BreaKHis 200X at half size (1.96 µm/px).
    """
    bach = {
        label: _mean_nuclei(label, (512, 384), 0.42 * 2048 / 512)
        for label in ("Normal", "Benign", "InSitu", "Invasive")
    }
    assert min(bach["InSitu"], bach["Invasive"]) > 1.1 * max(bach["Normal"], bach["Benign"])
    breakhis = defaultdict(list)
    for subtype in ("A", "F", "PT", "TA", "DC", "LC", "MC", "PC"):
        label = "benign" if subtype in ("A", "F", "PT", "TA") else "malignant"
        breakhis[label].append(_mean_nuclei(subtype, (350, 230), 0.98 * 700 / 350, images=2))
    assert np.mean(breakhis["malignant"]) > 1.3 * np.mean(breakhis["benign"])


def test_synth_again_replaces_its_earlier_tree_and_refuses_other_data(tmp_path: Path) -> None:
    synth_bach(tmp_path, per_class=3, size=(64, 48), image_format="tif", seed=1)
    again = synth_bach(tmp_path, per_class=2, size=(48, 36), image_format="png", seed=1)  # other count, size, format
    read = read_bach(tmp_path)  # no stray .tif of the first tree, one scale
    assert sorted(r.path for r in read) == sorted(r.path for r in again)
    assert {r.microns_per_pixel for r in read} == {again[0].microns_per_pixel}
    synth_breakhis(tmp_path / "bh", patients_per_subtype=1, images_per_magnification=2, size=(24, 16), seed=5)
    smaller = synth_breakhis(tmp_path / "bh", patients_per_subtype=1, images_per_magnification=1, size=(28, 18))
    assert sorted(r.path for r in read_breakhis(tmp_path / "bh")) == sorted(r.path for r in smaller)
    theirs = tmp_path / "theirs"  # a real-looking tree without the marker: untouched
    (theirs / "ICIAR2018_BACH_Challenge" / "Photos").mkdir(parents=True)
    keep = theirs / "ICIAR2018_BACH_Challenge" / "Photos" / "note.txt"
    keep.write_text("mine")
    with pytest.raises(DatasetError, match="not written by `histobreast data synth`.*nothing was changed"):
        synth_bach(theirs, per_class=1)
    assert keep.read_text() == "mine" and sorted(p.name for p in theirs.iterdir()) == ["ICIAR2018_BACH_Challenge"]
    scale_only = tmp_path / "scale_only"  # someone's scale file alone is theirs too: not deleted
    scale_only.mkdir()
    (scale_only / "histobreast.json").write_text('{"microns_per_pixel": 0.5}')
    with pytest.raises(DatasetError, match="already holds histobreast.json"):
        synth_bach(scale_only, per_class=1)
    assert (scale_only / "histobreast.json").read_text() == '{"microns_per_pixel": 0.5}'
