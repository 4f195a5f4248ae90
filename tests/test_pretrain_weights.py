"""A pre-trained encoder file starts every model kind, and an encoder that saw a test image is refused."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from histobreast.data.synthetic import synth_bach
from histobreast.errors import CheckpointError, SplitLeakageError
from histobreast.models import create_model
from histobreast.models.ssl import build_trunk
from histobreast.models.weights import save_weights
from histobreast.pipelines.config import parse_config
from histobreast.pipelines.encoder_provenance import FOLD_RECORD
from histobreast.pipelines.experiment import run_experiment
from histobreast.pipelines.fold_predictions import read_fold_predictions
from histobreast.pipelines.pretrain import run_pretrain
from histobreast.pipelines.pretrain_probe import probe_folds
from histobreast.pipelines.zhu2019 import split_kwargs
from test_pretrain import TINY_TRUNK, tiny_pretrain_config
from tiny_system_a import TINY_BRANCH, one_torch_thread  # noqa: F401  (autouse fixture)


def trunk_file(tmp_path: Path, name: str, **kwargs: object) -> tuple[Path, dict[str, torch.Tensor]]:
    torch.manual_seed(1234)  # another draw than the models below
    trunk, _ = build_trunk(name, **kwargs)
    state = {k: v.clone() for k, v in trunk.state_dict().items()}
    return save_weights(state, tmp_path / f"{name}.safetensors"), state


def assert_holds(module: torch.nn.Module, state: dict[str, torch.Tensor]) -> None:
    own = module.state_dict()
    assert all(torch.equal(own[k], v) for k, v in state.items())


def changed_output(name: str, x: torch.Tensor, **kwargs: object) -> bool:
    """Whether the pre-trained start changes the forward pass (same seed, so only the trunk differs)."""
    torch.manual_seed(0)
    random_start = create_model(name, num_classes=2, **{k: v for k, v in kwargs.items() if k != "encoder_weights"})
    torch.manual_seed(0)
    pretrained = create_model(name, num_classes=2, **kwargs)
    with torch.no_grad():
        return not torch.allclose(random_start.eval()(x), pretrained.eval()(x))


def test_a_trunk_file_starts_the_resnet_baselines(tmp_path: Path) -> None:
    path, state = trunk_file(tmp_path, "resnet18")
    model = create_model("resnet18", num_classes=4, encoder_weights=path)
    assert_holds(model, state) and model.fc.out_features == 4
    assert changed_output("resnet18", torch.rand(2, 3, 64, 64), encoder_weights=path)


def test_a_trunk_file_starts_all_three_system_b_encoders(tmp_path: Path) -> None:
    path, state = trunk_file(tmp_path, "resnet18")
    model = create_model("msmv_pfenet", num_classes=4, encoder="resnet18", encoder_weights=path)
    assert len(model.encoders) == 3
    for encoder in model.encoders:
        assert_holds(encoder, state)
    torch.manual_seed(0)
    random_start = create_model("msmv_pfenet", num_classes=4, encoder="resnet18")
    crops = torch.rand(2, 3, 3, 64, 64)
    with torch.no_grad():
        assert not torch.allclose(model.eval().encode(crops), random_start.eval().encode(crops))


@pytest.mark.parametrize("network", ["googlenet_sep", "googlenet_bn"])
def test_a_trunk_file_starts_both_system_a_branches(tmp_path: Path, network: str) -> None:
    path, state = trunk_file(tmp_path, network, **TINY_TRUNK)
    branch = {**TINY_BRANCH, "encoder_weights": str(path)}
    cfg = parse_config({"name": "a", "pipeline": "zhu2019", "model": {"name": network, "kwargs": branch}})
    kwargs, _ = split_kwargs(cfg)  # what the global and the local branch are both built with
    assert kwargs["encoder_weights"] == str(path)
    for seed in (1, 2):  # the two branches' draws
        torch.manual_seed(seed)
        model = create_model(network, num_classes=2, **kwargs)
        assert_holds(model, state)
        assert model.fc.out_features == 2 and model.aux1 is not None  # heads stay, randomly initialised
    assert changed_output(network, torch.rand(2, 3, 32, 32), **kwargs)


def test_a_file_of_another_network_is_refused_in_one_line(tmp_path: Path) -> None:
    path, _ = trunk_file(tmp_path, "resnet18")
    with pytest.raises(CheckpointError, match=rf"^{path}: not weights of this encoder \(missing \['inception"):
        create_model("googlenet_sep", encoder_weights=path, **TINY_BRANCH)


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("leakage") / "bach"
    synth_bach(root, per_class=20, size=(128, 96), image_format="png", classes=("Normal", "Invasive"))
    return root


def fold_encoder(tree: Path, out: Path, fold: int | None) -> Path:
    """A one-step pre-training on fold ``fold``'s training images (None: every image of the tree)."""
    cfg = tiny_pretrain_config(tree, data={"fold": fold}, train={"epochs": None, "iterations": 1})
    return run_pretrain(cfg, out).weights


