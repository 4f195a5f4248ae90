"""Every path that trains from a pre-trained encoder refuses one that saw a test image: bagging, the
Table 4 ablation, the compression study (experiments: tests/test_pretrain_weights.py)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml

from histobreast.atomic import atomic_write_json
from histobreast.data.records import ImageRecord
from histobreast.data.synthetic import synth_bach
from histobreast.data.task_records import experiment_records
from histobreast.errors import ConfigError, SplitLeakageError
from histobreast.models.ssl import build_trunk
from histobreast.models.weights import save_weights
from histobreast.pipelines.ablation import load_ablation, run_ablation
from histobreast.pipelines.bagging import train_ensemble
from histobreast.pipelines.config import EnsembleOptions
from histobreast.pipelines.encoder_provenance import (
    ENCODER_FILE,
    FOLD_RECORD,
    FORMAT,
    FORMAT_VERSION,
    PRETRAIN_JSON,
    checked_fold_config,
    image_entries,
)
from histobreast.pipelines.pruning_report import run_sweep
from test_pretrain import TINY_TRUNK
from tiny_system_a import TINY_BRANCH, one_torch_thread, tiny_zhu_config  # noqa: F401 (autouse fixture)


def encoder_that_saw(folder: Path, records: Sequence[ImageRecord], name: str, **kwargs: Any) -> Path:
    """A trunk file with the ``pretrain.json`` of an encoder pre-trained on ``records``."""
    trunk, _ = build_trunk(name, **kwargs)
    weights = save_weights(trunk.state_dict(), folder / ENCODER_FILE)
    record = {"format": FORMAT, "version": FORMAT_VERSION, "weights": ENCODER_FILE, "images": image_entries(records)}
    atomic_write_json(folder / PRETRAIN_JSON, record)
    return weights


@pytest.fixture(scope="module")
def bach(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[ImageRecord], list[ImageRecord], list[str]]:
    """A synthetic BACH tree: 20 images per class to train on, the last 10 to test on."""
    root = tmp_path_factory.mktemp("bach")
    synth_bach(root, per_class=30, size=(64, 48))
    records, classes = experiment_records(tiny_zhu_config(root).data)
    return root, [r for r in records if r.index <= 20], [r for r in records if r.index > 20], classes


def system_a_from(root: Path, weights: Path | str) -> Any:
    return tiny_zhu_config(
        root, model={"name": "googlenet_sep", "kwargs": {**TINY_BRANCH, "encoder_weights": str(weights)}}
    )


def test_bagging_refuses_an_encoder_that_saw_a_test_image(bach: Any, tmp_path: Path) -> None:
    root, train, test, classes = bach
    torch.manual_seed(0)
    leaking = encoder_that_saw(tmp_path / "pool", [*train, test[3]], "googlenet_sep", **TINY_TRUNK)
    options = EnsembleOptions(members=2)
    with pytest.raises(
        SplitLeakageError, match=rf"^{leaking}: the encoder was pre-trained on .*a test image of fold 1"
    ):
        train_ensemble(
            system_a_from(root, leaking), train, classes, tmp_path / "ens", options=options, test_records=test, fold=1
        )
    assert not (tmp_path / "ens" / "member1").exists()  # refused before any member trained

    clean = encoder_that_saw(tmp_path / "pre1", train, "googlenet_sep", **TINY_TRUNK)  # a `{fold}` path, fold 1's
    templated = system_a_from(root, tmp_path / "pre{fold}" / ENCODER_FILE)
    folder = train_ensemble(templated, train, classes, tmp_path / "ok", options=options, test_records=test, fold=1)
    record = json.loads((folder / FOLD_RECORD).read_text())
    assert record["fold"] == 1 and record["start_weights"][0]["weights"] == str(clean)
    assert len(record["start_weights"][0]["images"]) == len(train)
    with pytest.raises(ConfigError, match=r"encoder_weights: .*names \{fold\}, but no fold is chosen"):
        train_ensemble(templated, train, classes, tmp_path / "nofold", options=options, test_records=test)


def test_the_compression_study_refuses_an_encoder_that_saw_a_test_image(bach: Any, tmp_path: Path) -> None:
    root, train, test, classes = bach
    leaking = encoder_that_saw(tmp_path / "pool", test[:1], "googlenet_sep", **TINY_TRUNK)
    with pytest.raises(SplitLeakageError, match="a test image of fold 2"):
        run_sweep(system_a_from(root, leaking), tmp_path / "study", train, [], test, classes, fold=2)
    assert not (tmp_path / "study" / "base").exists()


def test_the_ablation_refuses_an_encoder_that_saw_a_test_image(tmp_path: Path) -> None:
    synth_bach(tmp_path / "bach", per_class=11, size=(96, 72), image_format="png", classes=("Normal", "Invasive"))
    base = {
        "name": "tiny",
        "pipeline": "liu2022",
        "data": {
            "kind": "bach",
            "root": str(tmp_path / "bach"),
            "split": "contiguous",
            "n_folds": 2,
            "val_fraction": 0.0,
        },
        "preprocess": {"input_size": 32, "regions": {"top_k_train": 1, "views": ["raw"]}},
        "model": {"name": "msmv_pfenet", "kwargs": {"encoder": "resnet18"}, "frozen_encoders": True},
        "train": {"epochs": 1, "batch_size": 4, "num_workers": 0, "device": "cpu", "progress": False},
    }
    (tmp_path / "base.yaml").write_text(yaml.safe_dump(base))
    (tmp_path / "ablation.yaml").write_text(
        yaml.safe_dump({"base": "base.yaml", "variants": ["pfenet_fc"], "main": "pfenet_fc"})
    )
    ablation, cfg = load_ablation(tmp_path / "ablation.yaml")
    records, _ = experiment_records(cfg.data)
    leaking = encoder_that_saw(tmp_path / "pool", records, "resnet18")  # every image, so every fold's test images
    ablation, cfg = load_ablation(tmp_path / "ablation.yaml", [f"model.kwargs.encoder_weights={leaking}"])
    with pytest.raises(SplitLeakageError, match=rf"^{leaking}: .*a test image of fold 1"):
        run_ablation(ablation, cfg, tmp_path / "out", folds=[1])
    assert not (tmp_path / "out" / "pfenet_fc" / "fold1" / "model").exists()


def test_outside_cross_validation_the_message_names_no_fold(bach: Any, tmp_path: Path) -> None:
    root, train, test, _ = bach
    leaking = encoder_that_saw(tmp_path / "pool", test, "googlenet_sep", **TINY_TRUNK)
    with pytest.raises(SplitLeakageError, match=r"a test image; pre-train on the training images or a pool disjoint"):
        checked_fold_config(system_a_from(root, leaking), None, test, None)
