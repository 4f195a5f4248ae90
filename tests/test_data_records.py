"""Records, records CSV, relabelling, the scale file, layout detection and class orders."""

from __future__ import annotations

from pathlib import Path

import pytest

from histobreast.data.bach import BACH_BINARY
from histobreast.data.readers import class_names, detect_kind, read_dataset
from histobreast.data.records import (
    ImageRecord,
    read_records_csv,
    read_scale_file,
    relabel,
    write_records_csv,
    write_scale_file,
)
from histobreast.data.synthetic import synth_bach, synth_breakhis
from histobreast.errors import DatasetError


def _record(**changes: object) -> ImageRecord:
    fields: dict[str, object] = dict(
        path=Path("/d/n001.png"),
        label="Normal",
        patient_id="Normal:001-010",
        microns_per_pixel=0.84,
        source="bach",
        index=1,
    )
    fields.update(changes)
    return ImageRecord(**fields)  # type: ignore[arg-type]


def test_record_validation_and_image_id() -> None:
    assert _record().image_id == "n001"
    with pytest.raises(DatasetError, match="n001.png: record has an empty label"):
        _record(label="")
    with pytest.raises(DatasetError, match="microns_per_pixel must be between"):
        _record(microns_per_pixel=0)


def test_records_csv_round_trip_with_extra_columns(tmp_path: Path) -> None:
    records = [
        _record(),
        _record(
            path=Path("/d/SOB_B_A-14-1-40-001.png"),
            label="benign",
            subtype="A",
            magnification=40,
            index=None,
            source="breakhis",
            extra={"note": "x"},
        ),
    ]
    path = write_records_csv(records, tmp_path / "records.csv")
    again = read_records_csv(path)
    assert again == records and again[1].extra == {"note": "x"}
    (tmp_path / "bad.csv").write_text("path,label\n")
    with pytest.raises(DatasetError, match=r"bad.csv: missing columns"):
        read_records_csv(tmp_path / "bad.csv")
    (tmp_path / "bad2.csv").write_text("path,label,patient_id,microns_per_pixel,source\na.png,x,p,zero,folder\n")
    with pytest.raises(DatasetError, match=r"bad2.csv:2:"):
        read_records_csv(tmp_path / "bad2.csv")


def test_relabel_keeps_the_original_label() -> None:
    [binary] = relabel([_record()], BACH_BINARY)
    assert binary.label == "non-carcinoma" and binary.extra["original_label"] == "Normal"
    [again] = relabel([binary], lambda r: r.label.upper())
    assert again.extra["original_label"] == "Normal"
    with pytest.raises(DatasetError, match="label 'Normal' is not in the relabel mapping"):
        relabel([_record()], {"Benign": "b"})


def test_scale_file(tmp_path: Path) -> None:
    assert read_scale_file(tmp_path) is None
    write_scale_file(tmp_path, 0.84)
    assert read_scale_file(tmp_path) == 0.84
    write_scale_file(tmp_path, {40: 4.9, 400: 0.49})
    assert read_scale_file(tmp_path) == {40: 4.9, 400: 0.49}
    for text in ('{"microns_per_pixel": -1}', '{"scale": 1}', "not json", '{"microns_per_pixel": {"x": 1}}'):
        (tmp_path / "histobreast.json").write_text(text)
        with pytest.raises(DatasetError, match="histobreast.json"):
            read_scale_file(tmp_path)


def test_layout_detection_and_class_orders(tmp_path: Path) -> None:
    synth_breakhis(
        tmp_path / "bh", patients_per_subtype=1, images_per_magnification=1, magnifications=(40,), size=(16, 12)
    )
    synth_bach(tmp_path / "bach", per_class=1, size=(16, 12), image_format="png", classes=("InSitu", "Normal"))
    (tmp_path / "own" / "x").mkdir(parents=True)
    assert detect_kind(tmp_path / "bh") == detect_kind(tmp_path / "bh" / "BreaKHis_v1") == "breakhis"
    assert detect_kind(tmp_path / "bach") == "bach"
    assert detect_kind(tmp_path / "own") == "folder"
    with pytest.raises(DatasetError, match="dataset folder not found"):
        detect_kind(tmp_path / "missing")
    with pytest.raises(DatasetError, match="unknown dataset kind 'tiff'"):
        read_dataset(tmp_path / "bach", "tiff")
    with pytest.raises(DatasetError, match="bach reader: .*unexpected keyword argument 'magnifications'"):
        read_dataset(tmp_path / "bach", magnifications=[40])
    bach = read_dataset(tmp_path / "bach")
    assert class_names(bach) == ["Normal", "Benign", "InSitu", "Invasive"]  # full canonical order
    assert class_names(read_dataset(tmp_path / "bh")) == ["benign", "malignant"]
    assert class_names(relabel(bach, lambda r: r.label.lower())) == ["insitu", "normal"]  # unknown set: sorted
