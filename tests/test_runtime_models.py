"""System B and the Spanhol 2016 baseline through the torch-free runtime: exported, predicted in a fresh
interpreter without torch, and matching the torch path's CSV; System B quantises through its own
crops; export.json says how inputs are built (old exports and missing networks are one line)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from histobreast.cli import app
from histobreast.data.imageio import read_rgb
from histobreast.data.synthetic import synth_bach
from histobreast.errors import CheckpointError
from histobreast.export.folder import export_onnx
from histobreast.export.onnx import PARITY_TOLERANCE
from histobreast.export.quantize import quantize_exported
from histobreast.models import create_model
from histobreast.pipelines import liu2022, spanhol2016
from histobreast.pipelines.config import parse_config
from histobreast.pipelines.input_range import training_inputs
from histobreast.pipelines.package import images_scale, save_model_folder
from histobreast.predictions import Predictions
from histobreast.preprocess.stain import create_normalizer
from histobreast.preprocess.views import SIX_VIEWS
from histobreast.runtime.folder import EXPORT_JSON, read_exported
from histobreast.runtime.predict import predict_exported
from test_runtime import CSV_TOLERANCE, torch_free_predict
from tiny_system_a import one_torch_thread  # noqa: F401 (autouse fixture)

runner = CliRunner()
CLASSES = ["Normal", "Invasive"]
# System B's tiny model: ResNet18 encoders on 32 px crops, a small BiLSTM; FDNet's last layer is
# scaled so the untrained model's per-view calls are not near-ties (a 1e-6 difference cannot flip them).
MSMV_KWARGS = {"encoder": "resnet18", "hidden": 8, "lstm_layers": 1}
HEAD_GAIN = 20.0


def system_b_folder(root: Path, records: list, selection: str = "density") -> Path:
    """A seeded, untrained System B model folder with a Reinhard stain target and the images' scale;
    ``selection="random"``: the paper's random-region control instead of KREM."""
    cfg = parse_config(
        {
            "name": "msmv_tiny",
            "pipeline": "liu2022",
            "seed": 3,
            "preprocess": {
                "input_size": 32,
                "stain": {"method": "reinhard", "target": "train"},
                "regions": {"selection": selection},
            },
            "model": {"name": "msmv_pfenet", "kwargs": MSMV_KWARGS},
            "train": {"device": "cpu", "iterations": 1},
        }
    )
    torch.manual_seed(0)
    model = create_model("msmv_pfenet", num_classes=len(CLASSES), **MSMV_KWARGS).eval()
    with torch.no_grad():
        model.discriminator.fc.weight.mul_(HEAD_GAIN)
    stain = create_normalizer("reinhard").fit(read_rgb(records[0].path))
    return save_model_folder(
        root / f"msmv_{selection}",
        model,
        cfg,
        CLASSES,
        stain=stain,
        microns_per_pixel=images_scale(records),
        training_inputs=training_inputs(records),
    )


def spanhol_folder(root: Path, records: list) -> Path:
    """The Spanhol 2016 baseline's four-member max-rule ensemble, trained two steps per member."""
    cfg = parse_config(
        {
            "name": "spanhol_tiny",
            "pipeline": "spanhol2016",
            "model": {"name": "spanhol_patch_cnn"},
            "train": {
                "iterations": 2,
                "batch_size": 8,
                "num_workers": 0,
                "device": "cpu",
                "tensorboard": False,
                "progress": False,
            },
            "spanhol": {"patch_sizes": [16, 32], "random_patches": 6, "scale": 0.5},
        }
    )
    return spanhol2016.train_fold(cfg, records, [], CLASSES, root / "spanhol")


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("runtime_models")
    b_records = synth_bach(root / "bach_b", per_class=2, size=(256, 192), classes=tuple(CLASSES), image_format="png")
    s_records = synth_bach(root / "bach_s", per_class=3, size=(96, 72), classes=tuple(CLASSES), image_format="png")
    out = {"root": root, "b_records": b_records, "s_records": s_records}
    out["system_b"] = system_b_folder(root, b_records)
    out["spanhol"] = spanhol_folder(root, s_records)
    for kind, records in (("system_b", b_records), ("spanhol", s_records)):
        images = root / f"{kind}_images"
        images.mkdir()
        for record in records:
            shutil.copy(record.path, images / record.path.name)
        out[f"{kind}_images"] = images
        out[f"{kind}_onnx"] = export_onnx(out[kind], root / f"{kind}_onnx")
    return out


