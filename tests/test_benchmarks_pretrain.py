"""benchmarks/bench_pretrain.py: the section that says whether issue 20's targets are met, read from run folders."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from benchmarks import bench_pretrain
from histobreast.pipelines.fold_predictions import write_fold_predictions
from histobreast.predictions import Predictions

CLASSES = ["Normal", "Benign", "InSitu", "Invasive"]
LABELS = np.arange(40) % 4  # ten images of each class per fold


def _run_folder(root: Path, right: dict[int, int], kind: str = "run") -> Path:
    """An experiment (or probe) folder whose fold N calls its first ``right[N]`` of 40 images right."""
    for fold, n_right in right.items():
        predicted = np.where(np.arange(40) < n_right, LABELS, (LABELS + 1) % 4)
        table = Predictions(
            classes=CLASSES,
            image_ids=[f"f{fold}i{i}" for i in range(40)],
            probs=np.eye(4)[predicted] * 0.9 + 0.025,
            labels=LABELS,
            patient_ids=[f"f{fold}p{i // 4}" for i in range(40)],
        )
        (root / f"fold{fold}" / "predictions").mkdir(parents=True)
        write_fold_predictions(root / f"fold{fold}", {"linear" if kind == "probe" else "image": table})
    if kind == "probe":
        folds = [
            {
                "fold": f,
                "train_images": 160,
                "test_images": 40,
                "knn_accuracy": n / 40,
                "linear_accuracy": n / 40,
                "linear_balanced_accuracy": n / 40,
            }
            for f, n in right.items()
        ]
        (root / "probe.json").write_text(json.dumps({"folds": folds}))
    return root


def _encoders(root: Path, name: str, encoder: str) -> str:
    for fold in (1, 2, 3):
        run = {
            "method": "simclr",
            "encoder": encoder,
            "steps": 150,
            "final_loss": 3.5,
            "seconds": 120.0,
            "images": [f"img{i}" for i in range(160)],
            "finished": f"2026-12-0{fold}T10:00:00",
            "config": {
                "name": name,
                "train": {"batch_size": 32},
                "pretrain": {"tile_size": 64, "tile_microns": 107.5, "tiles_per_image": 16},
                "probe": {"max_tiles": 16},
            },
        }
        folder = root / f"{name}_fold{fold}"
        folder.mkdir(parents=True)
        (folder / "pretrain.json").write_text(json.dumps(run))
    return str(root / f"{name}_fold{{fold}}")


def test_the_section_judges_each_target_from_the_runs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    resnet = _encoders(tmp_path / "pretrain", "simclr_resnet18", "resnet18")
    googlenet = _encoders(tmp_path / "pretrain", "simclr_googlenet_sep", "googlenet_sep")
    probe = _run_folder(tmp_path / "probe", {1: 24, 2: 23, 3: 25}, "probe")  # 0.60: over the 0.55 bar
    random = _run_folder(tmp_path / "random", {1: 16, 2: 15, 3: 17}, "probe")
    weak_probe = _run_folder(tmp_path / "probe_g", {1: 16, 2: 16, 3: 16}, "probe")  # 0.40: under it
    system_b = _run_folder(tmp_path / "sysb", {1: 36, 2: 36, 3: 36})  # 0.90
    baseline = _run_folder(tmp_path / "base", {1: 20, 2: 20, 3: 20})  # 0.50
    system_a = _run_folder(tmp_path / "sysa", {1: 30, 2: 34, 3: 32})  # 0.80: under 0.82
    args = [
        *("--runs", resnet, "--runs", googlenet),
        *("--probe", str(probe), "--random-probe", str(random), "--probe", str(weak_probe)),
        *("--experiment", f"System B={system_b}", "--experiment", f"baseline={baseline}"),
        *("--experiment", f"System A={system_a}", "--target", "System A=0.82"),
        *("--margin-target", "System B:baseline", "--not-run", "GPU schedule (no GPU)"),
        "--no-write",
    ]
    assert bench_pretrain.main(args) == 0
    text = capsys.readouterr().out
    assert (
        "- linear probe of `simclr_resnet18` >= 0.55 on 4 classes, mean of 3 of the 5 folds: **met** (0.600)." in text
    )
    assert "- linear probe of `simclr_googlenet_sep` >= 0.55" in text and "**not met** (0.400)." in text
    assert "linear probe of `simclr_resnet18`: pre-trained vs random init | 0.600 | 0.400 | +0.200 |" in text
    assert "linear probe of `simclr_googlenet_sep`: pre-trained vs random init" not in text  # no random probe given
    assert "- System B over baseline by >= 5 points with a paired interval above zero: **met**" in text
    assert "- System A >= 0.82 (mean of 3 of the 5 folds): **not met** (0.800)." in text
    assert "| System A | `" in text and "| 0.750 | 0.850 | 0.800 |  |  | 0.800 ± 0.050 |" in text
    assert "- GPU schedule (no GPU): **not run**." in text
    assert "--no-write" not in text  # the recorded command is the one that writes the section


def test_bad_options_are_one_line_errors(tmp_path: Path) -> None:
    resnet = _encoders(tmp_path / "pretrain", "simclr_resnet18", "resnet18")
    probe = _run_folder(tmp_path / "probe", {1: 24}, "probe")
    (tmp_path / "empty").mkdir()
    with pytest.raises(SystemExit, match=r"--probe .*empty: no probe.json"):
        bench_pretrain.main(["--runs", resnet, "--probe", str(tmp_path / "empty"), "--no-write"])
    with pytest.raises(SystemExit, match="one per --runs schedule at most"):
        bench_pretrain.main(["--runs", resnet, "--probe", str(probe), "--probe", str(probe), "--no-write"])
    with pytest.raises(SystemExit, match=r"--runs .*nothing_fold\{fold\}: no pretrain.json"):
        bench_pretrain.main(["--runs", str(tmp_path / "nothing_fold{fold}"), "--probe", str(probe), "--no-write"])
    with pytest.raises(SystemExit, match=r"--target 'x=0.8': 'x' is not an --experiment label"):
        bench_pretrain.main(["--runs", resnet, "--probe", str(probe), "--target", "x=0.8", "--no-write"])
    with pytest.raises(SystemExit, match=r"^--experiment .*empty: no fold\*/predictions found"):
        bench_pretrain.main(
            ["--runs", resnet, "--probe", str(probe), "--experiment", f"A={tmp_path / 'empty'}", "--no-write"]
        )
