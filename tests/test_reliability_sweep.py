"""Issue 21's sweep: every user-file reader fuzzed, every CLI number option given bad values, full disks.

The rule everywhere: a bad input is a ``HistobreastError`` (one line, exit 1), never another
exception. Hypothesis runs a bounded number of cases per target (``CASES``), no deadline.
"""

from __future__ import annotations

import codecs
import inspect
import json
import os
import re
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image
from typer.main import get_command
from typer.testing import CliRunner

from histobreast.cli import app
from histobreast.data.bach import read_ground_truth
from histobreast.data.breakhis import read_breakhis_folds
from histobreast.data.folder import read_patients_csv
from histobreast.data.imageio import image_size, read_rgb
from histobreast.data.records import read_records_csv
from histobreast.data.splits import read_splits_csv
from histobreast.errors import HistobreastError
from histobreast.pipelines.config import load_config
from histobreast.pipelines.package import read_model_info
from histobreast.predictions import Predictions

# Generated cases per fuzz target; benchmarks/bench_fuzz.py runs more (BENCHMARKS.md section "fuzz").
CASES = int(os.environ.get("HISTOBREAST_FUZZ_CASES", "40"))
FUZZ = settings(max_examples=CASES, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

ENCODINGS = ("utf-8", "utf-8-sig", "utf-16", "utf-16-be", "cp1252", "latin-1")


def _encode(text: str, encoding: str, crlf: bool) -> bytes:
    text = text.replace("\n", "\r\n") if crlf else text
    if encoding == "utf-16-be":
        return codecs.BOM_UTF16_BE + text.encode("utf-16-be")
    return text.encode(encoding, errors="replace")


def _only_user_errors(read, path: Path) -> None:
    try:
        read(path)
    except HistobreastError:
        pass


text_lines = st.lists(
    st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=30), min_size=0, max_size=6
)

GOOD = {
    "Folds.csv": "fold,mag,grp,filename\n1,40,train,BreaKHis_v1/x/SOB_B_A-14-22549AB-40-001.png\n",
    "dsfold1.txt": "SOB_B_A-14-22549AB-40-001.png|40|1|train\n",
    "microscopy_ground_truth.csv": "b001.tif,Benign\nn001.tif,Normal\n",
    "patients.csv": "image,patient,label\na/x.png,p1,a\n",
    "splits.csv": "split,image_id,patient_id,subset\nfold1,x,p1,train\n",
    "records.csv": "path,label,patient_id,microns_per_pixel,source\nx.png,a,p1,0.5,folder\n",
    "predictions.csv": "image_id,path,patient_id,magnification,label,predicted,p_a,p_b\nx,,p1,,a,a,0.7,0.3\n",
}
READERS = {
    "Folds.csv": read_breakhis_folds,
    "dsfold1.txt": read_breakhis_folds,
    "microscopy_ground_truth.csv": read_ground_truth,
    "patients.csv": read_patients_csv,
    "splits.csv": read_splits_csv,
    "records.csv": read_records_csv,
    "predictions.csv": Predictions.from_csv,
}


@pytest.mark.parametrize("name", sorted(READERS))
@pytest.mark.parametrize("encoding", ENCODINGS)
def test_every_reader_accepts_the_encodings_spreadsheets_write(tmp_path, name, encoding):
    path = tmp_path / name
    path.write_bytes(_encode(GOOD[name], encoding, crlf=encoding != "utf-8"))
    assert READERS[name](path)  # read, not refused: the same content as UTF-8


@pytest.mark.parametrize("name", sorted(READERS))
@FUZZ
@given(lines=text_lines, encoding=st.sampled_from(ENCODINGS), crlf=st.booleans(), keep=st.integers(0, 3))
def test_fuzz_user_text_files(tmp_path, name, lines, encoding, crlf, keep):
    good = GOOD[name].splitlines()[:keep]
    path = tmp_path / name
    path.write_bytes(_encode("\n".join(good + lines) + "\n", encoding, crlf))
    _only_user_errors(READERS[name], path)


@FUZZ
@given(data=st.binary(max_size=200), cut=st.integers(0, 400))
def test_fuzz_config_and_model_json(tmp_path, data, cut):
    config = tmp_path / "c.yaml"
    config.write_bytes(b"name: x\nmodel: {name: resnet18}\n"[:cut] + data)
    _only_user_errors(load_config, config)
    model = tmp_path / "model"
    model.mkdir(exist_ok=True)
    good = json.dumps({"format": "histobreast-model", "version": 1, "pipeline": "image"}).encode()
    (model / "model.json").write_bytes(good[:cut] + data)
    _only_user_errors(read_model_info, model)


MODES = ("1", "L", "P", "RGB", "RGBA", "CMYK", "YCbCr", "LA", "PA", "I", "I;16", "F", "La", "RGBa", "HSV", "LAB")


@FUZZ
@given(
    mode=st.sampled_from(MODES),
    size=st.tuples(st.integers(1, 40), st.integers(1, 40)),
    suffix=st.sampled_from([".png", ".tif", ".jpg", ".bmp"]),
    cut=st.one_of(st.none(), st.integers(0, 300)),
)
def test_fuzz_images_of_every_mode_depth_and_truncation(tmp_path, mode, size, suffix, cut):
    path = tmp_path / f"x{suffix}"
    try:
        image = Image.new(mode, size)
        image.save(path)
    except (OSError, ValueError, KeyError, TypeError):
        return  # Pillow cannot write this mode in this format: nothing for a user to give us
    if cut is not None:
        path.write_bytes(path.read_bytes()[:cut])
    try:
        rgb = read_rgb(path)
        assert rgb.dtype == np.uint8 and rgb.shape == (size[1], size[0], 3)
        assert image_size(path) == size
    except HistobreastError:
        assert cut is not None or mode in ("HSV", "LAB", "La", "RGBa")  # only damaged files are refused