def test_export_json_says_how_inputs_are_built(models) -> None:
    system_b = read_exported(models["system_b_onnx"])
    assert system_b.inputs["kind"] == "key_regions" and system_b.inputs["physical_scale"] is True
    assert system_b.inputs["levels"] == [0, 1, 2] and system_b.inputs["views"] == list(SIX_VIEWS)
    assert [(n.name, n.role) for n in system_b.networks.values()] == [
        ("encoder0", "encoder"),
        ("encoder1", "encoder"),
        ("encoder2", "encoder"),
        ("fdnet", "fdnet"),
    ]
    spanhol = read_exported(models["spanhol_onnx"])
    assert spanhol.rule == "max" and len(spanhol.members) == 4
    for member in spanhol.members.values():
        assert member.inputs["kind"] == "spanhol_patches" and member.inputs["physical_scale"] is False
        assert member.networks["image"].sample_shape == (3, member.inputs["patch_size"], member.inputs["patch_size"])
        assert member.description["parity"]["max_abs_difference"]["image"] <= PARITY_TOLERANCE  # batches 1 and 3


@pytest.mark.parametrize("kind", ["system_b", "spanhol"])
def test_torch_free_runtime_writes_the_torch_paths_csv(models, tmp_path, kind) -> None:
    torch_csv, onnx_csv = tmp_path / "torch.csv", tmp_path / "onnx.csv"
    images = models[f"{kind}_images"]
    result = runner.invoke(app, ["predict", str(models[kind]), str(images), "--out", str(torch_csv)])
    assert result.exit_code == 0, result.output
    done = torch_free_predict(models[f"{kind}_onnx"], images, onnx_csv)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "onnxruntime" in done.stdout
    expected, got = Predictions.from_csv(torch_csv), Predictions.from_csv(onnx_csv)
    assert got.image_ids == expected.image_ids and got.classes == expected.classes and len(got) > 0
    np.testing.assert_allclose(got.probs, expected.probs, atol=CSV_TOLERANCE, rtol=0)
    assert (got.predicted == expected.predicted).all()
    assert sorted(got.extra) == sorted(expected.extra)  # System B's view_disagreement, an ensemble's uncertainty
    for column in got.extra:
        np.testing.assert_allclose(got.extra[column], expected.extra[column], atol=CSV_TOLERANCE)


def test_system_b_methods_and_views_match_the_torch_path(models) -> None:
    """Every method (the per-view table with its region boxes too), with TTA's views replacing the trained ones."""
    records = models["b_records"]
    views = ("raw", "rot90", "flip_y")
    expected = liu2022.predict_records(models["system_b"], records, tta_views=views, device="cpu")
    got = predict_exported(models["system_b_onnx"], records, tta_views=views)
    assert list(got) == list(expected) == ["image", "patch"]
    for method in expected:
        assert got[method].image_ids == expected[method].image_ids
        np.testing.assert_allclose(got[method].probs, expected[method].probs, atol=CSV_TOLERANCE, rtol=0)
        for column, values in expected[method].extra.items():
            np.testing.assert_array_equal(got[method].extra[column], values)  # region boxes, vote shares


def test_the_random_region_control_draws_the_torch_paths_regions(models) -> None:
    records = models["b_records"]
    folder = system_b_folder(models["root"], records, selection="random")
    exported = export_onnx(folder, models["root"] / "random_onnx")
    assert read_exported(exported).inputs["selection"] == "random" and read_exported(exported).inputs["seed"] == 3
    expected = liu2022.predict_records(folder, records, device="cpu")["patch"]
    got = predict_exported(exported, records)["patch"]
    for column in ("region_x", "region_y", "region_w", "region_h"):  # the same seeded draws
        np.testing.assert_array_equal(got.extra[column], expected.extra[column])
    np.testing.assert_allclose(got.probs, expected.probs, atol=CSV_TOLERANCE, rtol=0)
    densest = predict_exported(models["system_b_onnx"], records)["patch"]
    assert not np.array_equal(got.extra["region_x"], densest.extra["region_x"])  # not KREM's windows


