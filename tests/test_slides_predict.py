"""slide sample -> train -> slide predict on synthetic slides: outputs, GeoJSON, resume, bad input, CLI."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import tifffile
import torch
import yaml
from shapely.geometry import box, shape
from typer.testing import CliRunner

from histobreast.cli import app
from histobreast.data.task_records import experiment_records
from histobreast.errors import ConfigError, HistobreastError
from histobreast.pipelines import get_pipeline
from histobreast.pipelines.slide_model import load_tile_model
from histobreast.pipelines.slide_predict import (
    SlidePredictOptions,
    parse_shard,
    predict_slide,
    predict_slides,
    shard_slides,
)
from histobreast.pipelines.slide_sample import SampleOptions, sample_slides
from histobreast.slides.annotations import AnnotationError, Region, read_annotations, write_imagescope_xml
from histobreast.slides.synthetic import synth_slide
from tiny_system_a import one_torch_thread, tiny_zhu_config  # noqa: F401 (autouse fixture)

MPP, CROP_PX = 2.0, (192, 144)  # crops of 384x288 µm at the slides' scale
TILE_UM = (CROP_PX[0] * MPP, CROP_PX[1] * MPP)  # the model's field of view: one crop
CLASSES = ["non-carcinoma", "carcinoma"]
OPTIONS = SlidePredictOptions(tile_um=TILE_UM, overlap=0.25, batch_size=16)


def _folder_config(root, preprocess=None, **train):
    data = {"root": str(root), "kind": "folder", "task": None, "classes": CLASSES, "split": "patient"}
    return tiny_zhu_config(root, data=data, train={"iterations": 1, **train}, preprocess=preprocess or {})


@pytest.fixture(scope="module")
def slides(tmp_path_factory):
    root = tmp_path_factory.mktemp("slides")
    return [synth_slide(root / f"slide{i}.tif", (1536, 1152), MPP, seed=i, variants=2) for i in (1, 2)]


@pytest.fixture(scope="module")
def crops(slides, tmp_path_factory):
    pairs = [(s.path, s.annotation_files["imagescope"]) for s in slides]
    options = SampleOptions(crop_px=CROP_PX, per_region_class=6, normal=8)
    return sample_slides(pairs, tmp_path_factory.mktemp("crops") / "dataset", options=options, say=lambda _: None)


@pytest.fixture(scope="module")
def model(crops, tmp_path_factory):
    cfg = _folder_config(crops)
    records, classes = experiment_records(cfg.data)
    return get_pipeline("zhu2019").train_fold(cfg, records, [], classes, tmp_path_factory.mktemp("fold"))


@pytest.fixture(scope="module")
def predicted(slides, model, tmp_path_factory):
    out = tmp_path_factory.mktemp("pred")
    (summary,) = predict_slides([slides[0].path], model, out, OPTIONS, say=lambda _: None)
    return out / slides[0].path.stem, summary


def _tiles(path):
    with path.open(newline="") as fh:
        return list(csv.DictReader(fh))


def test_sampled_crops_come_from_their_regions(slides, crops):
    rows = _tiles(crops / "crops.csv")
    planted = {s.path.name: s for s in slides}
    assert {r["label"] for r in rows} == set(CLASSES)
    assert {r["region"] for r in rows} == {"Benign", "In situ", "Invasive", "Normal"}
    expected = {"Benign": "non-carcinoma", "Normal": "non-carcinoma", "In situ": "carcinoma", "Invasive": "carcinoma"}
    for row in rows:
        slide = planted[row["slide"]]
        crop = box(int(row["x"]), int(row["y"]), int(row["x"]) + int(row["w"]), int(row["y"]) + int(row["h"]))
        assert row["label"] == expected[row["region"]] and row["image"].startswith(row["label"] + "/")
        if row["region"] == "Normal":
            assert all(crop.intersection(r.geometry).area < 0.1 * crop.area for r in slide.regions)
            assert slide.tissue.intersection(crop).area >= 0.9 * crop.area
        else:
            (region,) = [r for r in slide.regions if r.label == row["region"]]
            assert region.geometry.intersection(crop).area >= 0.9 * crop.area
        assert (crops / row["image"]).is_file()
    patients = _tiles(crops / "patients.csv")
    assert {p["patient"] for p in patients} == {"slide1", "slide2"}
    assert json.loads((crops / "histobreast.json").read_text()) == {"microns_per_pixel": MPP}


@pytest.mark.slow  # a whole `histobreast train` run with its report: ~25 s on 2 busy cores
def test_histobreast_train_reads_the_sampled_dataset(crops, tmp_path):
    cfg = {
        "name": "wsi_tiny",
        "pipeline": "zhu2019",
        "data": {"kind": "folder", "classes": CLASSES, "split": "patient", "n_folds": 2, "val_fraction": 0.0},
        "preprocess": {"input_size": 32, "patches": {"grid": [2, 1], "size": 32}},
        "model": {"name": "googlenet_sep", "kwargs": tiny_zhu_config(crops).model.kwargs},
        "train": {"iterations": 1, "batch_size": 2, "num_workers": 0, "device": "cpu", "tensorboard": False},
        "evaluate": {"bootstrap": 5},
    }
    (tmp_path / "cfg.yaml").write_text(yaml.safe_dump(cfg))
    args = ["train", "--config", str(tmp_path / "cfg.yaml"), "--data", str(crops), "--fold", "1"]
    result = CliRunner().invoke(app, [*args, "--out", str(tmp_path / "run")])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "run" / "fold1" / "model" / "model.json").is_file()


def test_tiles_csv_lies_on_tissue_only(slides, predicted):
    slide_dir, summary = predicted
    rows = _tiles(slide_dir / "tiles.csv")
    assert list(rows[0]) == ["x", "y", "w", "h", "tissue", "p_non-carcinoma", "p_carcinoma", "predicted", "disagree"]
    assert len(rows) == summary["tiles"] > 16
    tissue = slides[0].tissue
    for row in rows:
        tile = box(int(row["x"]), int(row["y"]), int(row["x"]) + int(row["w"]), int(row["y"]) + int(row["h"]))
        assert (int(row["w"]), int(row["h"])) == CROP_PX and tissue.intersection(tile).area >= 0.4 * tile.area
        assert float(row["p_non-carcinoma"]) + float(row["p_carcinoma"]) == pytest.approx(1, abs=1e-5)
        assert set(filter(None, row["disagree"].split(";"))) <= {"hybrid", "global", "local", "hybrid_max", "local_max"}
    xs = sorted({int(r["x"]) for r in rows})
    assert min(np.diff(xs)) == CROP_PX[0] * 3 // 4  # 25% overlap, level-0 pixels
    for name in ("heatmap_non-carcinoma.png", "heatmap_carcinoma.png", "tissue.png", "summary.md"):
        assert (slide_dir / name).is_file()
    assert not (slide_dir / ".partial").exists()


def test_geojson_loads_and_round_trips(predicted):
    slide_dir, summary = predicted
    data = json.loads((slide_dir / "tiles.geojson").read_text())
    rows = _tiles(slide_dir / "tiles.csv")
    features = data["features"]
    assert all(f["properties"]["classification"]["name"] in CLASSES for f in features)
    detections = [f for f in features if f["properties"]["objectType"] == "detection"]
    assert len(detections) == len(rows)
    for feature, row in zip(detections, rows):
        geometry = shape(feature["geometry"])
        assert geometry.is_valid and geometry.bounds == (
            int(row["x"]),
            int(row["y"]),
            int(row["x"]) + int(row["w"]),
            int(row["y"]) + int(row["h"]),
        )
        assert feature["properties"]["measurements"]["p_carcinoma"] == pytest.approx(float(row["p_carcinoma"]))
    regions = read_annotations(slide_dir / "tiles.geojson")
    assert [r.label for r in regions if r.kind == "detection"] == [r["predicted"] for r in rows]
    merged = {r.label: r for r in regions if r.kind == "annotation"}
    assert set(merged) == {c for c in CLASSES if summary["tiles_per_class"][c]}
    for region in merged.values():
        assert region.geometry.is_valid
        assert region.measurements["area_mm2"] == pytest.approx(summary["area_mm2"][region.label], abs=1e-4)


def test_killed_run_resumes_to_the_same_files(slides, model, predicted, tmp_path):
    slide_dir, _ = predicted
    options = OPTIONS
    tile_model = load_tile_model(model)

    def kill(chunk: int) -> None:
        if chunk == 1:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        predict_slide(slides[0].path, tile_model, tmp_path, options, after_chunk=kill, say=lambda _: None)
    partial = tmp_path / slides[0].path.stem / ".partial"
    assert sorted(p.name for p in partial.glob("chunk*.csv")) == ["chunk000000.csv", "chunk000001.csv"]
    assert not (tmp_path / slides[0].path.stem / "tiles.csv").exists()
    said = []
    predict_slide(slides[0].path, tile_model, tmp_path, options, say=said.append)
    assert any("resuming at chunk 2" in s for s in said)
    for name in ("tiles.csv", "tiles.geojson"):
        assert (tmp_path / slides[0].path.stem / name).read_bytes() == (slide_dir / name).read_bytes()
    with pytest.raises(ConfigError, match="already holds results of another run"):
        predict_slide(slides[0].path, tile_model, tmp_path, SlidePredictOptions(tile_um=TILE_UM), say=lambda _: None)


def test_slide_without_tissue_gives_empty_valid_outputs(model, tmp_path):
    blank = tmp_path / "blank.tif"
    tifffile.imwrite(
        blank,
        np.full((512, 512, 3), 242, np.uint8),
        tile=(256, 256),
        resolution=(1e4, 1e4),
        resolutionunit="CENTIMETER",
        photometric="rgb",
    )
    said = []
    (summary,) = predict_slides([blank], model, tmp_path / "out", SlidePredictOptions(tile_um=TILE_UM), say=said.append)
    assert summary["tiles"] == 0 and any("no tissue tile found" in s for s in said)
    assert (tmp_path / "out" / "blank" / "tiles.csv").read_text().count("\n") == 1
    assert json.loads((tmp_path / "out" / "blank" / "tiles.geojson").read_text()) == {
        "type": "FeatureCollection",
        "features": [],
    }


def test_bad_inputs_are_one_line_errors(slides, model, tmp_path):
    not_slide = tmp_path / "notes.svs"
    not_slide.write_text("hello")
    with pytest.raises(HistobreastError, match="notes.svs: not a slide any reader opens"):
        predict_slides([not_slide], model, tmp_path / "out", SlidePredictOptions(tile_um=TILE_UM))
    assert not (tmp_path / "out").exists()
    with pytest.raises(ConfigError, match="give the tile size with --tile-um"):
        predict_slides([slides[0].path], model, tmp_path / "out", SlidePredictOptions())
    unknown = tmp_path / "unknown.xml"
    write_imagescope_xml(unknown, [Region("Tumour-ish", box(100, 100, 400, 400))])
    outside = tmp_path / "outside.xml"
    write_imagescope_xml(outside, [Region("Benign", box(1400, 100, 1700, 400))])
    for annotation_file, message in (
        (unknown, "annotation class 'Tumour-ish' is not in the class map"),
        (outside, "outside the 1536x1152 slide"),
    ):
        with pytest.raises(AnnotationError, match=message):
            sample_slides([(slides[0].path, annotation_file)], tmp_path / "ds", say=lambda _: None)
        assert not (tmp_path / "ds").exists() and not list(tmp_path.glob(".ds*"))


def test_shards_split_the_slides():
    paths = [f"s{i}.svs" for i in range(5)]
    assert [shard_slides(paths, (k, 2)) for k in (1, 2)] == [["s0.svs", "s2.svs", "s4.svs"], ["s1.svs", "s3.svs"]]
    assert parse_shard("2/3") == (2, 3)
    with pytest.raises(ConfigError, match="--shard"):
        parse_shard("4/3")


def test_cli_predict_and_sample(slides, model, tmp_path):
    args = ["slide", "predict", str(slides[1].path), "--model", str(model), "--out", str(tmp_path / "p")]
    review = ["--review", str(tmp_path / "review")]
    explain = ["--explain", "2", "--method", "gradcam++"]
    tile = ["--tile-um", f"{TILE_UM[0]}x{TILE_UM[1]}"]
    result = CliRunner().invoke(app, [*args, *tile, "--batch-size", "64", *review, *explain])
    assert result.exit_code == 0, result.output
    assert "slide2:" in result.output and (tmp_path / "p" / "slide2" / "tiles.geojson").is_file()
    explained = json.loads((tmp_path / "p" / "slide2" / "explained" / "explanations.json").read_text())
    assert [e["method"] for e in explained["images"]] == ["gradcam++"] * 2 and "gradcam++ maps" in result.output
    assert (tmp_path / "review" / "report.html").is_file() and list((tmp_path / "review" / "figures").glob("*slide2*"))
    cases = json.loads((tmp_path / "review" / "metrics.json").read_text())
    assert "slide2" in json.dumps(cases)
    result = CliRunner().invoke(
        app,
        [
            "slide",
            "sample",
            str(slides[1].path),
            "--out",
            str(tmp_path / "d"),
            "--crop",
            "128x96",
            "--per-class",
            "2",
            "--normal",
            "2",
        ],
    )
    assert result.exit_code == 0, result.output
    assert len(_tiles(tmp_path / "d" / "crops.csv")) == 8


@pytest.mark.slow  # trains System A for 300 iterations: ~2.5 min on 2 busy cores
def test_high_probability_tiles_fall_in_the_planted_carcinoma(slides, crops, tmp_path):
    """On a slide the model never saw (seed 3; it trained on crops of slides 1 and 2): Dice of the
    thresholded P(carcinoma) heatmap against the planted in situ + invasive regions, over the tiled
    area, against calling every tile carcinoma, and the hot tiles' precision; no tile on glass or pen."""
    import cv2

    from histobreast.slides.heatmap import average_heatmaps
    from histobreast.slides.reader import open_slide

    unseen = synth_slide(tmp_path / "slide3.tif", (1536, 1152), MPP, seed=3, variants=2)

    preprocess = {"input_size": 48, "patches": {"grid": [2, 1], "size": 48}}
    cfg = _folder_config(crops, preprocess, iterations=300, batch_size=8, lr=0.02)
    records, classes = experiment_records(cfg.data)
    folder = get_pipeline("zhu2019").train_fold(cfg, records, [], classes, tmp_path / "fold")
    options = SlidePredictOptions(tile_um=TILE_UM, overlap=0.5, batch_size=64)
    (summary,) = predict_slides([unseen.path], folder, tmp_path / "out", options, say=lambda _: None)
    rows = _tiles(tmp_path / "out" / "slide3" / "tiles.csv")
    boxes = [(int(r["x"]), int(r["y"]), int(r["w"]), int(r["h"])) for r in rows]
    probs = np.array([[float(r[f"p_{c}"]) for c in CLASSES] for r in rows])
    with open_slide(unseen.path) as slide:
        thumbnail, downsample = slide.thumbnail(512)
    heat, count = average_heatmaps(boxes, probs, thumbnail.shape[:2], downsample)
    planted = np.zeros(thumbnail.shape[:2], np.uint8)
    for region in unseen.regions:
        if region.label in ("In situ", "Invasive"):
            ring = np.round(np.asarray(region.geometry.exterior.coords) / downsample).astype(np.int32)
            cv2.fillPoly(planted, [ring], 1)
    covered = count > 0
    hot = (np.nan_to_num(heat[1]) > 0.5) & covered
    truth = planted.astype(bool) & covered
    dice = 2 * (hot & truth).sum() / (hot.sum() + truth.sum())
    everywhere = 2 * truth.sum() / (covered.sum() + truth.sum())  # the Dice of calling every tile carcinoma
    precision = (hot & truth).sum() / max(1, hot.sum())
    share = truth.sum() / covered.sum()
    print(f"Dice {dice:.2f}, every tile hot {everywhere:.2f}, precision {precision:.2f}, planted share {share:.2f}")
    # measured 2026-12-03: Dice 0.58 (calling every tile carcinoma: 0.36), precision 0.45 (planted share 0.22)
    assert dice > 0.45 and dice > everywhere + 0.1, (dice, everywhere)
    assert precision > 1.5 * share, (precision, share)
    for x, y, w, h in boxes:
        assert unseen.tissue.intersection(box(x, y, x + w, y + h)).area >= 0.4 * w * h


