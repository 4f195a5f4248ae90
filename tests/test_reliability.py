"""Issue 21: each way an adversarial user lost data, got a silently wrong result or a traceback.

One tiny System A model (synthetic BACH, 32 px, one iteration) is trained once for the module;
every test then attacks one command or reader and checks it refuses in one line, exit 1, with
nothing the user gave changed and nothing half-written left behind.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import socket

import numpy as np
import pytest
import yaml
from PIL import Image
from typer.testing import CliRunner

from histobreast.cli import app
from histobreast.config import config_to_dict
from histobreast.data.breakhis import read_breakhis_folds
from histobreast.data.imageio import image_size, list_images, read_rgb
from histobreast.data.inspect import inspect_dataset
from histobreast.data.records import write_scale_file
from histobreast.data.synthetic import synth_bach, synth_breakhis
from histobreast.errors import CheckpointError, ConfigError, DatasetError, HistobreastError, ImageReadError
from histobreast.locking import LOCK_FILE, FolderLockedError, folder_lock
from histobreast.pipelines.config import load_config
from histobreast.pipelines.evaluation import evaluate_model_folder
from histobreast.pipelines.experiment import run_experiment
from histobreast.pipelines.package import load_model_folder
from histobreast.predictions import Predictions
from tiny_system_a import one_torch_thread, tiny_zhu_config  # noqa: F401 (autouse fixture)

runner = CliRunner()


def refused(args: list[str], *words: str) -> str:
    """Run the CLI; it must exit 1 with a user error (one line in the console) mentioning ``words``."""
    result = runner.invoke(app, [str(a) for a in args])
    err = result.exception
    assert result.exit_code == 1, result.output
    assert isinstance(err, HistobreastError) or (isinstance(err, OSError) and err.filename), repr(err)
    for word in words:
        assert word in str(err), str(err)
    return str(err)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """(tmp, data root, experiment folder, model folder) of one tiny trained System A fold."""
    tmp = tmp_path_factory.mktemp("reliability")
    root = tmp / "bach"
    synth_bach(root, per_class=12, size=(48, 32), image_format="png")
    out = tmp / "run"
    run_experiment(tiny_zhu_config(root), out, folds=[1])
    return tmp, root, out, out / "fold1" / "model"


def images_of(root):
    return sorted((root / "ICIAR2018_BACH_Challenge" / "Photos").rglob("*.png"))


# --- data loss ---------------------------------------------------------------------------------


def test_1_predict_out_onto_an_input_image_is_refused(run, tmp_path):
    _, root, _, model = run
    image = tmp_path / "a.png"
    shutil.copy(images_of(root)[0], image)
    before = image.read_bytes()
    refused(["predict", model, image, "--out", image], "--out", "is the input")
    assert image.read_bytes() == before


def test_2_krem_out_onto_its_image_is_refused(run, tmp_path):
    image = tmp_path / "a.png"
    shutil.copy(images_of(run[1])[0], image)
    before = image.read_bytes()
    refused(["krem", image, "--mpp", "0.84", "--out", image], "is the input")
    assert image.read_bytes() == before


def test_3_prune_out_onto_its_source_is_refused(run, tmp_path):
    model = tmp_path / "model"
    shutil.copytree(run[3], model)
    before = (model / "model.safetensors").read_bytes()
    refused(["prune", model, "--out", model, "--ratio", "0.5", "--iterations", "1"], "is the input")
    refused(["prune", model, "--out", tmp_path, "--ratio", "0.5", "--iterations", "1"], "holds the input")
    assert (model / "model.safetensors").read_bytes() == before


# --- silent wrong results ---------------------------------------------------------------------


def test_4_resume_after_the_split_changed_is_refused(run, tmp_path):
    _, root, out, _ = run
    copy = tmp_path / "run"
    shutil.copytree(out, copy)
    rows = list(csv.reader((copy / "splits.csv").open()))
    patient = next(r[2] for r in rows[1:] if r[0] == "fold1" and r[3] == "train")
    for row in rows[1:]:  # as if the data's protocol moved a patient's images from train to test
        if row[0] == "fold1" and row[2] == patient:
            row[3] = "test"
    with (copy / "splits.csv").open("w", newline="") as fh:
        csv.writer(fh).writerows(rows)
    before = (copy / "splits.csv").read_bytes()
    with pytest.raises(ConfigError, match="differs from the saved split"):
        run_experiment(tiny_zhu_config(root), copy, folds=[1], resume=True)
    assert (copy / "splits.csv").read_bytes() == before  # nothing rewritten


def test_5_a_locked_experiment_folder_is_refused_and_a_stale_lock_taken_over(run, tmp_path):
    root = run[1]
    out = tmp_path / "run"
    out.mkdir()
    holder = {"pid": os.getppid(), "host": socket.gethostname(), "started": "2026-01-01T00:00:00+00:00"}
    (out / LOCK_FILE).write_text(json.dumps(holder))
    with pytest.raises(FolderLockedError, match=f"pid {os.getppid()}"):
        run_experiment(tiny_zhu_config(root, train={"lr": 0.5}), out, folds=[1])
    assert sorted(p.name for p in out.iterdir()) == [LOCK_FILE]  # config.yaml/splits.csv not written
    dead = os.fork()
    if dead == 0:
        os._exit(0)
    os.waitpid(dead, 0)
    (out / LOCK_FILE).write_text(json.dumps({**holder, "pid": dead}))
    with folder_lock(out) as lock:
        assert json.loads(lock.read_text())["pid"] == os.getpid()
    assert not (out / LOCK_FILE).exists()


def test_6_every_fold_file_is_checked_against_the_tree(tmp_path):
    synth_breakhis(tmp_path, patients_per_subtype=1, images_per_magnification=1, magnifications=(40,), size=(48, 32))
    fold2 = next(tmp_path.rglob("dsfold2.txt"))
    lines = fold2.read_text().splitlines()
    fold2.write_text("\n".join(lines[1:]) + "\n")
    summary = inspect_dataset(tmp_path)
    assert any("not in fold2" in p.message for p in summary.problems)
    with pytest.raises(DatasetError, match="fold2"):
        from histobreast.data.breakhis import official_folds
        from histobreast.data.readers import read_dataset

        official_folds(read_dataset(tmp_path), tmp_path)


def test_7_a_one_class_dataset_is_refused(tmp_path):
    synth_bach(tmp_path, per_class=2, size=(32, 24), image_format="png", classes=("Benign",))
    assert any("only class" in p.message and p.severity == "error" for p in inspect_dataset(tmp_path).problems)
    with pytest.raises(DatasetError, match="at least two classes"):
        run_experiment(tiny_zhu_config(tmp_path), tmp_path / "run", folds=[1])
    assert not (tmp_path / "run").exists()


def test_8_degenerate_inputs_are_flagged_in_the_csv_and_the_review(run, tmp_path):
    tmp, root, _, model = run
    info = json.loads((model / "model.json").read_text())
    assert info["training_inputs"]["width_px"] == [48, 48]
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    shutil.copy(images_of(root)[0], inputs / "normal.png")
    Image.new("RGB", (1, 1), (200, 100, 150)).save(inputs / "dot.png")
    Image.new("RGB", (2000, 8), (200, 100, 150)).save(inputs / "strip.png")
    Image.new("RGB", (48, 32), (255, 255, 255)).save(inputs / "white.png")
    out = tmp_path / "p.csv"
    result = runner.invoke(
        app, ["predict", str(model), str(inputs), "--out", str(out), "--review", str(tmp_path / "r")]
    )
    assert result.exit_code == 0, result.output
    flags = {r["image_id"]: float(r["outside_training"]) for r in csv.DictReader(out.open())}
    assert flags == {"dot": 1.0, "strip": 1.0, "white": 1.0, "normal": 0.0}
    cases = json.loads((tmp_path / "r" / "metrics.json").read_text())["results"]["cases"]
    assert {c["image_id"] for c in cases if c["review"] == "yes"} >= {"dot", "strip", "white"}
    assert "tissue" in result.output and "px wide" in result.output


@pytest.mark.parametrize("value", ["0", "-1", "nan", "inf", "1e-300", "1e300"])
def test_9_20_predict_refuses_impossible_scales(run, value):
    _, root, _, model = run
    refused(["predict", model, images_of(root)[0], "--out", "x.csv", "--microns-per-pixel", value], "--mpp")


@pytest.mark.parametrize("value", ["0", "-3"])
def test_9_20_predict_refuses_batch_sizes_below_one(run, value):
    result = runner.invoke(
        app, ["predict", str(run[3]), str(images_of(run[1])[0]), "--out", "x.csv", "--batch-size", value]
    )
    assert result.exit_code == 2 and "--batch-size" in result.output  # a usage error, one line


def test_9_system_a_says_it_does_not_use_the_scale(run, tmp_path):
    _, root, _, model = run
    args = ["predict", str(model), str(images_of(root)[0]), "--out", str(tmp_path / "p.csv")]
    result = runner.invoke(app, [*args, "--microns-per-pixel", "0.84"])
    assert result.exit_code == 0 and "resizes whole images" in result.output


def test_10_19_tampered_predictions_are_refused(run, tmp_path):
    out = run[2]
    copy = tmp_path / "run"
    shutil.copytree(out, copy)
    target = copy / "fold1" / "predictions" / "hybrid.csv"
    original = target.read_text()
    rows = list(csv.DictReader(original.splitlines()))
    column = next(c for c in rows[0] if c.startswith("p_"))
    for bad in ("5.0", "-0.5", "nan"):
        target.write_text(original.replace(rows[0][column], bad, 1))
        with pytest.raises(DatasetError, match=r"in \[0, 1\]"):
            Predictions.from_csv(target)
        refused(["evaluate", copy, "--out", tmp_path / "e"], "hybrid.csv")
    lines = original.splitlines()
    target.write_text("\n".join([*lines, lines[1]]) + "\n")  # one image scored twice
    refused(["evaluate", copy, "--out", tmp_path / "e"], "listed twice")
    splits = list(csv.DictReader((copy / "splits.csv").open()))
    trained_on = next(r["image_id"] for r in splits if r["split"] == "fold1" and r["subset"] == "train")
    target.write_text(original.replace(rows[0]["image_id"] + ",", trained_on + ",", 1))
    refused(["evaluate", copy, "--out", tmp_path / "e"], trained_on, "not in fold 1's test set")


@pytest.mark.parametrize("name", ["../../../x", "/tmp/x", "..", "a/b"])
def test_11_a_run_name_cannot_leave_runs(tmp_path, name):
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump({"name": name, "model": {"name": "resnet18"}}))
    with pytest.raises(ConfigError, match="plain folder name"):
        load_config(config)


def test_12_review_inside_the_inputs_and_symlinked_folders(run, tmp_path):
    _, root, _, model = run
    inputs = tmp_path / "inputs"
    (inputs / "real").mkdir(parents=True)
    shutil.copy(images_of(root)[0], inputs / "real" / "a.png")
    refused(["predict", model, inputs, "--out", tmp_path / "p.csv", "--review", inputs / "review"], "--review")
    linked = tmp_path / "linked"
    linked.mkdir()
    (linked / "sub").symlink_to(inputs / "real", target_is_directory=True)
    (linked / "loop").symlink_to(linked, target_is_directory=True)  # a link back up is not followed round
    (linked / "b.png").symlink_to(inputs / "real" / "a.png")  # the same file twice is listed once
    assert [p.name for p in list_images(linked)] == ["b.png"]
    (linked / "b.png").unlink()
    assert [p.relative_to(linked).as_posix() for p in list_images(linked)] == ["sub/a.png"]
    review = tmp_path / "inputs2"
    shutil.copytree(inputs, review)
    (review / "old_review").mkdir()
    (review / "old_review" / "report.md").write_text("x")
    (review / "old_review" / "metrics.json").write_text("{}")
    with pytest.raises(DatasetError, match="histobreast report folder"):
        list_images(review)


def test_13_model_json_preprocess_is_the_source_of_truth(run, tmp_path):
    model = tmp_path / "model"
    shutil.copytree(run[3], model)
    info = json.loads((model / "model.json").read_text())
    info["preprocess"]["input_size"] = 40
    info["preprocess"].get("regions", {}).get("krem", {}).pop("output_size", None)  # follows input_size
    (model / "model.json").write_text(json.dumps(info))
    assert load_model_folder(model).cfg.preprocess.input_size == 40
    for bad in (0, "big"):
        info["preprocess"]["input_size"] = bad
        (model / "model.json").write_text(json.dumps(info))
        with pytest.raises(ConfigError, match=r"preprocess\.(input_size|regions\.krem)"):
            load_model_folder(model)


# --- tracebacks --------------------------------------------------------------------------------


def _bomb(path):
    """A PNG whose header says 20000x20000 (decompression-bomb territory) over one pixel's data."""
    import struct
    import zlib

    Image.new("RGB", (1, 1)).save(path)
    data = bytearray(path.read_bytes())
    data[16:24] = struct.pack(">II", 20000, 20000)  # IHDR width, height
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))
    path.write_bytes(bytes(data))


