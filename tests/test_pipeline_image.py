"""Plain whole-image pipeline: whole-image resize and physical-scale crops, train -> predict."""

from __future__ import annotations

import numpy as np
import pytest

from degenerate_inputs import assert_predict_flags_degenerate_inputs
from histobreast.data.protocol import experiment_splits, validation_split
from histobreast.data.synthetic import synth_bach
from histobreast.data.task_records import experiment_records
from histobreast.pipelines import get_pipeline
from histobreast.pipelines.config import parse_config
from histobreast.pipelines.package import read_model_info
from test_pipeline_zhu2019 import one_torch_thread  # noqa: F401 (autouse fixture)


@pytest.fixture(scope="module")
def bach_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("bach")
    synth_bach(root, per_class=40, size=(96, 72), image_format="jpg")
    return root


def _cfg(root, **preprocess):
    return parse_config(
        {
            "name": "img",
            "pipeline": "image",
            "data": {"root": str(root), "task": "binary", "n_folds": 2},
            "preprocess": {"input_size": 32, "augment": {"hflip": True, "color_jitter": 0.1}, **preprocess},
            "model": {"name": "resnet18"},
            "train": {"epochs": 1, "batch_size": 16, "num_workers": 0, "tensorboard": False, "progress": False},
        }
    )


@pytest.mark.parametrize("preprocess", [{}, {"microns_per_pixel": 18.0}], ids=["resized", "physical-scale"])
def test_train_fold_then_predict(bach_root, tmp_path, preprocess):
    cfg = _cfg(bach_root, **preprocess)
    records, classes = experiment_records(cfg.data)
    split = experiment_splits(cfg.data, records, cfg.seed)[0]
    train, val = validation_split(cfg.data, split.select(records, "train"), cfg.seed)
    pipeline = get_pipeline("image")
    folder = pipeline.train_fold(cfg, train, val, classes, tmp_path / "fold1")
    info = read_model_info(folder)
    assert info["model_name"] == "resnet18" and info["classes"] == ["non-carcinoma", "carcinoma"]
    assert "val_accuracy" in info["metrics"]
    assert_predict_flags_degenerate_inputs(folder, train[0].path, tmp_path)
    test = split.select(records, "test")
    views = ["raw", "flip_y"] if preprocess else []
    out = pipeline.predict_records(folder, test, tta_views=views, device="cpu")
    assert list(out) == ["image"]
    pred = out["image"]
    assert pred.probs.shape == (len(test), 2)
    np.testing.assert_allclose(pred.probs.sum(axis=1), 1.0, atol=1e-5)
    assert pred.image_ids == [r.image_id for r in test]