def _is_number(command, param) -> bool:
    """Whether ``param`` of a typer command is an int or float (typer keeps the type in the annotation)."""
    func = getattr(command.callback, "__wrapped__", command.callback)
    hint = inspect.signature(func).parameters[param.name].annotation
    return re.search(r"\b(int|float)\b", hint if isinstance(hint, str) else repr(hint)) is not None


def _number_options():
    """(command path, option name, the click command) for every int/float option of the CLI."""
    found = []

    def walk(command, path):
        if hasattr(command, "commands"):
            for name, sub in command.commands.items():
                walk(sub, [*path, name])
            return
        for param in command.params:
            if param.param_type_name == "option" and _is_number(command, param):
                found.append(pytest.param(tuple(path), param.opts[0], command, id=f"{'-'.join(path)}{param.opts[0]}"))

    walk(get_command(app), [])
    return found


NUMBER_OPTIONS = _number_options()


def test_the_walk_finds_the_number_options():
    names = {(p.values[0], p.values[1]) for p in NUMBER_OPTIONS}
    assert (("predict",), "--batch-size") in names and (("predict",), "--mpp") in names


def _required_args(command, tested, blocker):
    """The command's other required arguments and options, each given ``blocker`` (or 1 for a number);
    an optional ``--out`` gets ``blocker`` too, so a value that is fine (demo --seed 0) runs nothing."""
    args = []
    for param in command.params:
        if param.param_type_name == "option" and param.opts[0] == tested:
            continue
        if not param.required and not (param.param_type_name == "option" and param.opts[0] == "--out"):
            continue
        number = _is_number(command, param)
        value = "1" if number else str(blocker)
        args += [value] if param.param_type_name == "argument" else [param.opts[0], value]
    return args


NEVER_A_NUMBER = ("nan", "inf", "")  # no number option means anything by these
BAD_VALUES = ("0", "-1", "nan", "inf", "", "1e308", "99999999999999999999")


def command_option(command, name):
    return next(p for p in command.params if name in p.opts)


def _walk_cases():
    """Every number option x every value of :data:`BAD_VALUES` (371 cases, ~90 s on the shared 2 cores).

    The default suite keeps one per option, the values taken in turn (53 cases, ~15 s), so that
    every option and every value is tried; ``-m slow`` adds the rest.
    """
    cases = []
    for i, option in enumerate(NUMBER_OPTIONS):
        path, name, command = option.values
        for value in BAD_VALUES:
            marks = () if value == BAD_VALUES[i % len(BAD_VALUES)] else (pytest.mark.slow,)
            cases.append(pytest.param(path, name, command, value, marks=marks, id=f"{value}-{option.id}"))
    return cases


@pytest.mark.parametrize("path, option, command, value", _walk_cases())
def test_every_number_option_fails_in_one_line(tmp_path, path, option, command, value):
    (tmp_path / "file").write_text("a file, so nothing can be written below it")
    blocker = tmp_path / "file" / "absent"
    args = [*path, option, value, *_required_args(command, option, blocker)]
    result = CliRunner().invoke(app, args)
    err = result.exception
    assert result.exit_code in (1, 2), (args, result.output)  # 2: a usage error, printed as one line
    if result.exit_code == 1 and not isinstance(err, SystemExit):  # SystemExit: the command printed why
        assert isinstance(err, HistobreastError) or (isinstance(err, OSError) and err.filename), (args, repr(err))
    if value in NEVER_A_NUMBER:  # refused as the option's value, not as a later failure of the blocker
        said = result.output + (str(err) if isinstance(err, HistobreastError) else "")
        assert any(name in said for name in command_option(command, option).opts), (args, said)


def test_a_full_disk_is_one_line_and_leaves_nothing_half_written(tiny_disk):
    (tiny_disk / "filler").write_bytes(b"\0" * (1024 * 1024 - 64 * 1024))
    out = tiny_disk / "synth"
    result = CliRunner().invoke(app, ["data", "synth", str(out), "--kind", "bach"])
    err = result.exception
    assert result.exit_code == 1 and isinstance(err, OSError) and err.filename, repr(err)
    assert "synth" in err.filename and ".tmp" not in err.filename
    assert not list(tiny_disk.rglob(".*.tmp"))


def test_outputs_over_inputs_are_refused_for_every_writer(tmp_path):
    from histobreast.errors import ConfigError
    from histobreast.outputs import refuse_output_over_inputs

    folder = tmp_path / "in"
    (folder / "sub").mkdir(parents=True)
    (folder / "a.png").write_bytes(b"x")
    os.symlink(folder / "a.png", tmp_path / "link.png")
    for out, is_folder in [
        (folder / "a.png", False),
        (tmp_path / "link.png", False),  # a symlink to the input is the input
        (folder / "sub", True),
        (folder, True),
        (tmp_path, True),
    ]:
        with pytest.raises(ConfigError):
            refuse_output_over_inputs(out, [folder / "a.png", folder], "--out", folder=is_folder)
    refuse_output_over_inputs(tmp_path / "elsewhere", [folder], "--out", folder=True)  # fine