def test_14_decompression_bombs_are_one_line_errors(run, tmp_path):
    bomb = tmp_path / "bomb.png"
    _bomb(bomb)
    for read in (image_size, read_rgb):
        with pytest.raises(ImageReadError, match="too large"):
            read(bomb)
    message = refused(["predict", run[3], bomb, "--out", tmp_path / "p.csv"], "bomb.png", "too large")
    assert "truncated" not in message
    tree = tmp_path / "bach"
    synth_bach(tree, per_class=2, size=(48, 32), image_format="png")
    _bomb(next(tree.rglob("b001.png")))
    refused(["data", "inspect", tree], "cannot be used", "--skip-bad")
    result = runner.invoke(app, ["data", "inspect", str(tree), "--skip-bad"])
    assert result.exit_code == 0 and "too large" in result.output, (result.output, result.exception)
    with pytest.raises(HistobreastError, match="b001.png"):
        run_experiment(tiny_zhu_config(tree), tmp_path / "run", folds=[1])
    assert not (tmp_path / "run").exists()


def test_15_a_full_disk_names_the_target_and_keeps_the_old_file(tmp_path, monkeypatch):
    import errno

    from histobreast.atomic import atomic_write_text

    target = tmp_path / "metrics.json"
    target.write_text("old")

    def full(self, data):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr("pathlib.Path.write_bytes", full)
    with pytest.raises(OSError) as info:
        atomic_write_text(target, "new")
    assert info.value.filename == str(target) and info.value.errno == errno.ENOSPC
    assert target.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["metrics.json"]


