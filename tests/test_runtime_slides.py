"""Exported folders (ONNX) on whole slides and in the case review: ``slide predict EXPORTED`` writes the
torch path's tiles.csv and GeoJSON without loading torch, ``predict``/``slide predict --review`` on an
export write the same cards, and --explain, missing networks and INT8 folders get one line or work."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from histobreast.cli import app
from histobreast.data.task_records import experiment_records
from histobreast.errors import CheckpointError, ConfigError
from histobreast.export.folder import export_onnx
from histobreast.export.quantize import quantize_exported
from histobreast.pipelines import get_pipeline
from histobreast.pipelines.bagging import save_ensemble_folder
from histobreast.pipelines.slide_predict import SlidePredictOptions, predict_slides
from histobreast.pipelines.slide_sample import SampleOptions, sample_slides
from histobreast.runtime.slides import load_exported_tile_model
from histobreast.slides.synthetic import synth_slide
from tiny_system_a import one_torch_thread, tiny_zhu_config  # noqa: F401 (autouse fixture)
from torch_free import run_without_torch

runner = CliRunner()
MPP, CROP_PX = 2.0, (192, 144)
TILE_UM = (CROP_PX[0] * MPP, CROP_PX[1] * MPP)
CLASSES = ["non-carcinoma", "carcinoma"]
OPTIONS = SlidePredictOptions(tile_um=TILE_UM, overlap=0.25, batch_size=16)
TOLERANCE = 1e-4  # largest |onnxruntime - torch| tile probability accepted (the export's own bar)
KINDS = ("hybrid", "plain", "ensemble")
ITERATIONS = 60  # enough for the tiny models' calls to differ from tile to tile


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """A synthetic slide, tiny models of each kind trained on its sampled crops, and their exports."""
    root = tmp_path_factory.mktemp("rt_slides")
    slide = synth_slide(root / "slide1.tif", (1536, 1152), MPP, seed=1, variants=2)
    options = SampleOptions(crop_px=CROP_PX, per_region_class=4, normal=6)
    crops = sample_slides(
        [(slide.path, slide.annotation_files["imagescope"])], root / "crops", options=options, say=lambda _: None
    )
    data = {"root": str(crops), "kind": "folder", "task": None, "classes": CLASSES, "split": "patient"}

    def train(name: str, pipeline: str = "zhu2019", seed: int = 0) -> Path:
        cfg = tiny_zhu_config(crops, data=data, pipeline=pipeline, seed=seed, train={"iterations": ITERATIONS})
        records, classes = experiment_records(cfg.data)
        return get_pipeline(pipeline).train_fold(cfg, records, [], classes, root / name)

    out = {
        "slide": slide.path,
        "crops": crops,
        "root": root,
        "hybrid": train("ens/m1"),
        "plain": train("plain", "image"),
    }
    out["ensemble"] = save_ensemble_folder(root / "ens", [out["hybrid"], train("ens/m2", seed=1)], "sum")
    for kind in KINDS:
        out[f"{kind}_onnx"] = export_onnx(out[kind], root / f"{kind}_onnx")
    return out


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as fh:
        return list(csv.DictReader(fh))


def _classifications(path: Path) -> list[tuple[str, str, list]]:
    features = json.loads(path.read_text())["features"]
    return [
        (f["properties"]["objectType"], f["properties"]["classification"]["name"], f["geometry"]["coordinates"])
        for f in features
    ]


def _assert_same_tiles(got: Path, expected: Path, tolerance: float = TOLERANCE) -> None:
    rows, want = _rows(got / "tiles.csv"), _rows(expected / "tiles.csv")
    assert len(rows) == len(want) > 10
    boxes = ("x", "y", "w", "h", "tissue")
    assert [[r[k] for k in boxes] for r in rows] == [[r[k] for k in boxes] for r in want]
    probs = [[float(r[f"p_{c}"]) for c in CLASSES] for r in rows]
    np.testing.assert_allclose(probs, [[float(r[f"p_{c}"]) for c in CLASSES] for r in want], atol=tolerance, rtol=0)


@pytest.mark.parametrize("kind", KINDS)
def test_an_exported_folder_writes_the_torch_paths_tiles_and_geojson(models, tmp_path, kind):
    quiet = {"say": lambda _: None}
    predict_slides([models["slide"]], models[kind], tmp_path / "torch", OPTIONS, **quiet)
    exported = load_exported_tile_model(models[f"{kind}_onnx"], threads=1)
    assert exported.is_ensemble == (kind == "ensemble") and exported.classes == CLASSES
    (summary,) = predict_slides([models["slide"]], exported, tmp_path / "onnx", OPTIONS, **quiet)
    got, expected = tmp_path / "onnx" / "slide1", tmp_path / "torch" / "slide1"
    _assert_same_tiles(got, expected)
    rows, want = _rows(got / "tiles.csv"), _rows(expected / "tiles.csv")
    assert [(r["predicted"], r["disagree"]) for r in rows] == [(r["predicted"], r["disagree"]) for r in want]
    # not a trivial match: both classes called, or readings that disagree (measured: 2 of 3 kinds call both)
    assert len({r["predicted"] for r in want}) == 2 or any(r["disagree"] for r in want)
    assert _classifications(got / "tiles.geojson") == _classifications(expected / "tiles.geojson")
    assert summary["ensemble"] == (kind == "ensemble") and summary["run"]["model"] == str(models[f"{kind}_onnx"])
    assert sorted(p.name for p in got.iterdir()) == sorted(p.name for p in expected.iterdir())


def test_slide_predict_command_on_an_export_loads_no_torch(models, tmp_path):
    """``histobreast slide predict EXPORTED --review`` in a fresh interpreter: torch never loads."""
    out, review = tmp_path / "out", tmp_path / "review"
    args = ["slide", "predict", str(models["slide"]), "--model", str(models["hybrid_onnx"]), "--out", str(out)]
    args += ["--tile-um", "x".join(map(str, TILE_UM)), "--overlap", "0.25", "--batch-size", "16", "--threads", "1"]
    done = run_without_torch(
        "from histobreast.cli import app\n"
        "status = 0\n"
        "try:\n"
        f"    app({[*args, '--review', str(review)]!r})\n"
        "except SystemExit as stop:\n"
        "    status = stop.code\n"
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "slide1:" in done.stdout and "review:" in done.stdout
    torch_out = tmp_path / "torch"
    predict_slides([models["slide"]], models["hybrid"], torch_out, OPTIONS, say=lambda _: None)
    _assert_same_tiles(out / "slide1", torch_out / "slide1")
    cases = json.loads((review / "metrics.json").read_text())["results"]["cases"]
    assert [c["image_id"] for c in cases] == ["slide1"]
    assert "export.json" in (review / "report.md").read_text()


def _cases(review: Path) -> list[tuple]:
    cases = json.loads((review / "metrics.json").read_text())["results"]["cases"]
    return sorted((c["image_id"], c["predicted"], c["flagged"], c["agreement_note"]) for c in cases)


@pytest.mark.parametrize("kind", ["hybrid", "ensemble"])
def test_predict_review_on_an_export_writes_the_same_cards(models, tmp_path, kind):
    images = models["crops"]
    for folder, name in ((models[kind], "torch"), (models[f"{kind}_onnx"], "onnx")):
        args = ["predict", str(folder), str(images), "--out", str(tmp_path / f"{name}.csv")]
        result = runner.invoke(app, [*args, "--review", str(tmp_path / name)])
        assert result.exit_code == 0, result.output
    assert "case review:" in result.output and "onnxruntime" in result.output
    assert _cases(tmp_path / "onnx") == _cases(tmp_path / "torch") and len(_cases(tmp_path / "onnx")) > 10
    onnx = json.loads((tmp_path / "onnx" / "metrics.json").read_text())["results"]["cases"]
    torch = {
        c["image_id"]: c for c in json.loads((tmp_path / "torch" / "metrics.json").read_text())["results"]["cases"]
    }
    for case in onnx:
        assert case["confidence"] == pytest.approx(torch[case["image_id"]]["confidence"], abs=TOLERANCE)
    figures = sorted(p.name for p in (tmp_path / "onnx" / "figures").iterdir())
    assert figures == sorted(p.name for p in (tmp_path / "torch" / "figures").iterdir())
    assert "export.json" in (tmp_path / "onnx" / "report.md").read_text()


def test_explain_is_refused_on_an_export_in_one_line(models, tmp_path):
    exported = str(models["hybrid_onnx"])
    images = [str(models["crops"]), "--out", str(tmp_path / "p.csv"), "--review", str(tmp_path / "r")]
    result = runner.invoke(app, ["predict", exported, *images, "--explain"])
    assert isinstance(result.exception, ConfigError)
    assert "--explain: " in str(result.exception) and "exported folder" in str(result.exception)
    slide = ["slide", "predict", str(models["slide"]), "--model", exported, "--out", str(tmp_path / "o")]
    result = runner.invoke(app, [*slide, "--explain", "2"])
    assert isinstance(result.exception, ConfigError) and "the maps need the model folder" in str(result.exception)
    assert not (tmp_path / "o").exists() and not (tmp_path / "p.csv").exists() and not (tmp_path / "r").exists()


def test_an_export_missing_a_network_is_one_line_and_writes_nothing(models, tmp_path):
    broken = shutil.copytree(models["hybrid_onnx"], tmp_path / "broken")
    (broken / "local.onnx").unlink()
    args = ["slide", "predict", str(models["slide"]), "--model", str(broken), "--out", str(tmp_path / "out")]
    result = runner.invoke(app, [*args, "--tile-um", "384x288"])
    assert isinstance(result.exception, CheckpointError)
    assert str(result.exception) == f"{broken / 'local.onnx'}: network 'local' listed in export.json is missing"
    assert not (tmp_path / "out").exists()
    members = shutil.copytree(models["ensemble_onnx"], tmp_path / "ens")
    member = next(p for p in members.iterdir() if p.is_dir())
    (member / "global.onnx").unlink()
    with pytest.raises(CheckpointError, match=r"global\.onnx: network 'global' listed in export\.json is missing"):
        load_exported_tile_model(members)


# INT8 on the tiny model: no tile probability may move by more than 0.1 (as tests/test_runtime.py).
INT8_MAX_PROBABILITY_SHIFT = 0.1


def test_a_quantized_export_predicts_the_same_tiles(models, tmp_path):
    int8 = quantize_exported(models["hybrid_onnx"], [models["crops"]], tmp_path / "int8", max_images=8)
    quiet = {"say": lambda _: None}
    predict_slides(
        [models["slide"]], load_exported_tile_model(models["hybrid_onnx"]), tmp_path / "fp32", OPTIONS, **quiet
    )
    predict_slides([models["slide"]], load_exported_tile_model(int8), tmp_path / "q", OPTIONS, **quiet)
    _assert_same_tiles(tmp_path / "q" / "slide1", tmp_path / "fp32" / "slide1", INT8_MAX_PROBABILITY_SHIFT)


def test_the_runtime_command_writes_the_review_without_torch(models, tmp_path):
    """``python -m histobreast.runtime predict EXPORTED IMAGES --review DIR`` in a fresh interpreter."""
    out, review = tmp_path / "p.csv", tmp_path / "review"
    argv = ["predict", str(models["ensemble_onnx"]), str(models["crops"]), "--out", str(out), "--review", str(review)]
    done = run_without_torch(f"from histobreast.runtime.__main__ import main\nstatus = main({argv!r})")
    assert done.returncode == 0, done.stderr[-2000:]
    assert "case review:" in done.stdout and "ensemble, sum rule, onnxruntime" in done.stdout
    header = (review / "report.md").read_text()
    assert "onnxruntime" in header and "(no torch)" in header and "export.json" in header


def test_the_runtime_slide_command_writes_the_same_files_without_torch(models, tmp_path, capsys):
    """``python -m histobreast.runtime slide EXPORTED SLIDE --out DIR`` (the torch-free distribution's
    command): the files of ``histobreast slide predict`` on the same export; bad options are one line."""
    from histobreast.runtime.__main__ import main

    tile = "x".join(map(str, TILE_UM))
    argv = ["slide", str(models["ensemble_onnx"]), str(models["slide"]), "--tile-um", tile, "--overlap", "0.25"]
    argv += ["--batch-size", "16", "--threads", "1"]
    runtime_argv = [*argv, "--out", str(tmp_path / "runtime")]
    done = run_without_torch(f"from histobreast.runtime.__main__ import main\nstatus = main({runtime_argv!r})")
    assert done.returncode == 0, done.stderr[-2000:]
    assert f"slide1: {len(_rows(tmp_path / 'runtime' / 'slide1' / 'tiles.csv'))} tiles" in done.stdout
    args = ["slide", "predict", str(models["slide"]), "--model", str(models["ensemble_onnx"]), "--tile-um", tile]
    result = runner.invoke(
        app, [*args, "--overlap", "0.25", "--batch-size", "16", "--threads", "1", "--out", str(tmp_path / "cli")]
    )
    assert result.exit_code == 0, result.output
    for name in ("tiles.csv", "tiles.geojson"):
        assert (tmp_path / "runtime" / "slide1" / name).read_bytes() == (
            tmp_path / "cli" / "slide1" / name
        ).read_bytes()
    for option, value, message in (
        ("--overlap", "0.99", "--overlap: must be in [0, 0.95), got 0.99"),
        ("--batch-size", "0", "--batch-size: must be at least 1, got 0"),
        ("--model-mpp", "-1", "--model-mpp: must be a positive number of µm per pixel, got -1.0"),
    ):
        assert main([*argv, option, value, "--out", str(tmp_path / "bad")]) == 1
        assert capsys.readouterr().err == f"error: {message}\n"
    assert not (tmp_path / "bad").exists()
