"""run_experiment end to end on tiny synthetic BreaKHis (2 folds), then re-evaluation of the run."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace

import pytest

from histobreast.data.synthetic import synth_breakhis
from histobreast.errors import CheckpointError, ConfigError
from histobreast.pipelines.evaluation import evaluate_model_folder
from histobreast.pipelines.experiment import run_experiment
from histobreast.pipelines.fold_predictions import read_fold_predictions
from histobreast.predictions import Predictions
from test_pipeline_zhu2019 import one_torch_thread, tiny_config  # noqa: F401 (autouse fixture)


@pytest.fixture(scope="module")
def experiment(tmp_path_factory):
    root = tmp_path_factory.mktemp("breakhis")
    synth_breakhis(root, patients_per_subtype=1, images_per_magnification=2, magnifications=(40,), size=(96, 64))
    cfg = tiny_config(root, data={"val_fraction": 0.0})
    out = tmp_path_factory.mktemp("runs") / "zhu"
    return root, cfg, out, run_experiment(cfg, out, folds=[1, 2])


def test_run_writes_layout_and_report(experiment):
    _, _, out, result = experiment
    assert result.folds == [1, 2] and result.methods[0] == "hybrid"
    for name in (
        "config.yaml",
        "splits.csv",
        "fold1/model/model.json",
        "fold2/predictions/local_max.csv",
        "report/report.md",
        "report/report.html",
        "report/metrics.json",
    ):
        assert (out / name).is_file(), name
    assert list((out / "report" / "figures").glob("*roc.png")) and list(
        (out / "report" / "figures").glob("*confusion.png")
    )
    markdown = (out / "report" / "report.md").read_text()
    assert "Tables 2-3" in markdown and "3 (hybrid)" in markdown and "2 (Max)" in markdown and "40X" in markdown
    metrics = json.loads((out / "report" / "metrics.json").read_text())
    assert set(metrics["results"]["summary"]) == set(result.methods)
    mean, _ = result.mean_std("image_level_accuracy")
    assert 0.0 <= mean <= 1.0


def test_resume_reuses_finished_folds(experiment):
    _, cfg, out, result = experiment
    again = run_experiment(cfg, out, folds=[1], resume=True)
    assert again.model_folders[1] == result.model_folders[1]
    with pytest.raises(CheckpointError, match="already holds a checkpoint"):
        run_experiment(cfg, out, folds=[1])


def test_refused_fresh_run_keeps_the_record_of_the_trained_one(experiment):
    _, cfg, out, _ = experiment
    saved, splits = (out / "config.yaml").read_text(), (out / "splits.csv").read_text()
    changed = replace(cfg, train=replace(cfg.train, lr=cfg.train.lr * 2))
    for folds in ([1], [2]):
        with pytest.raises(CheckpointError, match="already holds a checkpoint"):
            run_experiment(changed, out, folds=folds)
    assert (out / "config.yaml").read_text() == saved and (out / "splits.csv").read_text() == splits
    run_experiment(cfg, out, folds=[1], resume=True)  # so the interrupted run can still be resumed


def test_resume_with_other_training_settings_is_refused(experiment):
    _, cfg, out, _ = experiment
    saved = (out / "config.yaml").read_text()
    changed = replace(cfg, train=replace(cfg.train, lr=cfg.train.lr * 2))
    with pytest.raises(ConfigError, match=rf"cannot resume.*train\.lr: {cfg.train.lr!r} -> {cfg.train.lr * 2!r}"):
        run_experiment(changed, out, folds=[1], resume=True)
    assert (out / "config.yaml").read_text() == saved  # the record of what was trained is kept


def test_evaluate_run_and_model_folder(experiment, tmp_path):
    root, _, out, result = experiment
    rescored = evaluate_model_folder(out, out_dir=tmp_path / "again")
    assert rescored.summary["hybrid"]["metrics"]["metrics/image_level_accuracy"]["mean"] == pytest.approx(
        result.mean_std()[0]
    )
    model = evaluate_model_folder(out / "fold1" / "model", root, tmp_path / "model_eval")
    assert (tmp_path / "model_eval" / "report" / "report.html").is_file()
    assert model.evaluations["hybrid"][0]["n_images"] == 16
    assert set(read_fold_predictions(out)) == {1, 2}
    with pytest.raises(ConfigError, match="--data"):
        evaluate_model_folder(out / "fold1" / "model")
    with pytest.raises(ConfigError, match="fold"):
        run_experiment(experiment[1], tmp_path / "x", folds=[9])


def test_runs_of_two_magnifications_make_one_table(experiment, tmp_path):
    _, _, out, _ = experiment
    other = tmp_path / "zhu_100x"
    shutil.copytree(out, other, ignore=shutil.ignore_patterns("global", "local", "model", "report"))
    for csv_path in other.glob("fold*/predictions/*.csv"):
        pred = Predictions.from_csv(csv_path)
        pred.magnifications = [100] * len(pred)
        pred.to_csv(csv_path)
    combined = evaluate_model_folder([out, other], out_dir=tmp_path / "tables")
    metrics = json.loads((tmp_path / "tables" / "report" / "metrics.json").read_text())
    assert set(metrics["results"]["by_magnification"]["hybrid"]) == {"40", "100"}
    assert combined.evaluations["hybrid"][0]["n_images"] == 2 * result_images(out)
    assert "100X" in (tmp_path / "tables" / "report" / "report.md").read_text()


def result_images(run):
    return len(Predictions.from_csv(run / "fold1" / "predictions" / "hybrid.csv"))


def test_run_models_repredict_their_folds_identically(experiment, tmp_path):
    root, _, out, result = experiment
    again = evaluate_model_folder(out, root, tmp_path / "redo")
    assert again.folds == [1, 2]
    for method in result.methods:
        for before, after in zip(result.evaluations[method], again.evaluations[method]):
            assert after["metrics"]["image_level_accuracy"] == before["metrics"]["image_level_accuracy"]
