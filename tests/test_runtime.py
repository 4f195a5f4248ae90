"""The torch-free runtime: exported folders predict in a fresh interpreter without loading torch and
write the torch path's CSV; INT8 quantisation keeps the tiny model's calls; bad folders, files and
calibration images get one line naming them."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from histobreast.cli import app
from histobreast.errors import CheckpointError, ConfigError
from histobreast.export.folder import export_onnx
from histobreast.export.quantize import quantize_exported
from histobreast.predictions import Predictions
from histobreast.runtime.folder import EXPORT_JSON
from histobreast.runtime.predict import predict_exported
from tiny_deploy import train_models
from tiny_system_a import one_torch_thread  # noqa: F401 (autouse fixture)
from torch_free import run_without_torch

runner = CliRunner()
# Largest |runtime - torch| probability accepted in the CSVs (the export's own bar is 1e-4).
CSV_TOLERANCE = 1e-4


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """Tiny models, their exports and a folder of the 8 test images."""
    trained = train_models(tmp_path_factory.mktemp("runtime"), ("hybrid", "ensemble", "plain"))
    images = trained["root"] / "test_images"
    images.mkdir()
    for record in trained["test"]:
        shutil.copy(record.path, images / record.path.name)
    trained["images"] = images
    for kind in ("hybrid", "ensemble", "plain"):
        trained[f"{kind}_onnx"] = export_onnx(trained[kind], trained["root"] / f"{kind}_onnx")
    return trained


def torch_free_predict(exported: Path, images: Path, out: Path) -> subprocess.CompletedProcess:
    """``python -m histobreast.runtime predict`` in a fresh interpreter that fails if torch loads."""
    argv = ["predict", str(exported), str(images), "--out", str(out), "--threads", "1"]
    return run_without_torch(f"from histobreast.runtime.__main__ import main\nstatus = main({argv!r})", timeout=120)


@pytest.mark.parametrize("kind", ["hybrid", "ensemble", "plain"])
def test_torch_free_runtime_writes_the_torch_paths_csv(models, tmp_path, kind) -> None:
    torch_csv, onnx_csv = tmp_path / "torch.csv", tmp_path / "onnx.csv"
    result = runner.invoke(app, ["predict", str(models[kind]), str(models["images"]), "--out", str(torch_csv)])
    assert result.exit_code == 0, result.output
    done = torch_free_predict(models[f"{kind}_onnx"], models["images"], onnx_csv)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "onnxruntime" in done.stdout
    expected, got = Predictions.from_csv(torch_csv), Predictions.from_csv(onnx_csv)
    assert got.image_ids == expected.image_ids and got.classes == expected.classes and len(got) == 8
    np.testing.assert_allclose(got.probs, expected.probs, atol=CSV_TOLERANCE, rtol=0)
    assert (got.predicted == expected.predicted).all()
    assert sorted(got.extra) == sorted(expected.extra)  # outside_training (and an ensemble's uncertainty)
    for column in got.extra:
        np.testing.assert_allclose(got.extra[column], expected.extra[column], atol=CSV_TOLERANCE)


def test_predict_command_runs_an_exported_folder(models, tmp_path) -> None:
    out = tmp_path / "p.csv"
    result = runner.invoke(
        app,
        ["predict", str(models["hybrid_onnx"]), str(models["images"]), "--out", str(out), "--method", "local", "--tta"],
    )
    assert result.exit_code == 0, result.output
    assert "local, six-view TTA, onnxruntime" in result.output and len(Predictions.from_csv(out)) == 8
    review = runner.invoke(
        app,
        [
            "predict",
            str(models["hybrid_onnx"]),
            str(models["images"]),
            "--out",
            str(out),
            "--review",
            str(tmp_path / "r"),
        ],
    )
    assert review.exit_code == 0, review.output  # the same cards as the torch path: tests/test_runtime_slides.py
    assert (tmp_path / "r" / "report.html").is_file() and "case review:" in review.output


def test_tta_matches_the_torch_path(models) -> None:
    from histobreast.pipelines import zhu2019
    from histobreast.preprocess.views import SIX_VIEWS

    expected = zhu2019.predict_records(models["hybrid"], models["test"], tta_views=SIX_VIEWS, device="cpu")
    got = predict_exported(models["hybrid_onnx"], models["test"], tta_views=SIX_VIEWS)
    for method in expected:
        np.testing.assert_allclose(got[method].probs, expected[method].probs, atol=CSV_TOLERANCE, rtol=0)


# INT8 on the tiny model: at most one of the 8 synthetic test images may change its call (12.5 points
# of accuracy), and no probability may move by more than 0.1.
INT8_MAX_CHANGED_CALLS = 1
INT8_MAX_PROBABILITY_SHIFT = 0.1


def test_int8_keeps_the_calls_within_tolerance(models, tmp_path) -> None:
    out = quantize_exported(models["hybrid_onnx"], [record.path for record in models["train"]], tmp_path / "int8")
    description = json.loads((out / EXPORT_JSON).read_text())
    made = description["quantization"]
    assert made["format"] == "QDQ" and made["weights"] == "int8, per channel" and made["calibration_count"] == 16
    assert [n["file"] for n in description["networks"]] == ["global.int8.onnx", "local.int8.onnx"]
    fp32 = predict_exported(models["hybrid_onnx"], models["test"])["hybrid"]
    int8 = predict_exported(out, models["test"])["hybrid"]
    assert np.abs(int8.probs - fp32.probs).max() <= INT8_MAX_PROBABILITY_SHIFT
    assert (int8.predicted != fp32.predicted).sum() <= INT8_MAX_CHANGED_CALLS
    fp32_accuracy = (fp32.predicted == fp32.labels).mean()
    assert abs((int8.predicted == int8.labels).mean() - fp32_accuracy) <= INT8_MAX_CHANGED_CALLS / len(fp32)


def test_an_ensemble_quantizes_every_member(models, tmp_path) -> None:
    out = quantize_exported(models["ensemble_onnx"], [models["root"] / "bach"], tmp_path / "int8", max_images=4)
    got = predict_exported(out, models["test"])
    assert list(got) == ["ensemble", "member1", "member2"] and len(got["ensemble"]) == 8


def test_bad_folders_and_files_are_one_line_naming_them(models, tmp_path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match=r"empty: not an exported folder \(no export.json\)"):
        predict_exported(tmp_path / "empty", models["test"])
    with pytest.raises(CheckpointError, match=r"a model folder\? export it first"):
        predict_exported(models["hybrid"], models["test"])
    broken = shutil.copytree(models["hybrid_onnx"], tmp_path / "broken")
    data = (broken / "local.onnx").read_bytes()
    (broken / "local.onnx").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match=r"local\.onnx: does not match its sha256 in export\.json \(truncated"):
        predict_exported(broken, models["test"])
    mismatch = shutil.copytree(models["hybrid_onnx"], tmp_path / "mismatch")
    description = json.loads((mismatch / EXPORT_JSON).read_text())
    description["model"]["classes"] = ["a", "b", "c"]
    (mismatch / EXPORT_JSON).write_text(json.dumps(description))
    with pytest.raises(
        CheckpointError, match=r"global\.onnx: outputs 2 class probabilities but .*export\.json lists 3"
    ):
        predict_exported(mismatch, models["test"])


def test_calibration_images_of_the_wrong_kind_are_refused(models, tmp_path) -> None:
    (tmp_path / "notes.txt").write_text("not an image")
    with pytest.raises(ConfigError, match=r"notes\.txt: not an image file or folder"):
        quantize_exported(models["hybrid_onnx"], [tmp_path / "notes.txt"], tmp_path / "q1")
    Image.fromarray(np.full((64, 96, 3), 255, np.uint8)).save(tmp_path / "blank.png")  # no tissue at all
    with pytest.raises(
        ConfigError, match=r"--calibration .*blank\.png: unlike the model's training images \(0% tissue"
    ):
        quantize_exported(models["hybrid_onnx"], [tmp_path / "blank.png"], tmp_path / "q2")
    assert not (tmp_path / "q1").exists() and not (tmp_path / "q2").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_named_networks_can_stay_fp32(models, tmp_path) -> None:
    out = quantize_exported(models["hybrid_onnx"], [models["images"]], tmp_path / "mixed", keep_fp32=["global"])
    description = json.loads((out / EXPORT_JSON).read_text())
    assert [(n["file"], n["precision"]) for n in description["networks"]] == [
        ("global.onnx", "fp32"),
        ("local.int8.onnx", "int8"),
    ]
    assert description["quantization"]["kept_fp32"] == ["global"]
    fp32 = predict_exported(models["hybrid_onnx"], models["test"])["global"]
    np.testing.assert_allclose(predict_exported(out, models["test"])["global"].probs, fp32.probs, atol=1e-6)
    with pytest.raises(ConfigError, match=r"--fp32: \['glob'\] are not networks of"):
        quantize_exported(models["hybrid_onnx"], [models["images"]], tmp_path / "bad", keep_fp32=["glob"])
