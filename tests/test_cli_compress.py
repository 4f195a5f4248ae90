"""``histobreast prune``, ``prune report``, ``ensemble train/evaluate`` and ``baseline spanhol`` via CliRunner."""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from histobreast.cli import app
from histobreast.config import config_to_dict
from histobreast.data.synthetic import synth_bach
from histobreast.errors import CheckpointError, ConfigError
from histobreast.models import create_model
from histobreast.pipelines.bagging import read_ensemble_folder
from histobreast.pipelines.experiment import run_experiment
from histobreast.pipelines.package import load_model_folder, save_model_folder
from histobreast.pipelines.pruning import channel_widths
from tiny_system_a import one_torch_thread, tiny_zhu_config  # noqa: F401 (autouse fixture)

runner = CliRunner()


def invoke(*args: str) -> str:
    result = runner.invoke(app, [str(a) for a in args], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


@pytest.fixture(scope="module")
def tree(tmp_path_factory) -> Path:
    """Four 10-image patient blocks per class: two contiguous folds of two blocks each."""
    root = tmp_path_factory.mktemp("data")
    synth_bach(root / "bach", per_class=40, size=(64, 48))
    config = root / "zhu_tiny.yaml"
    config.write_text(yaml.safe_dump(config_to_dict(tiny_zhu_config(root / "bach", ensemble={"members": 2}))))
    return root


@pytest.fixture(scope="module")
def experiment(tree, tmp_path_factory) -> Path:
    cfg = tiny_zhu_config(tree / "bach")
    out = tmp_path_factory.mktemp("runs") / "zhu_tiny"
    run_experiment(cfg, out, folds=[1])
    return out


def test_help_lists_the_commands() -> None:
    for group, commands in (
        ("prune", ("run", "report")),
        ("ensemble", ("train", "evaluate")),
        ("baseline", ("spanhol",)),
    ):
        output = invoke(group, "--help")
        assert all(command in output for command in commands)


def test_prune_a_model_folder_of_an_experiment(experiment, tmp_path) -> None:
    output = invoke(
        "prune",
        experiment / "fold1" / "model",
        "--ratio",
        "0.5",
        "--loops",
        "1",
        "--iterations",
        "1",
        "--out",
        tmp_path / "pruned",
    )
    assert "pruned model folder" in output
    pruned, base = load_model_folder(tmp_path / "pruned"), load_model_folder(experiment / "fold1" / "model")
    assert channel_widths(pruned.model)["local_branch."]["4e"] < channel_widths(base.model)["local_branch."]["4e"]
    assert json.loads((tmp_path / "pruned" / "pruning.json").read_text())["train_images"] == 80
    invoke("prune", "run", experiment, "--ratio", "0.25", "--iterations", "1", "--internal", "--out", tmp_path / "all")
    every_fold = load_model_folder(tmp_path / "all" / "fold1")  # every fold of the run, internal convs too
    assert every_fold.info["pruning"]["ratio"] == 0.25 and every_fold.info["pruning"]["internal"] is True
    assert every_fold.model.local_branch.stem_widths[2] < base.model.local_branch.stem_widths[2]
    assert pruned.info["pruning"]["internal"] is False
    result = runner.invoke(
        app,
        [
            "prune",
            "run",
            str(experiment / "fold1" / "model"),
            "--out",
            str(tmp_path / "x"),
            "--iterations",
            "1",
            "--retrain-config",
            str(tmp_path / "r.yaml"),
        ],
    )
    assert result.exit_code != 0 and "not both" in str(result.exception)


def test_interrupted_prune_resumes_and_a_model_without_sep_blocks_is_refused(tree, experiment, tmp_path) -> None:
    args = [
        "prune",
        experiment / "fold1" / "model",
        "--ratio",
        "0.5",
        "--iterations",
        "2",
        "--out",
        tmp_path / "pruned",
    ]
    invoke(*args)
    (tmp_path / "pruned" / "model.json").unlink()  # as if killed while retraining: its checkpoints are there
    again = runner.invoke(app, [str(a) for a in args])
    assert isinstance(again.exception, CheckpointError) and "resume it (--resume)" in str(again.exception)
    invoke(*args, "--resume")
    assert load_model_folder(tmp_path / "pruned").info["pruning"]["ratio"] == 0.5
    cfg = tiny_zhu_config(tree / "bach", pipeline="image", model={"name": "resnet18", "kwargs": {}})
    plain = save_model_folder(
        tmp_path / "resnet", create_model("resnet18", num_classes=2), cfg, ["non-carcinoma", "carcinoma"]
    )
    refused = runner.invoke(app, ["prune", str(plain), "--data", str(tree / "bach"), "--out", str(tmp_path / "x")])
    assert isinstance(refused.exception, ConfigError) and "no SEP blocks to prune" in str(refused.exception)
    assert not (tmp_path / "x").exists()


def test_prune_report_runs_and_remeasures_a_study(tree, tmp_path) -> None:
    out = tmp_path / "study"
    output = invoke(
        "prune",
        "report",
        "--config",
        tree / "zhu_tiny.yaml",
        "--out",
        out,
        "--ratio",
        "0",
        "--ratio",
        "0.5",
        "--loops",
        "0",
        "--iterations",
        "1",
        "--latency-repeats",
        "1",
    )
    assert "ratio0.5: O = 0.5" in output
    assert (out / "report" / "figures" / "fig12_pruning_ratio.png").is_file()
    moved = out.rename(tmp_path / "moved")  # the study trained its base inside it: a self-contained folder
    again = invoke("prune", "report", "--measure-only", "--out", moved, "--latency-repeats", "1")
    assert again.count("GMACs") == 3  # the base model and the two ratios
    assert "base/model: O = 0" in again  # named relative to the study like the pruned models
    refused = runner.invoke(app, ["prune", "report", "--out", str(moved)])
    assert refused.exit_code != 0


def test_ensemble_train_then_evaluate(tree, tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)  # a relative --out, as users type it
    out = tmp_path / "ensemble"
    invoke("ensemble", "train", "--config", tree / "zhu_tiny.yaml", "--out", "ensemble", "--fold", "2")
    assert len(read_ensemble_folder(out).members) == 2
    output = invoke("ensemble", "evaluate", out, "--rule", "max")
    assert "ensemble (max)" in output and "over the best member" in output
    with (out / "evaluation" / "predictions.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 80 and "uncertainty" in rows[0]
    invoke("ensemble", "evaluate", out, "--data", tree / "bach", "--out", tmp_path / "all")
    with (tmp_path / "all" / "predictions.csv").open() as fh:
        assert len(list(csv.DictReader(fh))) == 160
    # applied to new images: the members vote by the folder's rule; the review counts them as readings
    images = sorted((tree / "bach").rglob("*.tif"))[:3]
    output = invoke("predict", out, *images, "--out", tmp_path / "new.csv", "--review", tmp_path / "review")
    assert "3 images (ensemble, sum rule)" in output
    with (tmp_path / "new.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    assert [r["path"] for r in rows] == [str(p) for p in images] and "uncertainty" in rows[0]
    cases = json.loads((tmp_path / "review" / "metrics.json").read_text())["results"]["cases"]
    assert all(re.match(r"\d of 2 members agree", c["agreement_note"]) for c in cases)


def test_baseline_spanhol_runs_an_experiment(tree, tmp_path) -> None:
    cfg = tiny_zhu_config(
        tree / "bach",
        pipeline="spanhol2016",
        model={"name": "spanhol_patch_cnn", "kwargs": {}},
        spanhol={"patch_sizes": [16], "random_patches": 4, "scale": 0.5},
    )
    config = tmp_path / "spanhol.yaml"
    config.write_text(yaml.safe_dump(config_to_dict(cfg)))
    invoke("baseline", "spanhol", "--config", config, "--out", tmp_path / "run", "--fold", "1")
    assert read_ensemble_folder(tmp_path / "run" / "fold1" / "model").rule == "max"
    image = next((tree / "bach").rglob("*.tif"))  # the baseline's model (one CNN per patch size) applies as one
    assert "1 image (ensemble, max rule)" in invoke(
        "predict", tmp_path / "run" / "fold1" / "model", image, "--out", tmp_path / "one.csv"
    )
    assert (tmp_path / "run" / "fold1" / "predictions" / "max_fusion.csv").is_file()
    assert (tmp_path / "run" / "report" / "report.md").is_file()
    wrong = runner.invoke(app, ["baseline", "spanhol", "--config", str(tree / "zhu_tiny.yaml")])
    assert wrong.exit_code != 0 and "spanhol2016" in str(wrong.exception)


@pytest.mark.parametrize(
    "name",
    [
        "zhu2019/prune_breakhis_40x",
        "zhu2019/prune_bach_binary",
        "zhu2019/prune_bach_binary_cpu",
        "zhu2019/ensemble_bach_binary",
        "zhu2019/ensemble_bach_binary_cpu",
        "baselines/spanhol2016_bach_binary",
        "baselines/spanhol2016_bach_binary_cpu",
        "demo/prune_synthetic",
        "demo/ensemble_synthetic",
    ],
)
def test_shipped_configs_validate(name) -> None:
    from histobreast.pipelines.bagging import ensemble_options
    from histobreast.pipelines.config import load_config
    from histobreast.pipelines.pruning import prune_options

    cfg = load_config(Path(__file__).resolve().parents[1] / "configs" / f"{name}.yaml")
    prune_options(cfg), ensemble_options(cfg)
    assert cfg.pipeline == ("spanhol2016" if "spanhol" in name else "zhu2019")
