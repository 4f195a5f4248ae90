"""Configs: typed loading, errors that name file and key, extends, overrides, round trip, typed sections."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import yaml

from histobreast.config import (
    apply_overrides,
    build_dataclass,
    config_to_dict,
    read_json,
    rebuild_dataclass,
    save_config,
    to_jsonable,
)
from histobreast.errors import CheckpointError, ConfigError
from histobreast.pipelines.config import EnsembleOptions, ExperimentConfig, ModelConfig, PruneOptions, load_config
from histobreast.preprocess.krem import KremParams


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


BASE = """\
seed: 7
data: {kind: breakhis, root: data/breakhis, magnification: 40, fold: 2}
model: {name: hybrid_sep, kwargs: {fusion_weight: 0.6, patch_rule: mean}}
train:
  optimizer: sgd
  lr: 4.0e-4
  momentum: 0.9
  weight_decay: 0.009
  batch_size: 10
  iterations: 40000
  schedule: {name: step, unit: iteration, step_size: 10000, gamma: 0.1}
"""


def test_loads_typed_sections_with_defaults(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path / "zhu_breakhis.yaml", BASE))
    assert cfg.name == "zhu_breakhis"  # defaults to the file name
    assert cfg.seed == 7
    assert cfg.data.magnification == 40 and cfg.data.fold == 2
    assert cfg.model.kwargs == {"fusion_weight": 0.6, "patch_rule": "mean"}
    assert cfg.train.lr == pytest.approx(4e-4) and isinstance(cfg.train.lr, float)
    assert cfg.train.iterations == 40000 and cfg.train.epochs is None
    assert cfg.train.schedule.step_size == 10000
    assert cfg.train.aux_weight == 0.3 and cfg.train.amp == "auto"
    assert cfg.preprocess.patches.grid == (5, 3)


def test_integer_given_for_float_is_accepted_but_bool_is_not_an_int(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path / "a.yaml", BASE), ["train.lr=1"])
    assert cfg.train.lr == 1.0 and isinstance(cfg.train.lr, float)
    with pytest.raises(ConfigError, match=r"train\.batch_size: expected an integer, got bool True"):
        load_config(tmp_path / "a.yaml", ["train.batch_size=true"])


def test_unknown_key_is_named_with_file_and_suggestion(tmp_path: Path) -> None:
    path = write(tmp_path / "bad.yaml", BASE + "  learning_rate: 0.1\n")
    with pytest.raises(ConfigError) as err:
        load_config(path)
    message = str(err.value)
    assert str(path) in message
    assert "train.learning_rate" in message
    unknown_top = write(tmp_path / "bad2.yaml", BASE + "trian: {}\n")
    with pytest.raises(ConfigError, match=r"unknown key\(s\) trian \(did you mean train\?\)"):
        load_config(unknown_top)


@pytest.mark.parametrize(
    ("override", "pattern"),
    [
        ("train.lr=fast", r"train\.lr: expected a number, got str 'fast'"),
        ("train.optimizer=adam", r"train\.optimizer: must be one of 'sgd', 'adamw', got str 'adam'"),
        ("data.magnification=50", r"data\.magnification: must be 40, 100, 200 or 400, got 50"),
        ("train.lr=-0.1", r"train\.lr: must be a positive number"),
        ("train.betas=[0.9]", r"train\.betas: expected a list of 2 values"),
        ("train.schedule.gamma=2", r"train\.schedule\.gamma: must be in \(0, 1\]"),
        ("train.grad_accum=3", r"train\.grad_accum: must divide batch_size=10"),
        ("train.epochs=3", r"train\.epochs: set exactly one of train\.epochs and train\.iterations"),
        ("model.kwargs=[1]", r"model\.kwargs: expected a mapping"),
        ("train.amp=maybe", r"train\.amp: expected true/false or one of 'auto'"),
        ("train.device=gpu", r"train\.device: must be auto, cpu, cuda or cuda:N"),
    ],
)
def test_wrong_values_name_the_dotted_key(tmp_path: Path, override: str, pattern: str) -> None:
    path = write(tmp_path / "exp.yaml", BASE)
    with pytest.raises(ConfigError, match=pattern) as err:
        load_config(path, [override, "seed=3"])
    assert str(err.value).startswith(str(path))
    assert str(err.value).endswith(f"(from the override {override!r}, not the file)")  # not seed=3


def test_an_error_in_the_file_does_not_blame_the_overrides(tmp_path: Path) -> None:
    path = write(tmp_path / "exp.yaml", BASE + "trian: {}\n")
    with pytest.raises(ConfigError, match=r"unknown key\(s\) trian") as err:
        load_config(path, ["train.lr=0.1"])
    assert "override" not in str(err.value)
    with pytest.raises(
        ConfigError,
        match=r"unknown key\(s\) train\.epoch \(did you mean train\.epochs\?\).*"
        r"\(from the override 'train\.epoch=3', not the file\)",
    ):
        load_config(write(tmp_path / "ok.yaml", BASE), ["train.epoch=3"])


def test_extends_deep_merges_and_child_wins(tmp_path: Path) -> None:
    write(tmp_path / "base.yaml", BASE)
    (tmp_path / "exp").mkdir()
    child = write(
        tmp_path / "exp" / "child.yaml",
        "extends: ../base.yaml\nname: child\ndata: {magnification: 400}\nmodel: {kwargs: {patch_rule: max}}\n"
        "train: {lr: 0.001}\n",
    )
    cfg = load_config(child)
    assert cfg.name == "child"
    assert cfg.data.magnification == 400 and cfg.data.fold == 2 and cfg.data.kind == "breakhis"
    assert cfg.model.kwargs == {"fusion_weight": 0.6, "patch_rule": "max"}  # mappings merge deeply
    assert cfg.train.lr == 0.001 and cfg.train.weight_decay == 0.009 and cfg.train.iterations == 40000


def test_extends_list_replaces_lists_and_later_parent_wins(tmp_path: Path) -> None:
    write(tmp_path / "a.yaml", "seed: 1\ndata: {classes: [x, y, z]}\n")
    write(tmp_path / "b.yaml", "seed: 2\n")
    child = write(tmp_path / "c.yaml", "extends: [a.yaml, b.yaml]\ndata: {classes: [p, q]}\n")
    cfg = load_config(child)
    assert cfg.seed == 2
    assert cfg.data.classes == ["p", "q"]


def test_extends_cycle_and_missing_parent_are_errors(tmp_path: Path) -> None:
    write(tmp_path / "a.yaml", "extends: b.yaml\n")
    write(tmp_path / "b.yaml", "extends: a.yaml\n")
    with pytest.raises(ConfigError, match="cycle"):
        load_config(tmp_path / "a.yaml")
    write(tmp_path / "c.yaml", "extends: nowhere.yaml\n")
    with pytest.raises(ConfigError, match=r"nowhere\.yaml: config file not found \(extended from"):
        load_config(tmp_path / "c.yaml")


def test_overrides_parse_yaml_values_and_create_free_form_keys(tmp_path: Path) -> None:
    path = write(tmp_path / "exp.yaml", BASE)
    cfg = load_config(
        path,
        [
            "train.lr=0.01",
            "train.amp=false",
            "model.kwargs.width=0.5",
            "data.classes=[benign, malignant]",
            "train.grad_clip=null",
        ],
    )
    assert cfg.train.lr == 0.01
    assert cfg.train.amp is False
    assert cfg.model.kwargs["width"] == 0.5
    assert cfg.data.classes == ["benign", "malignant"]
    assert cfg.train.grad_clip is None
    with pytest.raises(ConfigError, match="expected dotted.key=value"):
        apply_overrides({}, ["train.lr"])
    with pytest.raises(ConfigError, match=r"train\.lr is a value, not a section"):
        apply_overrides({"train": {"lr": 1}}, ["train.lr.x=1"])


def test_saved_config_reloads_identically(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path / "exp.yaml", BASE), ["train.betas=[0.8, 0.99]"])
    saved = save_config(cfg, tmp_path / "run" / "config.yaml")
    again = load_config(saved)
    assert again == cfg
    assert yaml.safe_load(saved.read_text())["train"]["betas"] == [0.8, 0.99]


def test_file_level_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "absent.yaml")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(write(tmp_path / "broken.yaml", "train: [1, 2\n"))
    with pytest.raises(ConfigError, match="top level must be a mapping"):
        load_config(write(tmp_path / "list.yaml", "- 1\n- 2\n"))
    with pytest.raises(ConfigError, match=r"model\.name: is required"):
        load_config(write(tmp_path / "noname.yaml", "model: {}\n"))


def test_build_dataclass_validates_other_modules_option_sets() -> None:
    @dataclass(frozen=True)
    class Params:
        windows: tuple[int, ...] = (897, 400, 224)
        min_area: float = 80.0
        name: str | None = None

    params = build_dataclass(
        Params, {"windows": [500, 200], "min_area": 50}, source="exp.yaml", prefix="preprocess.regions.krem"
    )
    assert params == Params(windows=(500, 200), min_area=50.0)
    with pytest.raises(
        ConfigError,
        match=r"exp\.yaml: unknown key\(s\) preprocess\.regions\.krem\.min_aera "
        r"\(did you mean preprocess\.regions\.krem\.min_area\?\)",
    ):
        build_dataclass(Params, {"min_aera": 1}, source="exp.yaml", prefix="preprocess.regions.krem")
    with pytest.raises(ConfigError, match=r"krem\.windows\[1\]: expected an integer, got str 'x'"):
        build_dataclass(Params, {"windows": [1, "x"]}, source="exp.yaml", prefix="krem")


def test_default_sections_are_valid_and_round_trip() -> None:
    cfg = ExperimentConfig(name="defaults", model=ModelConfig(name="tiny"))
    assert build_dataclass(ExperimentConfig, config_to_dict(cfg)) == cfg


CONFIGS = Path(__file__).resolve().parents[1] / "configs"
PRUNE_CPU = CONFIGS / "zhu2019" / "prune_bach_binary_cpu.yaml"
PRETRAINED_CPU = CONFIGS / "liu2022" / "bach4_pretrained_cpu.yaml"


@pytest.mark.parametrize(
    ("path", "override", "named"),
    [
        (PRUNE_CPU, "prune.ratoi=0.5", r"prune\.ratoi \(did you mean prune\.ratio\?\)"),
        (PRUNE_CPU, "ensemble.membrs=5", r"ensemble\.membrs \(did you mean ensemble\.members\?\)"),
        (PRUNE_CPU, "spanhol.overlapp=0.5", r"spanhol\.overlapp \(did you mean spanhol\.overlap\?\)"),
        (PRUNE_CPU, "model.kwargs.widht=3", r"model\.kwargs\.widht \(did you mean model\.kwargs\.widths\?\)"),
        (PRUNE_CPU, "model.kwargs.bogus=1", r"model\.kwargs\.bogus;"),
        (PRETRAINED_CPU, "model.encoder_pretraining.itrations=5", r"model\.encoder_pretraining\.itrations \(did you"),
        (
            PRETRAINED_CPU,
            "model.kwargs.encodr=resnet18",
            r"model\.kwargs\.encodr \(did you mean model\.kwargs\.encoder",
        ),
        (PRETRAINED_CPU, "preprocess.regions.krem.min_aera=1", r"preprocess\.regions\.krem\.min_aera \(did you"),
    ],
)
def test_a_misspelt_key_in_any_section_fails_at_load_naming_file_and_key(path, override, named) -> None:
    with pytest.raises(ConfigError, match=named) as caught:
        load_config(path, [override])
    message = str(caught.value)
    assert message.startswith(str(path)) and "\n" not in message
    assert f"(from the override {override!r}, not the file)" in message


def test_model_kwargs_are_checked_against_the_registered_constructor() -> None:
    cfg = load_config(PRUNE_CPU, ["model.kwargs.dropout=0.1", "model.kwargs.min_spread=0.05"])  # branch + hybrid keys
    assert cfg.model.kwargs["dropout"] == 0.1
    with pytest.raises(ConfigError, match=r"model\.kwargs\.fusion_weight"):  # a zhu2019 key, not a plain model's
        load_config(CONFIGS / "baselines" / "resnet18_bach4_cpu.yaml", ["model.kwargs.fusion_weight=0.5"])


def test_values_the_network_would_die_on_fail_at_load() -> None:
    assert load_config(PRUNE_CPU, ["preprocess.patches.size=31"]).preprocess.patches.size == 31
    with pytest.raises(
        ConfigError, match=r"preprocess\.patches\.size: must be >= 31 px for GoogLeNet's pooling, got 16"
    ):
        load_config(PRUNE_CPU, ["preprocess.patches.size=16"])
    with pytest.raises(ConfigError, match=r"preprocess\.input_size: must be >= 31 px"):
        load_config(PRUNE_CPU, ["preprocess.input_size=30"])
    with pytest.raises(ConfigError, match=r"preprocess\.regions\.krem: KremParams: threshold must be"):
        load_config(PRETRAINED_CPU, ["preprocess.regions.krem.threshold=otsu"])


def test_typed_optional_sections_and_krem_crops_follow_the_input_size() -> None:
    cfg = load_config(PRETRAINED_CPU, ["preprocess.input_size=64"])
    assert isinstance(cfg.preprocess.regions.krem, KremParams) and cfg.preprocess.regions.krem.output_size == 64
    assert isinstance(cfg.prune, PruneOptions) and isinstance(cfg.ensemble, EnsembleOptions)
    assert load_config(PRUNE_CPU).prune.retrain_iterations == 150
    with pytest.raises(ConfigError, match=r"output_size=32 differs from preprocess.input_size=64"):
        load_config(PRETRAINED_CPU, ["preprocess.input_size=64", "preprocess.regions.krem.output_size=32"])


def test_a_run_folder_config_written_before_the_typed_sections_still_loads(tmp_path: Path) -> None:
    """Saved config.yaml files had free mappings for prune/ensemble/spanhol and regions.krem; same keys now."""
    cfg = load_config(PRETRAINED_CPU, ["preprocess.regions.krem.top_k_max_iou=0.5"])
    old = config_to_dict(cfg)
    old.update(prune={}, ensemble={"members": 5}, spanhol={})
    old["preprocess"]["regions"]["krem"] = {"top_k_max_iou": 0.5}
    saved = write(tmp_path / "config.yaml", yaml.safe_dump(old, sort_keys=False))
    assert load_config(saved) == cfg


def test_a_self_referencing_yaml_anchor_is_one_line_error(tmp_path: Path) -> None:
    for text, key in (
        ("data: &d {root: *d}\n", "data.root"),
        ("model: {name: x, kwargs: &k [1, *k]}\n", r"model\.kwargs\[1\]"),
    ):
        with pytest.raises(ConfigError, match=rf"loop\.yaml: {key}: a YAML anchor refers to itself"):
            load_config(write(tmp_path / "loop.yaml", text))


def test_rebuild_dataclass_applies_changes_and_validates() -> None:
    options = rebuild_dataclass(EnsembleOptions(), {"members": 3}, source="exp.yaml", prefix="ensemble")
    assert options == EnsembleOptions(members=3)
    with pytest.raises(ConfigError, match=r"exp\.yaml: ensemble\.members: an ensemble needs at least 2"):
        rebuild_dataclass(options, {"members": 1}, source="exp.yaml", prefix="ensemble")


def test_read_json_is_one_policy_for_every_file(tmp_path: Path) -> None:
    path = tmp_path / "thing.json"
    with pytest.raises(ConfigError, match=r"thing\.json: model file not found"):
        read_json(path, "model")
    path.write_text("{not json")
    with pytest.raises(CheckpointError, match=r"thing\.json: not a readable model JSON"):
        read_json(path, "model", error=CheckpointError)
    path.write_text("[1, 2]")
    with pytest.raises(ConfigError, match=r"thing\.json: a model file must hold a JSON object, got list"):
        read_json(path, "model")
    path.write_text(json.dumps({"format": "other", "version": 1}))
    with pytest.raises(ConfigError, match=r'not a histobreast model \(expected "format": "histobreast-model"'):
        read_json(path, "model", format="histobreast-model")
    for version in (None, 0, 1):  # older files, and files from before versions, are read
        path.write_text(
            json.dumps({"format": "histobreast-model", **({} if version is None else {"version": version})})
        )
        assert read_json(path, "model", format="histobreast-model", version=1)["format"] == "histobreast-model"
    path.write_text(json.dumps({"format": "histobreast-model", "version": 2}))
    with pytest.raises(ConfigError, match=r"model version 2 is newer than this histobreast reads \(1\)"):
        read_json(path, "model", format="histobreast-model", version=1)
    path.write_text(json.dumps({"version": "2"}))
    with pytest.raises(ConfigError, match=r"'version' must be an integer, got '2'"):
        read_json(path, "model", version=1)


def test_to_jsonable_writes_configs_dataclasses_numpy_and_paths_as_plain_data() -> None:
    @dataclass
    class Section:
        size: tuple[int, int] = (5, 3)
        where: Path = Path("runs/x")
        score: float = math.inf

    assert to_jsonable({"s": Section(), 1: np.arange(2), "n": np.float32(0.5)}) == {
        "s": {"size": [5, 3], "where": "runs/x", "score": None},
        "1": [0, 1],
        "n": 0.5,
    }