def test_ensembles_vote_on_tiles(slides, model, tmp_path):
    import shutil

    from histobreast.pipelines.bagging import save_ensemble_folder

    members = [tmp_path / "bag" / name for name in ("m1", "m2")]
    for member in members:
        shutil.copytree(model, member)
    save_ensemble_folder(tmp_path / "bag", members, "sum")
    tile_model = load_tile_model(tmp_path / "bag")
    assert tile_model.is_ensemble and list(tile_model.members) == ["m1", "m2"]
    options = SlidePredictOptions(tile_um=TILE_UM, min_tissue=0.9, batch_size=64)
    summary = predict_slide(slides[1].path, tile_model, tmp_path / "out", options, say=lambda _: None)
    rows = _tiles(tmp_path / "out" / "slide2" / "tiles.csv")
    assert summary["ensemble"] and len(rows) == summary["tiles"] > 0
    assert all(r["disagree"] == "" for r in rows)  # identical members never disagree with their vote


def test_the_most_suspicious_tiles_are_explained(slides, model, predicted):
    """``slide predict --explain N`` (Python side): the N tiles with the highest P(carcinoma), read again at
    the model's scale, explained with the probabilities tiles.csv holds for them."""
    from histobreast.explain.slides import explain_slide_tiles

    slide_dir, summary = predicted
    manifest = explain_slide_tiles(summary, slide_dir.parent, load_tile_model(model), 3)
    assert manifest == slide_dir / "explained" / "explanations.json"
    images = json.loads(manifest.read_text())["images"]
    rows = {(r["x"], r["y"]): r for r in _tiles(slide_dir / "tiles.csv")}
    expected = [(t["x"], t["y"]) for t in summary["most_suspicious"][:3]]
    assert [e["image_id"] for e in images] == [f"top{k}_x{x}_y{y}" for k, (x, y) in enumerate(expected, start=1)]
    for entry, (x, y) in zip(images, expected):
        row = rows[(str(x), str(y))]
        assert entry["probabilities"] == pytest.approx({c: float(row[f"p_{c}"]) for c in CLASSES}, abs=1e-5)
        assert entry["image_size"] == list(CROP_PX) and entry["headline"] == "fused"
        assert (manifest.parent / entry["figure"]).is_file() and (manifest.parent / entry["maps"]["fused"]).is_file()
    assert explain_slide_tiles({**summary, "tiles": 0}, slide_dir.parent, load_tile_model(model), 0) is None