def test_15_a_full_disk_during_predict_review_is_one_line(run, tmp_path, tiny_disk):
    _, root, _, model = run
    (tiny_disk / "filler").write_bytes(b"\0" * (1024 * 1024 - 16 * 1024))  # 16 KiB left: not a card's worth
    review = tiny_disk / "review"
    err = refused_os_error(["predict", model, *images_of(root)[:4], "--out", tmp_path / "p.csv", "--review", review])
    assert str(tiny_disk) in err.filename and ".tmp" not in err.filename
    assert not list(tiny_disk.rglob(".*.tmp")) and (tmp_path / "p.csv").is_file()


def refused_os_error(args: list) -> OSError:
    """Run the CLI; it must exit 1 on a file-system error naming its file (printed as one line)."""
    result = runner.invoke(app, [str(a) for a in args])
    assert result.exit_code == 1 and isinstance(result.exception, OSError), (result.output, repr(result.exception))
    assert result.exception.filename, repr(result.exception)
    return result.exception


def test_16_a_short_kaggle_row_is_a_one_line_error(tmp_path):
    folds = tmp_path / "Folds.csv"
    folds.write_text("fold,mag,grp,filename\n1,40\n")
    with pytest.raises(DatasetError, match="Folds.csv:2"):
        read_breakhis_folds(folds)