def image_experiment(tree: Path, encoder_weights: str) -> object:
    return parse_config(
        {
            "name": "pretrained_start",
            "pipeline": "image",
            "data": {"root": str(tree), "n_folds": 2, "val_fraction": 0.0},
            "preprocess": {"input_size": 32},
            "model": {"name": "googlenet_sep", "kwargs": {**TINY_BRANCH, "encoder_weights": encoder_weights}},
            "train": {"iterations": 1, "batch_size": 4, "num_workers": 0, "device": "cpu", "progress": False},
            "evaluate": {"bootstrap": 0},
        }
    )


def test_an_encoder_that_saw_a_test_image_is_refused(tree: Path, tmp_path: Path) -> None:
    weights = fold_encoder(tree, tmp_path / "fold1", 1)
    cfg = image_experiment(tree, str(weights))
    result = run_experiment(cfg, tmp_path / "exp1", folds=[1])  # fold 1's own encoder: accepted, recorded
    record = json.loads((result.out_dir / "fold1" / FOLD_RECORD).read_text())
    assert record["start_weights"][0]["weights"] == str(weights)
    assert len(record["start_weights"][0]["images"]) == 20
    with pytest.raises(SplitLeakageError) as caught:  # fold 2 tests on fold 1's training images
        run_experiment(cfg, tmp_path / "exp2", folds=[2])
    message = str(caught.value)
    assert "\n" not in message and message.startswith(f"{weights}: the encoder was pre-trained on ")
    assert "a test image of fold 2" in message and "data.fold=2" in message
    pooled = fold_encoder(tree, tmp_path / "pool", None)  # a pool holding every test image
    with pytest.raises(SplitLeakageError, match="test image of fold 1"):
        run_experiment(image_experiment(tree, str(pooled)), tmp_path / "exp3", folds=[1])


def test_one_encoder_per_fold_through_the_fold_field(tree: Path, tmp_path: Path) -> None:
    for fold in (1, 2):
        fold_encoder(tree, tmp_path / f"pre{fold}", fold)
    cfg = image_experiment(tree, str(tmp_path / "pre{fold}" / "encoder.safetensors"))
    result = run_experiment(cfg, tmp_path / "exp")
    for fold in (1, 2):
        record = json.loads((result.out_dir / f"fold{fold}" / FOLD_RECORD).read_text())
        assert record["start_weights"][0]["weights"] == str(tmp_path / f"pre{fold}" / "encoder.safetensors")


