"""``histobreast export``: every model kind (System A hybrid, pruned, DNS, plain classifier, ensemble,
System B) exported to ONNX with a parity check against PyTorch; refusals leave nothing behind."""

from __future__ import annotations

import json

import pytest
import torch
from typer.testing import CliRunner

from histobreast.cli import app
from histobreast.errors import CheckpointError, ConfigError
from histobreast.export import onnx as export_onnx_module
from histobreast.export.folder import export_onnx
from histobreast.export.onnx import PARITY_TOLERANCE, ExportError
from histobreast.models import create_model
from histobreast.pipelines.config import parse_config
from histobreast.pipelines.package import save_model_folder
from histobreast.runtime.folder import EXPORT_JSON, read_exported
from tiny_deploy import train_models
from tiny_system_a import one_torch_thread  # noqa: F401 (autouse fixture)

runner = CliRunner()


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    return train_models(tmp_path_factory.mktemp("export"))


@pytest.mark.parametrize("kind", ["hybrid", "pruned", "dns", "plain"])
def test_every_network_exports_within_tolerance(models, tmp_path, kind) -> None:
    out = export_onnx(models[kind], tmp_path / "exported")
    exported = read_exported(out)
    expected = ["image"] if kind == "plain" else ["global", "local"]
    assert list(exported.networks) == expected
    parity = exported.description["parity"]["max_abs_difference"]
    assert set(parity) == set(expected) and all(0 <= d <= PARITY_TOLERANCE for d in parity.values())
    assert exported.classes == models["classes"]
    assert exported.info["preprocess"]["patches"]["grid"] == [2, 1]  # the model's description travels whole
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary folder left


def test_pruned_widths_reach_the_graph(models, tmp_path) -> None:
    """The pruned model's narrower layers are in the ONNX graph (not the unpruned widths)."""
    import onnx

    def conv_weights(folder):
        graph = onnx.load(str(folder / "global.onnx")).graph
        return sum(int(torch.tensor(i.dims).prod()) for i in graph.initializer)

    full, pruned = export_onnx(models["hybrid"], tmp_path / "full"), export_onnx(models["pruned"], tmp_path / "pruned")
    assert conv_weights(pruned) < 0.7 * conv_weights(full)


def test_an_ensemble_exports_every_member(models, tmp_path) -> None:
    out = export_onnx(models["ensemble"], tmp_path / "exported")
    exported = read_exported(out)
    assert exported.rule == "sum" and list(exported.members) == ["member1", "member2"]
    for member in exported.members.values():
        assert list(member.networks) == ["global", "local"]


def test_system_b_exports_its_encoders_and_fdnet(tmp_path) -> None:
    cfg = parse_config(
        {
            "name": "msmv_tiny",
            "pipeline": "liu2022",
            "preprocess": {"input_size": 32},
            "model": {"name": "msmv_pfenet", "kwargs": {"encoder": "resnet18", "hidden": 8, "lstm_layers": 1}},
            "train": {"device": "cpu", "iterations": 1},
        }
    )
    torch.manual_seed(0)
    model = create_model("msmv_pfenet", num_classes=2, encoder="resnet18", hidden=8, lstm_layers=1).eval()
    folder = save_model_folder(tmp_path / "model", model, cfg, ["benign", "malignant"], microns_per_pixel=0.42)
    exported = read_exported(export_onnx(folder, tmp_path / "exported"))
    assert list(exported.networks) == ["encoder0", "encoder1", "encoder2", "fdnet"]
    assert exported.networks["fdnet"].sample_shape == (3, 512)
    assert max(exported.description["parity"]["max_abs_difference"].values()) <= PARITY_TOLERANCE


def test_parity_failure_names_the_network_and_writes_nothing(models, tmp_path, monkeypatch) -> None:
    real = export_onnx_module.max_difference
    monkeypatch.setattr(export_onnx_module, "max_difference", lambda net, path, seed=0: real(net, path) + 0.5)
    with pytest.raises(ExportError, match=r"network 'global': onnxruntime differs from PyTorch by 0\.5"):
        export_onnx(models["hybrid"], tmp_path / "exported")
    assert list(tmp_path.iterdir()) == []


def test_refusals_are_one_line_naming_the_path(models, tmp_path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match=r"empty: no model\.json; not a model folder"):
        export_onnx(tmp_path / "empty", tmp_path / "out")
    with pytest.raises(ConfigError, match=r"--out .*empty: already exists"):
        export_onnx(models["hybrid"], tmp_path / "empty")
    with pytest.raises(ConfigError, match="is the input"):
        export_onnx(models["hybrid"], models["hybrid"])


def test_cli_export_prints_parity(models, tmp_path) -> None:
    result = runner.invoke(app, ["export", str(models["hybrid"]), "--format", "onnx", "--out", str(tmp_path / "x")])
    assert result.exit_code == 0, result.output
    assert "global (max |diff|" in result.output and (tmp_path / "x" / EXPORT_JSON).is_file()
    description = json.loads((tmp_path / "x" / EXPORT_JSON).read_text())
    assert description["model"]["model_kwargs"]["fusion_weight"] == 0.6  # paper A's λ travels with the graphs
    bad = runner.invoke(app, ["export", str(models["hybrid"]), "--format", "tflite", "--out", str(tmp_path / "y")])
    assert bad.exit_code != 0 and "--format" in str(bad.exception)