@pytest.mark.parametrize(
    "edit, key",
    [
        (lambda i: i.update(classes=["a", "b", "c"]), "num_classes"),
        (lambda i: i["model_kwargs"].update(bogus=1), "model_kwargs"),
        (lambda i: i.update(microns_per_pixel="fine"), "microns_per_pixel"),
        (lambda i: i.update(model_name="resnet18"), "model_name"),
        (lambda i: i.update(classes="ab"), "classes"),
    ],
)
def test_17_edited_model_json_is_refused_by_key(run, tmp_path, edit, key):
    model = tmp_path / "model"
    shutil.copytree(run[3], model)
    info = json.loads((model / "model.json").read_text())
    edit(info)
    (model / "model.json").write_text(json.dumps(info))
    with pytest.raises(CheckpointError, match=key):
        load_model_folder(model)


def test_18_config_values_fail_early_by_key(run, tmp_path):
    root = run[1]
    raw = config_to_dict(tiny_zhu_config(root))
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump(raw))
    with pytest.raises(ConfigError, match="patches.size"):
        load_config(config, ["preprocess.patches.size=16"])
    (tmp_path / "loop.yaml").write_text("name: x\nprune: &a\n  b: *a\n")
    with pytest.raises(ConfigError, match="refers to itself"):
        load_config(tmp_path / "loop.yaml")
    with pytest.raises(ConfigError, match="model.kwargs.bogus"):  # now at load, before any data is read
        load_config(config, ["model.kwargs.bogus=1"])
    assert not (tmp_path / "out").exists()