def test_the_probe_scores_every_fold_with_its_own_encoder_and_saves_comparable_predictions(
    tree: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for fold in (1, 2):
        fold_encoder(tree, tmp_path / f"pre{fold}", fold)
    cfg = tiny_pretrain_config(tree, probe={"max_tiles": 4, "knn_k": 3})
    template = str(tmp_path / "pre{fold}" / "encoder.safetensors")
    result = probe_folds(cfg, template, device="cpu", out=tmp_path / "probe")
    assert [f["fold"] for f in result["folds"]] == [1, 2]  # default: every fold of the protocol
    assert [f["weights"] for f in result["folds"]] == [template.replace("{fold}", str(k)) for k in (1, 2)]
    for scores in result["folds"]:
        assert (scores["train_images"], scores["test_images"]) == (20, 20)
        for key in ("knn_accuracy", "linear_accuracy", "knn_balanced_accuracy", "linear_balanced_accuracy"):
            assert 0.0 <= scores[key] <= 1.0
    linear = [f["linear_accuracy"] for f in result["folds"]]
    assert result["summary"]["linear_accuracy"]["mean"] == pytest.approx(sum(linear) / 2)
    assert json.loads((tmp_path / "probe" / "probe.json").read_text()) == result
    saved = read_fold_predictions(tmp_path / "probe")
    assert list(saved) == [1, 2] and list(saved[1]) == ["linear", "knn"]  # the linear probe is the headline
    table = saved[2]["linear"]
    assert len(table) == 20 and (table.predicted == table.labels).mean() == pytest.approx(linear[1])

    def no_recompute(*args: object, **kwargs: object) -> None:
        raise AssertionError("a finished fold was probed again")

    monkeypatch.setattr("histobreast.pipelines.pretrain_probe.probe_fold", no_recompute)
    assert probe_folds(cfg, template, device="cpu", out=tmp_path / "probe") == result  # resumes: read back
    other = tiny_pretrain_config(tree, probe={"max_tiles": 3, "knn_k": 3})  # other settings: not a finished fold
    with pytest.raises(AssertionError, match="probed again"):
        probe_folds(other, template, device="cpu", out=tmp_path / "probe")
    monkeypatch.undo()

    from histobreast.cli import app

    random_start = CliRunner().invoke(
        app, ["pretrain", "probe", "--config", str(write_probe_config(tree, tmp_path)), "--out", str(tmp_path / "rnd")]
    )
    assert random_start.exit_code == 0, random_start.output
    assert "2 folds: k-NN" in random_start.output and "random init" in random_start.output
    paired = CliRunner().invoke(app, ["compare", str(tmp_path / "probe"), str(tmp_path / "rnd")])
    assert paired.exit_code == 0, paired.output
    assert "40 test images" in paired.output and "A - B = " in paired.output


def write_probe_config(tree: Path, tmp_path: Path) -> Path:
    config = tmp_path / "probe.yaml"
    config.write_text(
        f"data: {{root: {tree}, n_folds: 2}}\npretrain: {{encoder: resnet18, tile_size: 32, tile_microns: 160}}\n"
        "probe: {max_tiles: 2, knn_k: 3}\n"
    )
    return config


def test_the_probe_refuses_an_encoder_that_saw_a_test_image_and_a_fold_that_is_not_there(
    tree: Path, tmp_path: Path
) -> None:
    weights = fold_encoder(tree, tmp_path / "fold1", 1)
    cfg = tiny_pretrain_config(tree, probe={"max_tiles": 2, "knn_k": 3})
    with pytest.raises(SplitLeakageError, match=r"a test image of fold 2"):  # fold 2 tests on fold 1's training images
        probe_folds(cfg, weights, [2], device="cpu")
    from histobreast.cli import app

    config = write_probe_config(tree, tmp_path)
    result = CliRunner().invoke(app, ["pretrain", "probe", "--config", str(config), "--fold", "3"])
    assert result.exit_code == 1 and "--fold 3: the protocol has 2 folds" in str(result.exception)
    inside = CliRunner().invoke(app, ["pretrain", "probe", "--config", str(config), "--out", str(tree / "probe")])
    assert inside.exit_code == 1 and "lies inside the input folder" in str(inside.exception)