def test_system_b_predicts_slide_tiles_with_its_six_views(slides, tmp_path):
    """System B (MSMV-PFENet, untrained, 32 px crops) on the synthetic pyramidal TIFF: KREM and the six
    views on every tile; each view is a reading of its own in tiles.csv's ``disagree``."""
    from histobreast.pipelines import liu2022
    from histobreast.pipelines.config import parse_config
    from histobreast.pipelines.package import save_model_folder
    from histobreast.preprocess.views import SIX_VIEWS

    cfg = parse_config(
        {
            "name": "tiny_liu2022",
            "pipeline": "liu2022",
            "preprocess": {"input_size": 32},
            "model": {"name": "msmv_pfenet", "kwargs": {"encoder": "resnet18"}},
            "train": {"epochs": 1, "device": "cpu", "num_workers": 0},
        }
    )
    torch.manual_seed(0)
    folder = save_model_folder(
        tmp_path / "b",
        liu2022.build_model(cfg, CLASSES),
        cfg,
        CLASSES,
        model_kwargs=liu2022.model_kwargs(cfg, CLASSES),
        microns_per_pixel=MPP,
    )
    options = SlidePredictOptions(tile_um=TILE_UM, min_tissue=0.9, batch_size=64)
    (summary,) = predict_slides([slides[1].path], folder, tmp_path / "out", options, say=lambda _: None)
    rows = _tiles(tmp_path / "out" / "slide2" / "tiles.csv")
    assert len(rows) == summary["tiles"] > 0
    views = {f"patch:{v}" for v in SIX_VIEWS}
    for row in rows:
        assert float(row["p_non-carcinoma"]) + float(row["p_carcinoma"]) == pytest.approx(1, abs=1e-5)
        assert set(filter(None, row["disagree"].split(";"))) <= views