def test_spanhol_members_match_the_torch_path(models) -> None:
    records = models["s_records"]
    expected = spanhol2016.predict_records(models["spanhol"], records, device="cpu")
    got = predict_exported(models["spanhol_onnx"], records)
    assert list(got) == ["ensemble", *list(expected)[1:]]  # the torch path names the vote max_fusion
    np.testing.assert_allclose(got["ensemble"].probs, expected["max_fusion"].probs, atol=CSV_TOLERANCE, rtol=0)
    for member in list(expected)[1:]:
        np.testing.assert_allclose(got[member].probs, expected[member].probs, atol=CSV_TOLERANCE, rtol=0)


# INT8 of System B's tiny untrained model (its sharpened head magnifies the encoders' rounding) on its 4
# images, 24 per-view samples, calibrated on the same 4; measured 2026-12-03: per-view probabilities moved by at most 0.124, 3 of 24
# per-view calls and 1 of 4 six-view votes changed. The bars: 0.2, a sixth of the views, one image.
SYSTEM_B_INT8_MAX_SHIFT = 0.2
SYSTEM_B_INT8_MAX_CHANGED_VIEWS = 1 / 6
SYSTEM_B_INT8_MAX_CHANGED_IMAGES = 1


def test_system_b_quantizes_through_its_crops(models, tmp_path) -> None:
    records = models["b_records"]
    out = quantize_exported(models["system_b_onnx"], [models["system_b_images"]], tmp_path / "int8")
    description = json.loads((out / EXPORT_JSON).read_text())
    assert [n["file"] for n in description["networks"]] == [
        "encoder0.int8.onnx",
        "encoder1.int8.onnx",
        "encoder2.int8.onnx",
        "fdnet.int8.onnx",
    ]
    assert description["inputs"] == read_exported(models["system_b_onnx"]).inputs
    assert description["quantization"]["calibration_count"] == 4
    fp32, int8 = predict_exported(models["system_b_onnx"], records), predict_exported(out, records)
    assert np.abs(int8["patch"].probs - fp32["patch"].probs).max() <= SYSTEM_B_INT8_MAX_SHIFT
    assert (int8["patch"].predicted != fp32["patch"].predicted).mean() <= SYSTEM_B_INT8_MAX_CHANGED_VIEWS
    assert (int8["image"].predicted != fp32["image"].predicted).sum() <= SYSTEM_B_INT8_MAX_CHANGED_IMAGES


def test_a_missing_or_unlisted_network_and_an_old_export_are_one_line(models, tmp_path) -> None:
    records = models["b_records"]
    missing = shutil.copytree(models["system_b_onnx"], tmp_path / "missing")
    (missing / "fdnet.onnx").unlink()
    with pytest.raises(
        CheckpointError, match=r"missing/fdnet\.onnx: network 'fdnet' listed in export\.json is missing"
    ):
        predict_exported(missing, records)
    unlisted = shutil.copytree(models["system_b_onnx"], tmp_path / "unlisted")
    description = json.loads((unlisted / EXPORT_JSON).read_text())
    description["networks"] = description["networks"][:-1]
    (unlisted / EXPORT_JSON).write_text(json.dumps(description))
    with pytest.raises(
        CheckpointError, match=r"unlisted/export\.json: inputs 'key_regions' need networks 3 encoder, 1 fdnet"
    ):
        predict_exported(unlisted, records)
    old = shutil.copytree(models["system_b_onnx"], tmp_path / "old")
    description = json.loads((old / EXPORT_JSON).read_text())
    del description["inputs"]
    (old / EXPORT_JSON).write_text(json.dumps(description))
    with pytest.raises(
        CheckpointError, match=r"old/export\.json: no 'inputs' description .*re-export the model folder"
    ):
        predict_exported(old, records)