# --- also ---------------------------------------------------------------------------------------


def test_also_predict_out_a_folder_names_it_not_a_temporary(run, tmp_path):
    message = refused(["predict", run[3], images_of(run[1])[0], "--out", tmp_path], "is a folder")
    assert ".tmp" not in message


def test_also_prune_resume_with_another_ratio_blames_the_ratio(tmp_path):
    from histobreast.pipelines.pruning import check_resumed_options

    record = tmp_path / "prune_options.json"
    check_resumed_options(record, {"ratio": 0.5, "loops": 1}, resume=False)
    with pytest.raises(ConfigError, match="ratio: 0.5 -> 0.3"):
        check_resumed_options(record, {"ratio": 0.3, "loops": 1}, resume=True)


def test_also_resume_removes_a_killed_reports_temporaries(run, tmp_path):
    _, root, out, _ = run
    copy = tmp_path / "run"
    shutil.copytree(out, copy)
    stale = copy / "report" / "figures" / ".x.png.abcd.tmp"
    stale.write_bytes(b"half")
    run_experiment(tiny_zhu_config(root), copy, folds=[1], resume=True)
    assert not stale.exists() and not list(copy.rglob(".*.tmp"))


def test_also_a_breakhis_model_evaluates_a_folder_tree(tmp_path):
    synth_breakhis(
        tmp_path / "bh", patients_per_subtype=1, images_per_magnification=2, magnifications=(40,), size=(48, 32)
    )
    cfg = tiny_zhu_config(
        tmp_path / "bh", data={"magnification": 40, "task": "binary", "split": "patient", "n_folds": 2}
    )
    run_experiment(cfg, tmp_path / "run", folds=[1])
    tree = tmp_path / "tree"
    write_scale_file(tree, 0.49)
    for label in ("benign", "malignant"):
        (tree / label).mkdir(parents=True)
        for i, path in enumerate(sorted((tmp_path / "bh").rglob(f"*/{label}/**/*.png"))[:2]):
            shutil.copy(path, tree / label / f"{label}{i}.png")
    result = evaluate_model_folder(tmp_path / "run" / "fold1" / "model", tree, tmp_path / "eval")
    assert len(Predictions.from_csv(tmp_path / "eval" / "predictions" / "hybrid.csv")) == 4
    assert np.isfinite(result.mean_std()[0])


# --- the leftovers of the first pass: seeds, the Python API's batch sizes, evaluate's lock --------


@pytest.mark.parametrize("value", ["-1", "99999999999999999999", str(2**32)])
def test_9_20_seeds_out_of_range_are_one_line_errors_before_anything_is_written(tmp_path, value):
    refused(["demo", "--seed", value, "--out", tmp_path / "demo"], "--seed", "0 to 4294967295")
    refused(["data", "synth", tmp_path / "synth", "--kind", "bach", "--seed", value], "--seed")
    assert not (tmp_path / "demo").exists() and not (tmp_path / "synth").exists()


def test_9_20_seeds_out_of_range_are_refused_by_the_python_api(tmp_path):
    from histobreast.demo import run_demo

    with pytest.raises(ConfigError, match="seed"):
        run_demo(tmp_path / "demo", seed=-1)
    assert not (tmp_path / "demo").exists()
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump({"name": "x", "seed": 2**40, "model": {"name": "resnet18"}}))
    with pytest.raises(ConfigError, match="seed"):
        load_config(config)


@pytest.mark.parametrize("value", ["nan", "inf", "0", "1e308"])
def test_9_20_every_command_refuses_impossible_scales_by_name(tmp_path, value):
    image = tmp_path / "a.png"
    Image.new("RGB", (64, 48), (200, 100, 150)).save(image)
    refused(["krem", image, "--mpp", value, "--out", tmp_path / "o.png"], "--mpp")
    refused(["data", "inspect", tmp_path, "--mpp", value], "--mpp")
    refused(["slide", "inspect", image, "--mpp", value], "--mpp")
    assert not (tmp_path / "o.png").exists()


