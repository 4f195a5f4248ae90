"""``histobreast ablate`` on a tiny synthetic BACH tree: two Table 4 rows (PFENet + FC and the SVM
fitted on its features) on one fold, written as the Table 4 report with the main row's evaluation."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import typer
import yaml
from typer.testing import CliRunner

from histobreast.cli import ablate
from histobreast.data.synthetic import synth_bach
from histobreast.errors import ConfigError
from histobreast.pipelines.ablation import load_ablation
from histobreast.pipelines.config import load_config


def write_yaml(path: Path, data: dict) -> Path:
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return path


@pytest.fixture
def ablation_file(tmp_path: Path) -> Path:
    # 11 images per class: two pseudo-patient blocks (1-10, 11), enough for two contiguous folds;
    # two classes and two views keep it fast (fold 2 trains on 20 images, tests on 2).
    synth_bach(tmp_path / "bach", per_class=11, size=(384, 288), image_format="png", classes=("Normal", "Invasive"))
    write_yaml(
        tmp_path / "base.yaml",
        {
            "name": "tiny",
            "pipeline": "liu2022",
            "seed": 0,
            "data": {
                "kind": "bach",
                "root": str(tmp_path / "bach"),
                "split": "contiguous",
                "n_folds": 2,
                "val_fraction": 0.0,
                "classes": ["Normal", "Invasive"],
            },
            "preprocess": {"input_size": 32, "regions": {"top_k_train": 1, "views": ["raw", "rot180"]}},
            "model": {"name": "msmv_pfenet", "kwargs": {"encoder": "resnet18"}, "frozen_encoders": True},
            "evaluate": {"bootstrap": 20},
            "train": {
                "optimizer": "adamw",
                "lr": 1e-3,
                "batch_size": 4,
                "epochs": 1,
                "num_workers": 0,
                "device": "cpu",
                "tensorboard": False,
                "progress": False,
            },
        },
    )
    return write_yaml(
        tmp_path / "ablation.yaml",
        {
            "base": "base.yaml",
            "variants": ["pfenet_fc", "pfenet_svm"],
            "main": "pfenet_fc",
            "overrides": ["train.epochs=2"],
        },
    )


def test_ablate_writes_the_table4_report_for_two_rows_on_one_fold(ablation_file: Path, tmp_path: Path) -> None:
    app = typer.Typer()
    ablate.register(app)
    app.command("noop", hidden=True)(lambda: None)  # a second command keeps `ablate` a sub-command
    out = tmp_path / "out"
    result = CliRunner().invoke(app, ["ablate", "--config", str(ablation_file), "--fold", "2", "--out", str(out)])
    assert result.exit_code == 0, result.output
    report = (out / "report" / "report.md").read_text()
    assert "Architecture ablation (paper B, Table 4)" in report
    assert "| PFENet | FC |" in report.replace("(best) ", "").replace(" (best)", "")
    assert "| SVM |" in report and "88.7%" in report and "89.1%" in report  # the paper's numbers beside ours
    metrics = json.loads((out / "report" / "metrics.json").read_text())
    per_fold = metrics["results"]["accuracy_per_fold"]
    assert set(per_fold) == {"pfenet_fc", "pfenet_svm"} and per_fold["pfenet_fc"]["folds"] == [2]
    main = metrics["results"]["PFENet + FC, image level (six-view vote)"]
    assert set(main["per_class"]["Normal"]) >= {"precision", "recall", "f1"}
    assert (out / "report" / "figures" / "pfenet_fc_image_level_six_view_vote_confusion.png").is_file()
    for row in ("pfenet_fc", "pfenet_svm"):
        assert (out / row / "fold2" / "predictions" / "image.csv").is_file()
        assert (out / row / "fold2" / "predictions" / "patch.csv").is_file()
    assert (out / "pfenet_fc" / "splits.csv").is_file() and (out / "pfenet_fc" / "report" / "report.md").is_file()
    assert "pfenet_svm" in result.output


def test_ablation_files_are_checked(tmp_path: Path, ablation_file: Path) -> None:
    bad = write_yaml(tmp_path / "bad.yaml", {"base": "base.yaml", "variants": ["pfenet_svm"], "main": "pfenet_svm"})
    with pytest.raises(ConfigError, match="pfenet_svm is fitted on the features of pfenet_fc; list that row too"):
        load_ablation(bad)
    unknown = write_yaml(tmp_path / "unknown.yaml", {"base": "base.yaml", "variants": ["pfenet_lstm9"]})
    with pytest.raises(ConfigError, match="unknown Table 4 variant 'pfenet_lstm9'"):
        load_ablation(unknown)
    ablation, base = load_ablation(ablation_file, ["train.lr=0.5"])
    assert base.train.epochs == 2 and base.train.lr == 0.5  # the file's overrides, then the caller's
    assert ablation.main == "pfenet_fc"


def test_the_shipped_configs_load() -> None:
    configs = Path(__file__).resolve().parents[1] / "configs"
    ablation, base = load_ablation(configs / "liu2022" / "ablation_table4.yaml")
    assert len(ablation.variants) == 10 and base.model.frozen_encoders
    loaded = {
        p.stem: load_config(p)
        for p in [*configs.glob("liu2022/bach4*.yaml"), configs / "demo" / "liu2022_synthetic.yaml"]
    }
    assert all(
        cfg.pipeline == "liu2022" and cfg.preprocess.regions.krem.output_size == cfg.preprocess.input_size
        for cfg in loaded.values()
    )
    paper = loaded["bach4"]
    assert (paper.model.kwargs, paper.train.batch_size, paper.train.iterations) == (
        {"encoder": "resnet50", "n_encoders": 3, "discriminator": "bilstm", "lstm_layers": 2, "hidden": 256},
        64,
        27000,
    )
    assert loaded["bach4_random_regions"].preprocess.regions.selection == "random"
    assert (
        loaded["bach4_cpu"].model.kwargs["encoder"] == "resnet18" and loaded["bach4_cpu"].preprocess.input_size == 112
    )
    gpu = loaded["bach4_gpu_short"]  # the paper's model and input, the CPU joint recipe, one lease's schedule
    assert (gpu.model.kwargs["encoder"], gpu.preprocess.input_size, gpu.train.batch_size) == ("resnet50", 224, 64)
    assert gpu.preprocess.augment.color_jitter == 0.1 and not gpu.model.frozen_encoders and gpu.train.iterations == 800