def test_per_view_tables_become_one_reading_per_view():
    from histobreast.pipelines.tile_model import tile_readings
    from histobreast.predictions import Predictions

    tiles = ["tile0", "tile1"]
    views = ["raw", "rot90"]
    ids = [f"{t}/{v}" for t in tiles for v in views]
    per_view = np.array([[0.9, 0.1], [0.2, 0.8], [0.3, 0.7], [0.4, 0.6]])
    none = np.full(4, -1)
    tables = {
        "image": Predictions(CLASSES, tiles, np.array([[0.5, 0.5], [0.3, 0.7]]), none[:2], tiles),
        "patch": Predictions(CLASSES, ids, per_view, none, ids),
    }
    readings = tile_readings(tables, tiles)
    assert list(readings) == ["image", "patch:raw", "patch:rot90"]
    np.testing.assert_array_equal(readings["patch:raw"], per_view[[0, 2]])
    np.testing.assert_array_equal(readings["patch:rot90"], per_view[[1, 3]])


@pytest.mark.slow  # two torchrun processes, each importing torch and loading the model: ~30-60 s on 2 busy cores
def test_torchrun_ranks_share_the_slides(slides, model, tmp_path):
    """Under torchrun (CPU, 2 processes, no --shard) each rank predicts its own share of the slides."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    import histobreast

    env = {**os.environ, "PYTHONPATH": str(Path(histobreast.__file__).parents[1]), "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    args = ["-m", "histobreast", "slide", "predict", *(str(s.path) for s in slides), "--model", str(model)]
    args += ["--out", str(tmp_path / "out"), "--tile-um", f"{TILE_UM[0]}x{TILE_UM[1]}", "--min-tissue", "0.9"]
    result = subprocess.run([*command, *args], env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    for slide in slides:
        summary = json.loads((tmp_path / "out" / slide.path.stem / "summary.json").read_text())
        assert summary["tiles"] > 0
    said = [line for line in result.stdout.splitlines() if " tiles (" in line]
    assert sorted(line.split(":")[0] for line in said) == ["slide1", "slide2"]  # each slide once, by one rank


def test_the_spanhol_baseline_predicts_slide_tiles(slides, tmp_path):
    """The Spanhol 2016 baseline (an ensemble folder of patch CNNs, max rule; untrained) on slide tiles:
    each member cuts its sliding windows from every tile and the members vote."""
    from dataclasses import asdict

    from histobreast.models import create_model
    from histobreast.pipelines import spanhol2016
    from histobreast.pipelines.bagging import save_ensemble_folder
    from histobreast.pipelines.config import parse_config
    from histobreast.pipelines.package import save_model_folder

    spanhol = {"patch_sizes": [32], "scale": 0.5}
    cfg = parse_config(
        {
            "name": "s",
            "pipeline": "spanhol2016",
            "model": {"name": spanhol2016.MODEL_NAME},
            "train": {"iterations": 1, "device": "cpu"},
            "spanhol": spanhol,
        }
    )
    torch.manual_seed(0)
    members = []
    for name, size, extraction in cfg.spanhol.members():
        kwargs = {"num_classes": 2, "patch_size": size}
        settings = {"name": name, "patch_size": size, "extraction": extraction, **asdict(cfg.spanhol)}
        network = create_model(spanhol2016.MODEL_NAME, **kwargs)
        members.append(
            save_model_folder(
                tmp_path / "bag" / name,
                network,
                cfg,
                CLASSES,
                extra={"spanhol": settings},
                model_name=spanhol2016.MODEL_NAME,
                model_kwargs=kwargs,
                microns_per_pixel=MPP,
            )
        )
    folder = save_ensemble_folder(tmp_path / "bag", members, "max", extra={"pipeline": "spanhol2016"})
    options = SlidePredictOptions(tile_um=TILE_UM, min_tissue=0.9, batch_size=64)
    (summary,) = predict_slides([slides[1].path], folder, tmp_path / "out", options, say=lambda _: None)
    rows = _tiles(tmp_path / "out" / "slide2" / "tiles.csv")
    assert summary["ensemble"] and len(rows) == summary["tiles"] > 0
    for row in rows:
        assert float(row["p_non-carcinoma"]) + float(row["p_carcinoma"]) == pytest.approx(1, abs=1e-5)
        assert set(filter(None, row["disagree"].split(";"))) <= {"patch32_sliding", "patch32_random"}
