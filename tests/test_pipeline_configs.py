"""Every System A, baseline and demo config loads, names its pipeline, and keeps the paper's settings."""

from __future__ import annotations

from pathlib import Path

import pytest

from histobreast.pipelines import get_pipeline
from histobreast.pipelines.config import load_config
from histobreast.pipelines.zhu2019 import split_kwargs

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
FILES = sorted(
    [*CONFIGS.glob("zhu2019/*.yaml"), *CONFIGS.glob("baselines/*.yaml"), CONFIGS / "demo" / "zhu2019_synthetic.yaml"]
)


@pytest.mark.parametrize("path", FILES, ids=[f"{p.parent.name}/{p.name}" for p in FILES])
def test_config_loads(path):
    cfg = load_config(path)
    get_pipeline(cfg.pipeline)
    if cfg.pipeline == "zhu2019":
        _, hybrid = split_kwargs(cfg)
        assert hybrid["fusion_weight"] == 0.6


@pytest.mark.parametrize("magnification", [40, 100, 200, 400])
def test_breakhis_configs_use_the_paper_schedule(magnification):
    cfg = load_config(CONFIGS / "zhu2019" / f"breakhis_{magnification}x.yaml")
    t = cfg.train
    assert cfg.data.magnification == magnification and cfg.data.split == "official"
    assert (t.optimizer, t.lr, t.momentum, t.weight_decay, t.batch_size, t.iterations) == (
        "sgd",
        4e-4,
        0.9,
        0.009,
        10,
        40000,
    )
    assert (t.schedule.name, t.schedule.step_size, cfg.preprocess.augment.copies) == ("step", 10000, 8)
    assert cfg.preprocess.stain.method == "reinhard" and tuple(cfg.preprocess.patches.grid) == (5, 3)


def test_bach_binary_task():
    cfg = load_config(CONFIGS / "zhu2019" / "bach_binary.yaml")
    assert (cfg.data.task, cfg.data.split, cfg.data.n_folds, cfg.data.microns_per_pixel) == (
        "binary",
        "contiguous",
        5,
        0.84,
    )
    assert cfg.data.classes == ["non-carcinoma", "carcinoma"]
