"""System A pipeline: two branches trained separately, assembled, and scored by all five methods."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from histobreast.data.synthetic import synth_breakhis
from histobreast.data.task_records import experiment_records
from histobreast.errors import ConfigError
from histobreast.pipelines import get_pipeline
from histobreast.pipelines.config import parse_config
from histobreast.pipelines.package import load_model_folder
from histobreast.pipelines.zhu2019 import METHODS, method_probabilities
from histobreast.votes import fuse_branches, patch_vote

TINY = {
    "widths": {n: [4, 4, 4, 2, 4, 4] for n in ("3a", "3b", "4a", "4b", "4c", "4d", "4e")},
    "stem_widths": [8, 8, 8],
    "aux_widths": [4, 8],
}


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread():
    """Tiny networks run several times faster on one thread on the shared 2-core machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def tiny_config(root, **overrides):
    raw = {
        "name": "zhu_tiny",
        "pipeline": "zhu2019",
        "seed": 0,
        "data": {"root": str(root), "magnification": 40, "val_fraction": 0.3},
        "preprocess": {
            "input_size": 32,
            "patches": {"grid": [3, 2], "size": 32, "per_image": 2},
            "stain": {"method": "reinhard", "target": "train"},
            "augment": {"rotation": 180, "hflip": True, "vflip": True, "copies": 2},
        },
        "model": {"name": "googlenet_sep", "kwargs": {**TINY, "fusion_weight": 0.6}},
        "train": {
            "iterations": 2,
            "batch_size": 4,
            "lr": 0.01,
            "num_workers": 0,
            "log_every": 1,
            "tensorboard": False,
            "progress": False,
        },
        "evaluate": {"bootstrap": 10},
    }
    for key, value in overrides.items():
        raw[key] = {**raw[key], **value} if isinstance(value, dict) else value
    return parse_config(raw)


@pytest.fixture(scope="module")
def breakhis_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("breakhis")
    synth_breakhis(root, patients_per_subtype=1, images_per_magnification=3, magnifications=(40,), size=(96, 64))
    return root


def test_train_fold_then_predict_all_methods(breakhis_root, tmp_path):
    cfg = tiny_config(breakhis_root)
    records, classes = experiment_records(cfg.data)
    pipeline = get_pipeline("zhu2019")
    folder = pipeline.train_fold(cfg, records[:16], records[16:20], classes, tmp_path / "fold1")
    assert (tmp_path / "fold1" / "global" / "checkpoints" / "last.json").is_file()
    assert (tmp_path / "fold1" / "local" / "checkpoints" / "last.json").is_file()
    info = json.loads((folder / "model.json").read_text())
    assert info["model_name"] == "hybrid_googlenet_sep" and info["model_kwargs"]["fusion_weight"] == 0.6
    assert info["preprocess"]["stain"]["fitted"]["method"] == "reinhard"
    assert info["microns_per_pixel"] == pytest.approx(records[0].microns_per_pixel)  # the training images' scale
    assert set(info["metrics"]) == {"global", "local"} and "val_accuracy" in info["metrics"]["local"]

    out = pipeline.predict_records(folder, records[20:], device="cpu")
    assert list(out) == list(METHODS)
    for pred in out.values():
        assert pred.probs.shape == (len(records) - 20, 2)
        np.testing.assert_allclose(pred.probs.sum(axis=1), 1.0, atol=1e-5)
        assert list(pred.labels) == [classes.index(r.label) for r in records[20:]]
    loaded = load_model_folder(folder)
    x = {"global": torch.zeros(1, 3, 32, 32), "patches": torch.zeros(1, 6, 3, 32, 32)}
    assert loaded.model(x).shape == (1, 2)

    tta = pipeline.predict_records(loaded, records[20:22], tta_views=["raw", "rot90", "flip_x"], device="cpu")
    assert tta["hybrid"].probs.shape == (2, 2)

    assert pipeline.train_fold(cfg, records[:16], [], classes, tmp_path / "fold1", resume=True) == folder


def test_methods_equal_hand_computed_votes():
    rng = np.random.default_rng(0)
    patches = rng.dirichlet([1, 1], size=(3, 6))
    global_probs = rng.dirichlet([1, 1], size=3)
    out = method_probabilities(global_probs, patches, 0.6, 0.3)
    mean_vote = patch_vote(patches, "mean", 0.3).numpy()
    np.testing.assert_allclose(out["local"], mean_vote)
    np.testing.assert_allclose(out["hybrid"], 0.6 * mean_vote + 0.4 * global_probs)
    np.testing.assert_allclose(out["hybrid_max"], fuse_branches(patch_vote(patches, "max", 0.3), global_probs, 0.6))
    np.testing.assert_allclose(out["global"], global_probs)
    # one image by hand: patches below the 0.3 spread are ignored before averaging
    hand = np.array([[[0.9, 0.1], [0.55, 0.45], [0.2, 0.8]]])
    np.testing.assert_allclose(method_probabilities(np.array([[0.5, 0.5]]), hand, 0.6, 0.3)["local"], [[0.55, 0.45]])


def test_wrong_branch_network_is_refused(breakhis_root, tmp_path):
    cfg = tiny_config(breakhis_root, model={"name": "resnet18", "kwargs": {}})
    records, classes = experiment_records(cfg.data)
    with pytest.raises(ConfigError, match="model.name"):
        get_pipeline("zhu2019").train_fold(cfg, records, [], classes, tmp_path)


@pytest.mark.realdata
def test_real_bach_images_through_the_pipeline(bach_dir, tmp_path):
    cfg = tiny_config(
        bach_dir, data={"magnification": None, "task": "binary", "microns_per_pixel": 0.84, "val_fraction": 0.0}
    )
    records, classes = experiment_records(cfg.data)
    picked = records[:4] + records[-4:]  # Normal and Invasive: both binary classes
    pipeline = get_pipeline("zhu2019")
    folder = pipeline.train_fold(cfg, picked[::2], [], classes, tmp_path / "fold1")
    out = pipeline.predict_records(folder, picked[1::2], device="cpu")
    assert out["hybrid"].probs.shape == (4, 2) and list(out["hybrid"].labels) == [0, 0, 1, 1]
