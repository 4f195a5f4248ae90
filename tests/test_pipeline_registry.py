"""Pipelines as typed objects registered by name; callers ask them, never test their names."""

from __future__ import annotations

import dataclasses

import pytest

from histobreast.errors import ConfigError
from histobreast.pipelines import Pipeline, get_pipeline, pipeline_names, register_pipeline
from histobreast.pipelines.config import load_config
from histobreast.pipelines.registry import BUILT_IN, exclusive_networks


def test_every_built_in_pipeline_is_registered_under_its_name():
    for name in BUILT_IN:
        pipeline = get_pipeline(name)
        assert isinstance(pipeline, Pipeline) and pipeline.name == name and pipeline.methods
        assert callable(pipeline.train_fold) and callable(pipeline.predict_records)
    assert pipeline_names()[: len(BUILT_IN)] == list(BUILT_IN)
    assert exclusive_networks() == {"hybrid_googlenet_sep": "zhu2019", "msmv_pfenet": "liu2022"}
    assert get_pipeline("liu2022").physical_scale and not get_pipeline("zhu2019").physical_scale


def test_an_unknown_pipeline_is_one_line():
    with pytest.raises(ConfigError, match=r"^pipeline: unknown pipeline 'zhu2020'; expected one of zhu2019, ") as err:
        get_pipeline("zhu2020")
    assert "\n" not in str(err.value)


def test_a_config_naming_an_unknown_pipeline_fails_at_load(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("pipeline: zhu2020\nmodel: {name: resnet18}\ntrain: {epochs: 1}\n")
    with pytest.raises(ConfigError, match=r"pipeline: must be one of zhu2019, liu2022, spanhol2016, image") as err:
        load_config(path)
    assert str(path) in str(err.value) and "\n" not in str(err.value)


def test_a_second_pipeline_of_a_name_is_refused():
    with pytest.raises(ValueError, match="already registered"):
        register_pipeline(dataclasses.replace(get_pipeline("image"), summary="another"))
