"""Dataset summaries (``histobreast.data.inspect``) and the ``histobreast data`` commands."""

from __future__ import annotations

import io
import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from rich.console import Console
from typer.testing import CliRunner

from histobreast.cli import app, main
from histobreast.data.imageio import SkipReport
from histobreast.data.inspect import inspect_dataset, print_summary, summarise
from histobreast.data.records import ImageRecord
from histobreast.data.splits import read_splits_csv
from histobreast.data.synthetic import synth_bach
from histobreast.errors import DatasetError

runner = CliRunner()


def _render(summary) -> str:
    console = Console(width=120, record=True, file=io.StringIO())
    print_summary(summary, console)
    return console.export_text()


@pytest.mark.realdata
def test_real_breakhis_summary(breakhis_dir: Path) -> None:
    summary = inspect_dataset(breakhis_dir)
    assert (summary.kind, summary.images, summary.patients) == ("breakhis", 25, 18)
    assert summary.classes == ["benign", "malignant"] and summary.magnifications == [40, 100, 200, 400]
    rows = {(g.label, g.subtype): (g.images, g.patients, g.per_magnification) for g in summary.groups}
    assert rows[("benign", "A")] == (6, 3, {40: 4, 100: 1, 200: 1, 400: 0})  # SOURCE.md's table
    assert rows[("malignant", "DC")] == (3, 2, {40: 1, 100: 1, 200: 1, 400: 0})
    assert len(rows) == 8 and summary.sizes == {(700, 460): 25} and not summary.problems
    assert any("all 25 images here are listed" in note for note in summary.notes)
    text = _render(summary)
    assert "25 images, 18 patients, 2 classes, 8 subtypes, 4 magnifications" in text
    assert "4.9 (40X), 1.96 (100X), 0.98 (200X), 0.49 (400X)" in text and "No problems found." in text


def test_summary_lists_every_problem(tmp_path: Path) -> None:
    synth_bach(tmp_path, per_class=3, size=(40, 30), image_format="png", classes=("Normal", "Benign"))
    photos = tmp_path / "ICIAR2018_BACH_Challenge" / "Photos"
    (photos / "Normal" / "n002.png").write_bytes((photos / "Normal" / "n002.png").read_bytes()[:100])  # truncated
    (photos / "Benign" / "b003.png").write_bytes(b"")  # zero bytes
    shutil.copy(photos / "Benign" / "b001.png", photos / "Benign" / "x1.png")  # wrong name
    Image.fromarray(np.zeros((30, 41, 3), np.uint8)).save(photos / "Benign" / "b002.png")  # another size
    summary = inspect_dataset(tmp_path, microns_per_pixel=1.0)
    errors = {p.path.name: p.message for p in summary.errors}
    assert set(errors) == {"n002.png", "b003.png", "x1.png"}
    assert "empty file" in errors["b003.png"] and "not a BACH image name" in errors["x1.png"]
    assert "truncated or corrupt" in errors["n002.png"]
    assert summary.images == 4 and summary.sizes == {(40, 30): 3, (41, 30): 1}
    [size_warning] = [p for p in summary.warnings if "differ in size" in p.message]
    assert size_warning.message == "images differ in size: 3 are 40x30, others 41x30 (1): b002.png"
    text = _render(summary)
    assert "3 error(s)" in text and all(name in text for name in errors)
    # header-only inspection cannot see the truncated file
    assert "n002.png" not in {
        p.path.name for p in inspect_dataset(tmp_path, microns_per_pixel=1.0, decode=False).errors
    }


def test_summarise_from_python_flags_patients_under_two_labels() -> None:
    records = [
        ImageRecord(
            path=Path(f"/nowhere/{i}.png"), label=label, patient_id=patient, microns_per_pixel=0.5, source="folder"
        )
        for i, (label, patient) in enumerate([("a", "p1"), ("b", "p1"), ("b", "p2")])
    ]
    skip = SkipReport()
    skip.add("/nowhere/bad.png", "not an image")
    summary = summarise(records, skip)
    messages = [str(p) for p in summary.problems]
    assert "error: /nowhere/bad.png: not an image" in messages
    assert sum("file not found" in m for m in messages) == 3  # the records' files do not exist
    assert any("patient 'p1' has images of several classes" in m for m in messages)
    assert any("single-patient class(es)" in m and m.endswith(": a (p1)") for m in messages)
    assert json.loads(json.dumps(summary.to_dict()))["patients"] == 2


