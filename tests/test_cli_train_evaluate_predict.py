"""CLI: train -> evaluate -> predict on a tiny synthetic BreaKHis tree; models list/info/convert; clear errors."""

from __future__ import annotations

import csv
import inspect
import json
import re

import pytest
import torch
import yaml
from typer.testing import CliRunner

from histobreast.cli import app
from histobreast.config import config_to_dict
from histobreast.data.synthetic import synth_breakhis
from histobreast.errors import CheckpointError, ConfigError, DatasetError
from histobreast.models import create_model, list_models
from histobreast.models.registry import model_builder
from test_pipeline_zhu2019 import one_torch_thread, tiny_config  # noqa: F401 (autouse fixture)

runner = CliRunner()


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("cli")
    root = tmp / "breakhis"
    synth_breakhis(root, patients_per_subtype=1, images_per_magnification=2, magnifications=(40, 100), size=(96, 64))
    raw = config_to_dict(tiny_config(root, data={"val_fraction": 0.0}))
    raw["data"]["root"] = str(tmp / "elsewhere")  # replaced by --data below
    raw["data"]["magnification"] = 100  # replaced by --magnification below
    config = tmp / "tiny.yaml"
    config.write_text(yaml.safe_dump(raw))
    out = tmp / "run"
    result = runner.invoke(
        app,
        [
            "train",
            "--config",
            str(config),
            "--data",
            str(root),
            "--magnification",
            "40",
            "--fold",
            "1",
            "--set",
            "train.iterations=1",
            "--out",
            str(out),
        ],
    )
    assert result.exit_code == 0, result.output
    return tmp, root, config, out, result.output


def test_train_writes_the_experiment_and_prints_results(trained):
    _, _, _, out, output = trained
    assert "hybrid" in output and "report.html" in output
    assert (out / "fold1" / "model" / "model.json").is_file() and not (out / "fold2").exists()
    assert (out / "report" / "report.md").is_file()
    assert yaml.safe_load((out / "config.yaml").read_text())["train"]["iterations"] == 1


def test_evaluate_run_and_model(trained):
    tmp, root, _, out, _ = trained
    result = runner.invoke(app, ["evaluate", str(out), "--out", str(tmp / "rescored")])
    assert result.exit_code == 0, result.output
    assert (tmp / "rescored" / "report" / "metrics.json").is_file()
    result = runner.invoke(
        app, ["evaluate", str(out / "fold1" / "model"), "--data", str(root), "--out", str(tmp / "model_eval")]
    )
    assert result.exit_code == 0, result.output
    assert (tmp / "model_eval" / "predictions" / "hybrid.csv").is_file()


def test_predict_folder_with_tta(trained):
    tmp, root, _, out, _ = trained
    images = root / "BreaKHis_v1" / "histology_slides" / "breast" / "benign"
    csv_path = tmp / "pred.csv"
    result = runner.invoke(
        app,
        [
            "predict",
            str(out / "fold1" / "model"),
            str(images),
            "--out",
            str(csv_path),
            "--tta",
            "--method",
            "local",
            "--review",
            str(tmp / "review"),
            "--min-confidence",
            "1",
        ],
    )
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader(csv_path.open()))
    assert len(rows) == 16 and {"p_benign", "p_malignant"} <= set(rows[0])
    assert all(abs(float(r["p_benign"]) + float(r["p_malignant"]) - 1) < 1e-4 for r in rows)
    assert all(r["label"] == "" for r in rows)
    # the case review: a card per image, the least certain first, each read by the four other methods
    assert len(list((tmp / "review" / "figures").glob("case*.png"))) == 16
    cases = json.loads((tmp / "review" / "metrics.json").read_text())["results"]["cases"]
    confidence = {r["image_id"]: max(float(r["p_benign"]), float(r["p_malignant"])) for r in rows}
    assert [c["image_id"] for c in cases] == sorted(confidence, key=lambda i: (confidence[i], i))
    assert all(c["review"] == "yes" for c in cases)  # --min-confidence 1 flags every case
    assert all(re.match(r"\d of 4 other methods agree", c["agreement_note"]) for c in cases)
    assert "Calls by local: " in (tmp / "review" / "report.md").read_text()


