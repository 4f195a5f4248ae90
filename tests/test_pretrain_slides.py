"""Whole slides as pre-training images: tissue tiles at the pre-training scale, recorded by slide and box."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml
from typer.testing import CliRunner

from histobreast.data.records import ImageRecord
from histobreast.datasets.ssl_tiles import SSLTileDataset
from histobreast.errors import ConfigError, DatasetError, SplitLeakageError
from histobreast.pipelines.config import parse_config
from histobreast.pipelines.encoder_provenance import check_encoder_unseen
from histobreast.pipelines.pretrain import pretrain_records
from histobreast.pipelines.pretrain_slides import read_slide_tile, slide_paths, tile_box
from histobreast.slides.synthetic import synth_slide
from test_pretrain import TINY_TRUNK, tiny_pretrain_config

# 1024 x 768 px at 1 µm/px; 160 µm tiles at 32 px (5 µm/px): a 6 x 4 grid, about half of it tissue.
SLIDE_SIZE, SLIDE_MPP = (1024, 768), 1.0


@pytest.fixture(scope="module")
def slides(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("slides")
    for seed, name in enumerate(("case01", "case02")):
        synth_slide(folder / f"{name}.tif", SLIDE_SIZE, SLIDE_MPP, seed=seed, annotations=False)
    return folder


def test_a_slide_a_folder_of_slides_or_a_list_names_the_slides(slides: Path, tmp_path: Path) -> None:
    one = slides / "case01.tif"
    assert slide_paths(one) == [one]
    assert slide_paths(slides) is None  # .tif is also an image format: a folder of them is images...
    assert slide_paths(slides, "slides") == [one, slides / "case02.tif"]  # ...unless said otherwise
    assert slide_paths(one, "images") is None
    scanner = tmp_path / "scans"
    scanner.mkdir()
    (scanner / "a.svs").touch()  # only slides have this suffix
    assert slide_paths(scanner) == [scanner / "a.svs"]
    listing = slides.parent / "slides.txt"
    listing.write_text(f"# the pool\n{one}\n\n{slides.name}/case02.tif  # relative to the list\n")
    assert slide_paths(listing) == [one, (slides / "case02.tif").resolve()]
    (tmp_path / "bad.txt").write_text("case01.tif\nmissing.svs\n")
    (tmp_path / "case01.tif").write_bytes(one.read_bytes())
    with pytest.raises(DatasetError, match=r"bad\.txt, line 2: slide missing\.svs not found"):
        slide_paths(tmp_path / "bad.txt")
    (scanner / "a.svs").unlink()
    with pytest.raises(DatasetError, match=r"scans: pretrain\.source is slides, but no slide files were found"):
        slide_paths(scanner, "slides")


def test_the_records_are_tissue_tiles_at_the_pretraining_scale(slides: Path) -> None:
    records = pretrain_records(tiny_pretrain_config(slides, data={"fold": None}, pretrain={"source": "slides"}))
    assert {r.patient_id for r in records} == {"case01", "case02"}
    assert all(r.microns_per_pixel == 5.0 and r.label == "tissue" for r in records)
    boxes = [tile_box(r) for r in records if r.patient_id == "case01"]
    assert 4 <= len(boxes) < 24 and len(set(boxes)) == len(boxes)  # tissue only, each tile once
    assert all(w == h == 160 and x % 160 == 0 and y % 160 == 0 for x, y, w, h in boxes)  # type: ignore[misc]
    tile = read_slide_tile(records[0])
    assert tile.shape == (32, 32, 3) and tile.dtype.name == "uint8"
    dataset = SSLTileDataset(records, tile_microns=160.0, tile_size=32, read_image=read_slide_tile, seed=0)
    assert dataset[0][0].shape == (2, 3, 32, 32)
    with pytest.raises(ConfigError, match=r"data\.fold: .* holds slides, which have no folds.*data\.fold=null"):
        pretrain_records(tiny_pretrain_config(slides / "case01.tif"))
    with pytest.raises(DatasetError, match=r"case01\.tif: no tile of 900 µm is 50% tissue"):
        pretrain_records(
            tiny_pretrain_config(slides / "case01.tif", data={"fold": None}, pretrain={"tile_microns": 900.0})
        )


def test_pretraining_on_a_slide_records_slide_and_tile_and_the_leakage_check_uses_them(
    slides: Path, tmp_path: Path
) -> None:
    torch.set_num_threads(1)
    slide = slides / "case01.tif"
    config = tmp_path / "slides.yaml"
    train = {"iterations": 2, "batch_size": 4, "num_workers": 0, "device": "cpu", "progress": False}
    pretrain = {"encoder": "googlenet_sep", "encoder_kwargs": TINY_TRUNK, "tile_size": 32, "tile_microns": 160.0}
    config.write_text(yaml.safe_dump({"pretrain": {**pretrain, "hidden_dim": 16, "output_dim": 8}, "train": train}))
    from histobreast.cli import app

    out = tmp_path / "encoder"
    result = CliRunner().invoke(
        app, ["pretrain", "--config", str(config), "--data", str(slide), "--out", str(out), "--set", "data.fold=null"]
    )
    assert result.exit_code == 0, result.output
    record = json.loads((out / "pretrain.json").read_text())
    entries = record["images"]
    assert {e["slide"] for e in entries} == {"case01"} and all(e["path"] == str(slide) for e in entries)
    assert entries[0]["id"] == f"case01@{entries[0]['box'][0]},{entries[0]['box'][1]}" and len(entries[0]["box"]) == 4
    weights = out / "encoder.safetensors"
    model = parse_config(
        {"name": "x", "model": {"name": "googlenet_sep", "kwargs": {"encoder_weights": str(weights)}}}
    ).model
    crop = tmp_path / "crop.png"
    crop.write_bytes(b"not the slide")
    other = ImageRecord(crop, "Normal", "case02", 1.0, "folder")
    check_encoder_unseen(model, [other], 1, None)  # a crop of another slide: accepted
    of_seen_slide = ImageRecord(crop, "Normal", "case01", 1.0, "folder")  # slide sample: each slide a patient
    with pytest.raises(SplitLeakageError, match=r"pre-trained on tiles of slide case01, the patient of .*crop\.png"):
        check_encoder_unseen(model, [other, of_seen_slide], 1, None)
    the_slide = ImageRecord(slide, "Normal", "p7", 1.0, "slide")  # the slide itself among the test images
    with pytest.raises(SplitLeakageError, match=r"a test image of fold 3"):
        check_encoder_unseen(model, [the_slide], 3, None)
