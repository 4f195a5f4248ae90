"""The command line agrees with itself: every command's options, walked from the typer app, give one
name to each shared meaning (--data, --mpp, --out, ...); commands that read a dataset take --data;
``krem`` takes an image's scale from the dataset tree it lies in."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest
import typer
from PIL import Image
from typer.testing import CliRunner

from histobreast.cli import app
from histobreast.data.readers import dataset_record
from histobreast.data.records import write_scale_file
from histobreast.data.synthetic import synth_bach, synth_breakhis
from histobreast.errors import ConfigError, DatasetError
from test_preprocess_images import he_like_image

# Each shared meaning: its one option name, and the parameter names that carry it in the commands.
SHARED: dict[str, set[str]] = {
    "--data": {"data"},
    "--mpp": {"mpp", "microns_per_pixel"},
    "--out": {"out", "output"},
    "--config": {"config"},
    "--set": {"overrides"},
    "--fold": {"fold"},
    "--resume": {"resume"},
    "--device": {"device"},
    "--batch-size": {"batch_size"},
    "--seed": {"seed"},
    "--tta": {"tta"},
}
# Commands that read a dataset (through an experiment config, a model's test images or an image's tree).
READS_A_DATASET = {
    "train",
    "evaluate",
    "ablate",
    "krem",
    "prune run",
    "prune report",
    "ensemble train",
    "ensemble evaluate",
    "baseline spanhol",
    "pretrain run",
    "pretrain probe",
}
# Commands that work at a physical scale given by the user.
NEEDS_A_SCALE = {"krem", "predict", "data inspect", "data split"}


def _commands(command: Any, path: tuple[str, ...] = ()) -> dict[str, Any]:
    group = getattr(command, "commands", None)
    if group is None:
        return {" ".join(path): command}
    return {name: cmd for sub, child in group.items() for name, cmd in _commands(child, (*path, sub)).items()}


COMMANDS = _commands(typer.main.get_command(app))


def _options(command: Any) -> list[Any]:
    """The command's options (not its arguments); typer's click types are its own, so none is named here."""
    return [p for p in command.params if p.param_type_name == "option"]


def _first_long(option: Any) -> str:
    return next(o for o in option.opts if o.startswith("--"))


def test_the_walk_finds_every_command() -> None:
    assert len(COMMANDS) > 15 and {"krem", "predict", "prune report", "stain fit", "data split"} <= set(COMMANDS)
    assert sum(len(_options(command)) for command in COMMANDS.values()) > 100


def test_each_shared_meaning_has_one_option_name() -> None:
    wrong = [
        f"{name}: {option.name} is {_first_long(option)}, not {canonical}"
        for name, command in COMMANDS.items()
        for option in _options(command)
        for canonical, carriers in SHARED.items()
        if option.name in carriers and _first_long(option) != canonical
    ]
    misused = [
        f"{name}: {canonical} names {option.name}"
        for name, command in COMMANDS.items()
        for option in _options(command)
        for canonical, carriers in SHARED.items()
        if canonical in option.opts and option.name not in carriers
    ]
    assert not wrong and not misused, wrong + misused


def test_a_parameter_is_spelled_the_same_everywhere() -> None:
    spellings: dict[str, set[str]] = defaultdict(set)
    for command in COMMANDS.values():
        for option in _options(command):
            spellings[option.name].add(_first_long(option))
    assert {name: names for name, names in spellings.items() if len(names) > 1} == {}


def test_commands_that_read_a_dataset_take_data_and_those_needing_a_scale_take_mpp() -> None:
    names = {name: {o for opt in _options(cmd) for o in opt.opts} for name, cmd in COMMANDS.items()}
    with_config = {name for name, opts in names.items() if "--config" in opts}
    assert with_config <= READS_A_DATASET  # an experiment config names a dataset
    assert sorted(name for name in READS_A_DATASET if "--data" not in names[name]) == []
    assert sorted(name for name in NEEDS_A_SCALE if "--mpp" not in names[name]) == []
    assert "--microns-per-pixel" in {o for opt in _options(COMMANDS["predict"]) for o in opt.opts}  # the old name


runner = CliRunner()


@pytest.fixture(scope="module")
def bach_tree(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("bach")
    synth_bach(root, per_class=1, size=(256, 192), image_format="png")
    return root


def test_krem_takes_the_scale_of_the_tree_the_image_is_in(tmp_path, bach_tree) -> None:
    record, root = dataset_record(next(bach_tree.rglob("b001.png")))
    assert record.source == "bach" and root.name == "Photos" and record.microns_per_pixel > 0.42
    result = runner.invoke(app, ["krem", str(record.path), "--out", str(tmp_path / "o.png")])
    assert result.exit_code == 0, result.output
    assert f"scale: {record.microns_per_pixel:g} µm/px, from the bach reader of {root}" in result.output
    assert f"nuclei at {record.microns_per_pixel} µm/px" in result.output
    result = runner.invoke(app, ["krem", str(record.path), "--mpp", "0.5", "--data", str(bach_tree), "-o", "x.png"])
    assert isinstance(result.exception, ConfigError) and "not both" in str(result.exception)


def test_krem_scale_from_data_or_an_error_naming_mpp(tmp_path) -> None:
    folder = tmp_path / "mine" / "tumour"
    folder.mkdir(parents=True)
    image = folder / "a.png"
    Image.fromarray(he_like_image(128, 160, nuclei=30)).save(image)
    result = runner.invoke(app, ["krem", str(image), "--out", str(tmp_path / "o.png")])
    assert isinstance(result.exception, DatasetError) and "--mpp" in str(result.exception)
    assert not (tmp_path / "o.png").exists()
    write_scale_file(tmp_path / "mine", 0.5)  # now a folder dataset with a known scale
    result = runner.invoke(
        app, ["krem", str(image), "--data", str(tmp_path / "mine"), "--out", str(tmp_path / "o.png")]
    )
    assert result.exit_code == 0, result.output
    assert "0.5 µm/px, from the folder reader" in result.output
    (tmp_path / "other" / "tumour").mkdir(parents=True)
    Image.fromarray(he_like_image(64, 64, nuclei=5)).save(tmp_path / "other" / "tumour" / "b.png")
    write_scale_file(tmp_path / "other", 0.5)
    with pytest.raises(DatasetError, match="not an image of the dataset"):
        dataset_record(image, tmp_path / "other")


def test_breakhis_images_get_their_magnifications_scale(tmp_path) -> None:
    records = synth_breakhis(
        tmp_path, patients_per_subtype=1, images_per_magnification=1, magnifications=(100, 400), size=(70, 46)
    )
    for expected in records[:2]:
        record, root = dataset_record(expected.path)
        assert root.name == "BreaKHis_v1" and record.microns_per_pixel == expected.microns_per_pixel


def test_prune_report_data_needs_a_config(tmp_path) -> None:
    result = runner.invoke(app, ["prune", "report", "--measure-only", "--out", str(tmp_path), "--data", str(tmp_path)])
    assert isinstance(result.exception, ConfigError) and "--data needs --config" in str(result.exception)