@pytest.mark.parametrize("value", [0, -3, 2.5, True])
def test_9_20_the_python_api_refuses_batch_sizes_below_one(run, value):
    from histobreast.data.readers import read_dataset
    from histobreast.pipelines import get_pipeline
    from histobreast.pipelines.bagging import predict_ensemble

    _, root, out, model = run
    loaded = load_model_folder(model)
    records = read_dataset(root)[:1]
    with pytest.raises(ConfigError, match="batch_size"):  # 0 silently meant the default
        get_pipeline("zhu2019").predict_records(loaded, records, batch_size=value)
    with pytest.raises(ConfigError, match="batch_size"):
        evaluate_model_folder(out, batch_size=value)
    with pytest.raises(ConfigError, match="batch_size"):  # before the ensemble folder is read
        predict_ensemble(out, records, batch_size=value)


def test_5_evaluate_takes_the_experiment_folders_lock(run, tmp_path):
    out = run[2]
    copy = tmp_path / "run"
    shutil.copytree(out, copy)
    before = {p: p.read_bytes() for p in copy.rglob("*") if p.is_file()}
    holder = {"pid": os.getppid(), "host": socket.gethostname(), "started": "2026-01-01T00:00:00+00:00"}
    (copy / LOCK_FILE).write_text(json.dumps(holder))  # a training still running in the folder
    refused(["evaluate", copy], "in use by another run", f"pid {os.getppid()}")
    refused(["evaluate", copy, "--out", tmp_path / "elsewhere"], "in use")  # its files are half-written
    assert {p: p.read_bytes() for p in copy.rglob("*") if p.is_file() and p.name != LOCK_FILE} == before
    assert not (tmp_path / "elsewhere").exists()
    (copy / LOCK_FILE).unlink()
    result = runner.invoke(app, ["evaluate", str(copy), "--out", str(tmp_path / "e")])
    assert result.exit_code == 0, result.output
    assert not (copy / LOCK_FILE).exists() and not (tmp_path / "e" / LOCK_FILE).exists()


def test_15_a_full_disk_during_a_checkpoint_keeps_the_earlier_one(tiny_disk):
    import torch

    from histobreast.engine.checkpoint import read_checkpoint, save_checkpoint

    save_checkpoint(tiny_disk, "last", model=torch.nn.Linear(4, 2), step=1)
    (tiny_disk / "filler").write_bytes(b"\0" * (1024 * 1024 - 96 * 1024))
    with pytest.raises(OSError) as info:  # 256 KiB of weights into the last ~64 KiB
        save_checkpoint(tiny_disk, "last", model=torch.nn.Linear(256, 256), step=2)
    assert info.value.filename and str(tiny_disk) in info.value.filename and ".tmp" not in info.value.filename
    assert read_checkpoint(tiny_disk, "last").step == 1 and not list(tiny_disk.glob(".*.tmp"))


def test_5_prune_takes_its_out_folders_lock(run, tmp_path):
    out = tmp_path / "pruned"
    out.mkdir()
    holder = {"pid": os.getppid(), "host": socket.gethostname(), "started": "2026-01-01T00:00:00+00:00"}
    (out / LOCK_FILE).write_text(json.dumps(holder))  # another prune into the same folder
    refused(["prune", run[3], "--out", out, "--ratio", "0.5", "--iterations", "1"], "in use by another run")
    assert sorted(p.name for p in out.iterdir()) == [LOCK_FILE]


def test_5_ensemble_train_takes_its_out_folders_lock(run, tmp_path):
    from histobreast.data.task_records import experiment_records
    from histobreast.locking import FolderLockedError
    from histobreast.pipelines.bagging import train_ensemble

    _, root, _, _ = run
    cfg = tiny_zhu_config(root)
    records, classes = experiment_records(cfg.data)
    out = tmp_path / "ensemble"
    out.mkdir()
    holder = {"pid": os.getppid(), "host": socket.gethostname(), "started": "2026-01-01T00:00:00+00:00"}
    (out / LOCK_FILE).write_text(json.dumps(holder))  # another `ensemble train` into the same folder
    with pytest.raises(FolderLockedError, match="in use by another run"):
        train_ensemble(cfg, records, classes, out)
    assert sorted(p.name for p in out.iterdir()) == [LOCK_FILE]