def test_cli_synth_inspect_split(tmp_path: Path) -> None:
    tree = tmp_path / "bh"
    result = runner.invoke(
        app,
        [
            "data",
            "synth",
            str(tree),
            "--kind",
            "breakhis",
            "--size",
            "20x14",
            "--patients-per-subtype",
            "1",
            "--images-per-magnification",
            "1",
        ],
    )
    assert result.exit_code == 0, result.output
    assert "wrote 32 synthetic BreaKHis images (8 patients" in result.output
    result = runner.invoke(app, ["data", "inspect", str(tree), "--json", str(tmp_path / "summary.json")])
    assert result.exit_code == 0, result.output
    assert "32 images, 8 patients, 2 classes, 8 subtypes, 4 magnifications" in result.output
    assert "all 32 images here are listed" in result.output
    assert json.loads((tmp_path / "summary.json").read_text())["sizes"] == {"20x14": 32}
    result = runner.invoke(
        app, ["data", "split", str(tree), "--scheme", "official", "--out", str(tmp_path / "splits.csv")]
    )
    assert result.exit_code == 0, result.output
    splits = read_splits_csv(tmp_path / "splits.csv")
    assert [s.name for s in splits] == [f"fold{i}" for i in range(1, 6)]
    assert all(len(s.subsets) == 32 for s in splits)

    bach = tmp_path / "bach"
    result = runner.invoke(
        app, ["data", "synth", str(bach), "--kind", "bach", "--per-class", "10", "--size", "32x24", "--format", "png"]
    )
    assert result.exit_code == 0 and "wrote 40 synthetic BACH images" in result.output
    result = runner.invoke(
        app,
        [
            "data",
            "split",
            str(bach),
            "--scheme",
            "contiguous",
            "--k",
            "2",
            "--block-size",
            "5",
            "--out",
            str(tmp_path / "bach.csv"),
        ],
    )
    assert result.exit_code == 0, result.output
    folds = read_splits_csv(tmp_path / "bach.csv")
    assert folds[0].ids("test")[:5] == ["b001", "b002", "b003", "b004", "b005"]
    result = runner.invoke(
        app,
        [
            "data",
            "split",
            str(bach),
            "--scheme",
            "bagging",
            "--k",
            "2",
            "--block-size",
            "5",
            "--out",
            str(tmp_path / "bags.csv"),
        ],
    )
    assert result.exit_code == 0 and [s.name for s in read_splits_csv(tmp_path / "bags.csv")] == ["bag1", "bag2"]


def test_cli_inspect_fails_on_bad_files_unless_skipped(tmp_path: Path) -> None:
    synth_bach(tmp_path, per_class=2, size=(32, 24), image_format="png", classes=("InSitu", "Normal"))
    bad = tmp_path / "ICIAR2018_BACH_Challenge" / "Photos" / "InSitu" / "is002.png"
    bad.write_text("not an image")
    result = runner.invoke(app, ["data", "inspect", str(tmp_path)])
    assert result.exit_code == 1 and isinstance(result.exception, DatasetError)
    assert "is002.png" in result.output and "1 file(s) cannot be used" in str(result.exception)
    result = runner.invoke(app, ["data", "inspect", str(tmp_path), "--skip-bad"])
    assert result.exit_code == 0 and "is002.png" in result.output and "1 error(s)" in result.output


def test_cli_errors_print_one_clear_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(sys, "argv", ["histobreast", "data", "inspect", str(tmp_path / "missing")])
    with pytest.raises(SystemExit) as info:
        main()
    assert info.value.code == 1
    err = capsys.readouterr().err.strip()
    assert err == f"error: {tmp_path / 'missing'}: dataset folder not found"


def test_cli_unwritable_output_prints_one_clear_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    synth_bach(tmp_path / "bach", per_class=2, size=(32, 24), image_format="png", classes=("Normal",))
    (tmp_path / "out").write_text("a file where a folder should be")
    target = tmp_path / "out" / "summary.json"
    monkeypatch.setattr(sys, "argv", ["histobreast", "data", "inspect", str(tmp_path / "bach"), "--json", str(target)])
    with pytest.raises(SystemExit) as info:
        main()
    assert info.value.code == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"error: {target}: cannot write here (") and "Traceback" not in err


def test_cli_split_refuses_leaking_split_file_and_bad_options(tmp_path: Path) -> None:
    synth_bach(tmp_path, per_class=10, size=(32, 24), image_format="png", classes=("Normal",))
    result = runner.invoke(
        app, ["data", "split", str(tmp_path), "--scheme", "contiguous", "--k", "5", "--out", str(tmp_path / "s.csv")]
    )
    assert result.exit_code == 1 and "1 patient blocks, fewer than 5 folds" in str(result.exception)
    assert not (tmp_path / "s.csv").exists()
    result = runner.invoke(app, ["data", "synth", str(tmp_path / "x"), "--kind", "bach", "--size", "big"])
    assert result.exit_code == 2 and "WIDTHxHEIGHT" in result.output
    result = runner.invoke(app, ["data", "synth", str(tmp_path / "x"), "--kind", "bach", "--from-folds", "f"])
    assert result.exit_code == 1 and "--from-folds applies to --kind breakhis only" in str(result.exception)
    for command in ("synth", "inspect", "split"):
        assert "Example: histobreast data" in runner.invoke(app, ["data", command, "--help"]).output
