"""Model folders: save/load round trip, stain target kept, pruned widths rebuilt, bad folders refused."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from histobreast.errors import CheckpointError
from histobreast.models import create_model
from histobreast.pipelines.config import parse_config
from histobreast.pipelines.package import load_model_folder, read_model_info, save_model_folder
from histobreast.preprocess.stain import ReinhardNormalizer
from test_pipeline_zhu2019 import one_torch_thread  # noqa: F401 (autouse fixture)

TINY_WIDTHS = {name: [4, 4, 4, 4, 4, 4] for name in ("3a", "3b", "4a", "4b", "4c", "4d", "4e")}


def _cfg(**preprocess):
    return parse_config(
        {
            "name": "t",
            "pipeline": "zhu2019",
            "model": {"name": "googlenet_sep"},
            "preprocess": {"input_size": 64, **preprocess},
            "train": {"iterations": 1},
        }
    )


def _hybrid():
    branch = {"widths": TINY_WIDTHS, "stem_widths": [8, 8, 8], "aux_logits": False}
    return create_model("hybrid_googlenet_sep", num_classes=2, global_kwargs=branch, local_kwargs=branch)


def test_round_trip_rebuilds_the_same_model(tmp_path):
    model = _hybrid().eval()
    stain = ReinhardNormalizer(np.array([60.0, 20.0, -10.0]), np.array([10.0, 5.0, 4.0]))
    folder = save_model_folder(
        tmp_path / "model",
        model,
        _cfg(stain={"method": "reinhard", "target": "train"}),
        ["benign", "malignant"],
        stain=stain,
        metrics={"val_accuracy": 0.5, "x": float("nan")},
    )
    info = json.loads((folder / "model.json").read_text())
    assert info["format"] == "histobreast-model" and info["version"] == 1
    assert info["model_name"] == "hybrid_googlenet_sep" and info["pipeline"] == "zhu2019"
    assert info["model_kwargs"]["global_kwargs"]["widths"]["3a"] == [4] * 6  # pruned-style widths kept
    assert info["metrics"] == {"val_accuracy": 0.5, "x": None}
    loaded = load_model_folder(folder)
    assert loaded.classes == ["benign", "malignant"] and not loaded.model.training
    assert loaded.cfg.preprocess.input_size == 64
    np.testing.assert_allclose(loaded.stain.target_mean, stain.target_mean)
    x = {"global": torch.randn(2, 3, 64, 64), "patches": torch.randn(2, 15, 3, 32, 32)}
    with torch.no_grad():
        torch.testing.assert_close(loaded.model(x), model(x))


def test_plain_model_uses_config_kwargs(tmp_path):
    cfg = parse_config({"name": "r", "model": {"name": "resnet18"}, "train": {"epochs": 1}})
    folder = save_model_folder(tmp_path / "m", create_model("resnet18", num_classes=3), cfg, ["a", "b", "c"])
    info = read_model_info(folder)
    assert info["model_name"] == "resnet18" and info["model_kwargs"] == {"num_classes": 3}
    assert load_model_folder(folder).stain is None


def test_bad_folders_are_refused(tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        load_model_folder(tmp_path / "absent")
    (tmp_path / "ens").mkdir()
    (tmp_path / "ens" / "ensemble.json").write_text('{"format": "histobreast-ensemble"}')
    with pytest.raises(CheckpointError, match="ensemble"):
        load_model_folder(tmp_path / "ens")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match="no model.json"):
        load_model_folder(tmp_path / "empty")
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "model.json").write_text('{"format": "other"}')
    with pytest.raises(CheckpointError, match="format"):
        load_model_folder(tmp_path / "bad")


def test_images_scale_is_the_median():
    from types import SimpleNamespace

    from histobreast.pipelines.package import images_scale

    assert images_scale([SimpleNamespace(microns_per_pixel=m) for m in (0.84, 0.42, 0.84)]) == 0.84
    assert images_scale([]) is None