def test_the_predict_api_writes_the_csv_the_cli_writes(trained):
    from histobreast.pipelines.predict import predict_images

    tmp, root, _, out, _ = trained
    images = root / "BreaKHis_v1" / "histology_slides" / "breast" / "malignant"
    cli_csv, api_csv = tmp / "cli.csv", tmp / "api.csv"
    args = ["predict", str(out / "fold1" / "model"), str(images), "--out", str(cli_csv), "--method", "global"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    predicted = predict_images(out / "fold1" / "model", [images], method="global")
    predicted.predictions.to_csv(api_csv)
    assert api_csv.read_text() == cli_csv.read_text()
    assert predicted.method == "global" and list(predicted.methods)[0] == "hybrid" and predicted.rule is None
    assert f"({predicted.describe()})" in result.output and sum(predicted.class_counts().values()) == 16


def test_models_list_info_and_convert(tmp_path):
    result = runner.invoke(app, ["models", "list"])
    assert result.exit_code == 0 and "googlenet_sep" in result.output and "hybrid_googlenet_sep" in result.output
    result = runner.invoke(app, ["models", "info", "spanhol_patch_cnn"])
    assert result.exit_code == 0 and "parameters" in result.output and "MACs" in result.output
    pickle = tmp_path / "w.pth"
    torch.save(create_model("spanhol_patch_cnn", num_classes=2).state_dict(), pickle)
    result = runner.invoke(
        app,
        [
            "models",
            "convert-weights",
            str(pickle),
            str(tmp_path / "w.safetensors"),
            "--model",
            "spanhol_patch_cnn",
            "--num-classes",
            "2",
        ],
    )
    assert result.exit_code == 0, result.output
    assert "loads into spanhol_patch_cnn" in result.output
    result = runner.invoke(
        app,
        [
            "models",
            "convert-weights",
            str(pickle),
            str(tmp_path / "misfit.safetensors"),
            "--model",
            "resnet18",
            "--num-classes",
            "2",
        ],
    )
    assert isinstance(result.exception, CheckpointError) and "do not match the model" in str(result.exception)
    assert not (tmp_path / "misfit.safetensors").exists()  # nothing left that looks converted


def test_models_list_descriptions_are_whole_sentences():
    """`models list` shows each builder's first docstring line, so that line must be a whole sentence."""
    builders = [model_builder(name) for name in list_models()]
    for builder in [b for b in builders if b.__module__.startswith("histobreast.")]:  # not the tests' own models
        assert inspect.getdoc(builder).splitlines()[0].endswith("."), builder.__name__


@pytest.mark.parametrize(
    "args, error, message",
    [
        (["train", "--config", "absent.yaml"], ConfigError, "config file not found"),
        (["evaluate", "no/such/run"], CheckpointError, "not found"),
        (["predict", "no/such/model", ".", "--out", "x.csv"], CheckpointError, "model folder not found"),
        (["train", "--config", "{config}", "--data", "{tmp}/missing"], DatasetError, "not found"),
        (["train", "--config", "{config}", "--set", "data.classes=[benign]"], ConfigError, "not among the classes"),
        (["train", "--config", "{config}", "--fold", "x"], ConfigError, "--fold"),
    ],
)
def test_bad_inputs_give_one_clear_error(trained, args, error, message):
    tmp, root, config, _, _ = trained
    args = [a.format(config=config, tmp=tmp) for a in args] + (
        ["--data", str(root)] if "--data" not in args and args[0] == "train" and "absent" not in args[2] else []
    )
    result = runner.invoke(app, args)
    assert result.exit_code != 0
    assert isinstance(result.exception, error) and message in str(result.exception)


def test_compare_pairs_two_experiments_on_their_shared_folds(tmp_path):
    import json

    import numpy as np

    from histobreast.pipelines.fold_predictions import write_fold_predictions
    from histobreast.predictions import Predictions

    def run(name: str, right: dict[int, list[bool]]) -> str:
        for fold, hits in right.items():
            p = np.where(hits, 0.8, 0.2)
            ids = [f"f{fold}i{i}" for i in range(len(hits))]
            table = Predictions(
                classes=["a", "b"],
                image_ids=ids,
                probs=np.stack([1 - p, p], axis=1),
                labels=np.ones(len(hits), dtype=np.int64),
                patient_ids=[f"f{fold}p{i // 2}" for i in range(len(hits))],
            )
            write_fold_predictions(tmp_path / name / f"fold{fold}", {"image": table})
        return str(tmp_path / name)

    a = run("a", {1: [True, True, True, False], 2: [True, True, False, False]})
    b = run("b", {1: [True, False, False, False], 2: [True, True, False, False], 3: [True] * 4})  # fold 3: B only
    result = runner.invoke(app, ["compare", a, b, "--bootstrap", "200", "--out", str(tmp_path / "c.json")])
    assert result.exit_code == 0, result.output
    assert "folds [1, 2]" in result.output and "only A right: 2 images, only B right: 0" in result.output
    saved = json.loads((tmp_path / "c.json").read_text())
    assert saved["accuracy_a"] == 5 / 8 and saved["accuracy_b"] == 3 / 8 and saved["estimate"] == 0.25
    result = runner.invoke(app, ["compare", a, b, "--method", "patch"])
    assert result.exit_code != 0 and "no method 'patch'" in str(result.exception)
    saved = tmp_path / "b" / "fold2" / "predictions" / "image.csv"
    text = saved.read_text()
    saved.write_text(text[: text.rindex(",")])  # the last value cut off, as by a full disk or an interrupted copy
    result = runner.invoke(app, ["compare", a, b])
    assert isinstance(result.exception, DatasetError)
    assert str(result.exception) == f"{saved}: line 5 has 7 values for 8 columns (truncated or corrupt file)"


def test_the_summary_table_keeps_every_number_whole_in_80_columns() -> None:
    from pathlib import Path
    from types import SimpleNamespace

    from rich.console import Console

    from histobreast.cli.evaluate import SUMMARY_COLUMNS, print_result

    metrics = {
        f"metrics/{key}": {"mean": -0.016 if key == "kappa" else 0.468, "std": 0.077} for key, _ in SUMMARY_COLUMNS
    }
    methods = ["image", "patch", "image_one_region", "patch_one_region"]
    result = SimpleNamespace(
        folds=[1, 2, 3, 4, 5],
        methods=methods,
        report_dir=Path("run/report"),
        summary={method: {"metrics": metrics} for method in methods},
    )
    console = Console(width=80, record=True)
    print_result(result, console)
    text = console.export_text()
    assert "…" not in text and text.count("-0.016±0.077") == 4 and text.count("0.468±0.077") == 16
