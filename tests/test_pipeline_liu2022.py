"""System B pipeline on a tiny synthetic BACH tree: train_fold -> model folder -> predict_records, in
live (joint) and frozen-encoder modes; six views x three crops per test image, the six-view vote and
its tie rule, the random-region control, and the loss going down."""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import Subset
from typer.testing import CliRunner

from degenerate_inputs import assert_predict_flags_degenerate_inputs
from histobreast.cli import app
from histobreast.config import config_to_dict
from histobreast.data.bach import BACH_CLASSES
from histobreast.data.records import ImageRecord
from histobreast.data.synthetic import synth_bach
from histobreast.engine.features import SVMDiscriminator, extract_features
from histobreast.errors import ConfigError
from histobreast.pipelines import get_pipeline, liu2022
from histobreast.pipelines.config import ExperimentConfig, parse_config
from histobreast.pipelines.encoder_pretraining import encoder_pretraining_config
from histobreast.pipelines.package import LoadedModel, load_model_folder
from histobreast.predictions import Predictions
from histobreast.preprocess.views import SIX_VIEWS

CLASSES = list(BACH_CLASSES)


def tiny_config(**model: Any) -> ExperimentConfig:
    """ResNet18 encoders on 32 px crops, 2 regions per training view, one epoch of 6 steps."""
    return parse_config(
        {
            "name": "tiny_liu2022",
            "pipeline": "liu2022",
            "seed": 0,
            "preprocess": {"input_size": 32, "regions": {"top_k_train": 2}},
            "model": {"name": "msmv_pfenet", "kwargs": {"encoder": "resnet18"}, **model},
            "train": {
                "batch_size": 16,
                "epochs": 1,
                "lr": 0.01,
                "weight_decay": 1e-4,
                "num_workers": 0,
                "device": "cpu",
                "log_every": 1,
                "tensorboard": False,
                "progress": False,
            },
        }
    )


@pytest.fixture(scope="module")
def records(tmp_path_factory) -> list[ImageRecord]:
    """Three synthetic images per class at 512x384 (BACH's field of view at 1.68 µm/px)."""
    return synth_bach(tmp_path_factory.mktemp("bach"), per_class=3, size=(512, 384), image_format="png")


def split(records: list[ImageRecord]) -> tuple[list[ImageRecord], list[ImageRecord], list[ImageRecord]]:
    return records[0::3], records[1::3], records[2::3]  # one image per class in each


def check_outputs(out: dict, test: list[ImageRecord]) -> None:
    assert list(out) == ["image", "patch"]  # the headline method first
    image, patch = out["image"], out["patch"]
    assert image.image_ids == [r.image_id for r in test]
    assert patch.image_ids == [f"{r.image_id}/{v}" for r in test for v in SIX_VIEWS]
    assert image.labels.tolist() == [CLASSES.index(r.label) for r in test]
    for j in range(len(test)):  # each image's label is the majority of its six view labels
        votes = np.bincount(patch.predicted[6 * j : 6 * j + 6], minlength=4)
        assert votes[image.predicted[j]] == votes.max()


def test_live_training_writes_a_model_folder_that_predicts_six_views_per_image(records, tmp_path) -> None:
    train, val, test = split(records)
    cfg = tiny_config()
    folder = liu2022.train_fold(cfg, train, val, CLASSES, tmp_path / "fold1")
    assert folder == tmp_path / "fold1" / "model"
    loaded = load_model_folder(folder)
    assert loaded.pipeline == "liu2022" and loaded.classes == CLASSES
    assert loaded.info["model_kwargs"] == {"num_classes": 4, "encoder": "resnet18"}
    assert {"val_accuracy", "val_image_accuracy", "val_loss"} <= set(loaded.info["metrics"])
    assert (tmp_path / "fold1" / "msmv" / "checkpoints" / "last.json").is_file()
    check_outputs(liu2022.predict_records(loaded, test), test)
    # `histobreast predict` sees new images at the training scale (KREM's windows are physical), never a guess
    assert loaded.info["microns_per_pixel"] == train[0].microns_per_pixel
    result = CliRunner().invoke(
        app,
        [
            "predict",
            str(folder),
            str(test[0].path),
            "--out",
            str(tmp_path / "p.csv"),
            "--review",
            str(tmp_path / "review"),
        ],
    )
    assert result.exit_code == 0, result.output
    expected = liu2022.predict_records(folder, test[:1])["image"].probs
    np.testing.assert_allclose(Predictions.from_csv(tmp_path / "p.csv").probs, expected, atol=1e-6)
    (case,) = json.loads((tmp_path / "review" / "metrics.json").read_text())["results"]["cases"]
    assert case["image_id"] == test[0].image_id and re.match(r"\d of 6 views agree", case["agreement_note"])
    # paper B's 3.36 µm/px input at 0.01 µm/px: the key window would be the whole image
    assert_predict_flags_degenerate_inputs(folder, train[0].path, tmp_path, far_scale=train[0].microns_per_pixel / 10)
    # resume returns the finished fold as it is
    assert liu2022.train_fold(cfg, train, val, CLASSES, tmp_path / "fold1", resume=True) == folder
    assert get_pipeline("liu2022") is liu2022.PIPELINE
    info = json.loads((folder / "model.json").read_text())
    (folder / "model.json").write_text(json.dumps({**info, "microns_per_pixel": None}))  # an older version's folder
    result = CliRunner().invoke(app, ["predict", str(folder), str(test[0].path), "--out", str(tmp_path / "q.csv")])
    assert isinstance(result.exception, ConfigError) and "--mpp" in str(result.exception)


def test_frozen_mode_trains_only_the_discriminator_on_cached_features_and_lowers_the_loss(records, tmp_path) -> None:
    train, val, test = split(records)
    cfg = parse_config(
        {
            **_as_dict(tiny_config(frozen_encoders=True)),
            "train": {**_as_dict(tiny_config())["train"], "epochs": 8, "optimizer": "adamw", "lr": 1e-3},
        }
    )
    folder = liu2022.train_fold(cfg, train, val, CLASSES, tmp_path / "fold1")
    initial = liu2022.build_model(cfg, CLASSES)
    trained = load_model_folder(folder).model
    for (name, before), after in zip(initial.encoders.state_dict().items(), trained.encoders.state_dict().values()):
        torch.testing.assert_close(after, before, rtol=0, atol=0, msg=name)  # encoders untouched
    changed = [
        not torch.equal(a, b) for a, b in zip(initial.discriminator.parameters(), trained.discriminator.parameters())
    ]
    assert all(changed)
    cache = tmp_path / "cache" / "features"
    entries = sorted(cache.rglob("*.npy"))
    assert len(entries) == len(train) + len(val)  # one entry per image
    with open(tmp_path / "fold1" / "discriminator" / "train_log.csv") as fh:
        losses = [float(row["train_loss"]) for row in csv.DictReader(fh)]
    steps = 4 * 6 * 2 // 16  # per epoch: 4 images x 6 views x 2 regions, batch 16
    assert len(losses) == 8 * steps and np.mean(losses[-steps:]) < 0.8 * np.mean(losses[:steps]), losses
    check_outputs(liu2022.predict_records(folder, test), test)
    # A second fold on the same images reads the features instead of encoding again.
    liu2022.train_fold(cfg, train, val, CLASSES, tmp_path / "fold2")
    assert sorted(cache.rglob("*.npy")) == entries


def test_several_test_regions_per_view_all_vote_and_the_densest_alone_give_the_papers_protocol(
    records, tmp_path
) -> None:
    train, val, test = split(records)
    cfg = tiny_config(frozen_encoders=True)
    folder = liu2022.train_fold(cfg, train, val, CLASSES, tmp_path / "fold1")
    loaded = load_model_folder(folder)
    paper = liu2022.predict_records(loaded, test)  # top_k_test = 1
    loaded.cfg.preprocess.regions.top_k_test = 3
    out = liu2022.predict_records(loaded, test)
    assert list(out) == ["image", "patch", "image_one_region", "patch_one_region"]
    assert len(out["patch"]) == len(test) * 6 * 3 and out["patch"].image_ids[0] == f"{test[0].image_id}/raw/0"
    for method in ("image", "patch"):  # the densest region of each view: the same samples, the same scores
        assert out[f"{method}_one_region"].image_ids == paper[method].image_ids
        np.testing.assert_allclose(out[f"{method}_one_region"].probs, paper[method].probs, atol=1e-6)
    votes = out["patch"].predicted.reshape(len(test), 18)
    for j in range(len(test)):  # every region of every view votes
        counts = np.bincount(votes[j], minlength=4)
        assert counts[out["image"].predicted[j]] == counts.max()


def test_colour_jitter_changes_live_training_samples_and_frozen_mode_rejects_it(records, tmp_path) -> None:
    train, val, test = split(records)
    cfg = parse_config(
        {
            **_as_dict(tiny_config()),
            "preprocess": {**_as_dict(tiny_config())["preprocess"], "augment": {"color_jitter": 0.2}},
        }
    )
    model = liu2022.build_model(cfg, CLASSES)
    jittered = liu2022.region_dataset(cfg, train, CLASSES, model.scales, train=True, cache_dir=None)
    evaluated = liu2022.region_dataset(cfg, train, CLASSES, model.scales, train=False, cache_dir=None)
    assert jittered.augmenter is not None and evaluated.augmenter is None  # test images are never jittered
    folder = liu2022.train_fold(cfg, train, val, CLASSES, tmp_path / "fold1")
    check_outputs(liu2022.predict_records(folder, test), test)
    with pytest.raises(ConfigError, match="preprocess.augment"):  # caught when the config is read
        parse_config({**_as_dict(cfg), "model": {**_as_dict(cfg)["model"], "frozen_encoders": True}})


def test_frozen_mode_fits_an_svm_discriminator_that_the_model_folder_keeps(records, tmp_path) -> None:
    train, val, test = split(records)
    cfg = tiny_config(frozen_encoders=True, kwargs={"encoder": "resnet18", "discriminator": "svm"})
    folder = liu2022.train_fold(cfg, train, val, CLASSES, tmp_path / "fold1")
    loaded = load_model_folder(folder)
    kwargs = loaded.info["model_kwargs"]
    assert kwargs["discriminator"] == "svm" and kwargs["svm_seen_classes"] == 4 and kwargs["svm_support_vectors"] >= 4
    assert {"val_accuracy", "val_image_accuracy"} <= set(loaded.info["metrics"])
    out = liu2022.predict_records(loaded, test)
    check_outputs(out, test)
    # The saved head gives the SVM's own probabilities: refit it on the same cached features.
    model = liu2022.build_model(cfg, CLASSES)
    data = liu2022.region_dataset(cfg, train, CLASSES, model.scales, train=True, cache_dir=tmp_path / "cache")
    svm = SVMDiscriminator(4).fit_features(extract_features(model, data, tmp_path / "cache" / "features"))
    test_data = liu2022.region_dataset(cfg, test, CLASSES, model.scales, train=False, cache_dir=None)
    expected = svm.predict_proba(extract_features(model, test_data).features)
    np.testing.assert_allclose(out["patch"].probs, expected, atol=1e-5)


def _as_dict(cfg: ExperimentConfig) -> dict:
    return config_to_dict(cfg)


class ScriptedModel(nn.Module):
    """Returns prepared probability rows in call order (to stage a 3-3 tie between views)."""

    scales = (0, 1, 2)

    def __init__(self, rows: np.ndarray) -> None:
        super().__init__()
        self.rows = torch.as_tensor(rows, dtype=torch.float32)
        self.seen = 0
        self.crop_shapes: list[tuple[int, ...]] = []

    def predict_proba(self, x: torch.Tensor) -> torch.Tensor:
        self.crop_shapes += [tuple(s.shape) for s in x]
        out = self.rows[self.seen : self.seen + len(x)]
        self.seen += len(x)
        return out


def test_each_test_image_gives_six_views_of_three_crops_and_ties_go_to_the_summed_probability(
    records, tmp_path
) -> None:
    _, _, test = split(records)
    test = test[:2]
    cfg = tiny_config()
    # Image 1: three views say Normal (0.4), three say Invasive (0.8): a 3-3 tie -> Invasive (2.4 > 1.5 summed).
    tie = [[0.4, 0.3, 0.3, 0.0]] * 3 + [[0.1, 0.0, 0.1, 0.8]] * 3
    clear = [[0.1, 0.7, 0.1, 0.1]] * 4 + [[0.0, 0.0, 1.0, 0.0]] * 2  # image 2: Benign 4-2
    model = ScriptedModel(np.array(tie + clear))
    loaded = _loaded(model, cfg)
    out = liu2022.predict_records(loaded, test, batch_size=4)
    assert model.crop_shapes == [(3, 3, 32, 32)] * 12  # 2 images x 6 views, each 3 crops (coarse -> fine)
    assert out["image"].predicted.tolist() == [3, 1]
    assert out["patch"].predicted.tolist() == [0, 0, 0, 3, 3, 3, 1, 1, 1, 1, 2, 2]
    np.testing.assert_allclose(out["image"].extra["view_disagreement"], [0.5, 2 / 6])


def _loaded(model: nn.Module, cfg: ExperimentConfig) -> LoadedModel:
    return LoadedModel(model=model, info={}, classes=CLASSES, pipeline="liu2022", cfg=cfg, path=Path("."))


def test_random_region_control_picks_other_windows_of_the_same_sizes(records, tmp_path) -> None:
    train, _, _ = split(records)
    density = tiny_config()
    random = parse_config(
        {
            **_as_dict(density),
            "preprocess": {**_as_dict(density)["preprocess"], "regions": {"top_k_train": 2, "selection": "random"}},
        }
    )
    kremmed = liu2022.region_dataset(density, train[:1], CLASSES, (0, 1, 2), train=True, cache_dir=tmp_path)
    drawn = liu2022.region_dataset(random, train[:1], CLASSES, (0, 1, 2), train=True, cache_dir=tmp_path)
    assert drawn.selection == "random" and kremmed.selection == "density"
    for v in range(6):
        a, b = kremmed.regions(0, v), drawn.regions(0, v)
        assert [box[2:] for r in a for box in r.boxes] == [box[2:] for r in b for box in r.boxes]  # window sizes
        assert [r.boxes for r in a] != [r.boxes for r in b]  # positions
    assert not torch.equal(kremmed[0][0], drawn[0][0])


def test_config_mistakes_name_the_key() -> None:
    cfg = tiny_config()
    svm = parse_config({**_as_dict(cfg), "model": {"name": "msmv_pfenet", "kwargs": {"discriminator": "svm"}}})
    with pytest.raises(ConfigError, match="'svm' is fitted on encoder features, so it needs model.frozen_encoders"):
        liu2022.build_model(svm, CLASSES)
    other = parse_config({**_as_dict(cfg), "model": {"name": "resnet18"}})
    with pytest.raises(ConfigError, match="model.name is 'resnet18'"):
        liu2022.build_model(other, CLASSES)
    clash = {**_as_dict(cfg), "preprocess": {"input_size": 32, "regions": {"krem": {"output_size": 64}}}}
    with pytest.raises(ConfigError, match="output_size=64 differs from preprocess.input_size=32"):
        parse_config(clash)


def test_encoder_pretraining_trains_each_encoder_alone_before_the_frozen_stage(records, tmp_path) -> None:
    train, val, _ = split(records)
    cfg = tiny_config(frozen_encoders=True, encoder_pretraining={"iterations": 2, "optimizer": "adamw", "lr": 1e-3})
    settings = encoder_pretraining_config(cfg)
    assert settings.iterations == 2 and settings.epochs is None and settings.eval_every is None
    folder = liu2022.train_fold(cfg, train, val, CLASSES, tmp_path / "fold1")
    loaded = load_model_folder(folder)
    initial, trained = liu2022.build_model(cfg, CLASSES), loaded.model
    for index, level in enumerate(initial.scales):  # every encoder moved, each by its own run
        assert (tmp_path / "fold1" / "pretrain" / f"level{level}" / "checkpoints" / "last.json").is_file()
        before, after = initial.encoders[index].state_dict(), trained.encoders[index].state_dict()
        assert not all(torch.equal(before[k], after[k]) for k in before)
    # the frozen stage encoded with the pre-trained encoders: their features are the cached ones
    cache = tmp_path / "cache"
    entries = sorted((cache / "features").rglob("*.npy"))
    assert len(entries) == len(train) + len(val)
    data = liu2022.region_dataset(cfg, train, CLASSES, trained.scales, train=True, cache_dir=cache, stain=loaded.stain)
    extract_features(trained, data, cache / "features", batch_size=16, device="cpu")
    assert sorted((cache / "features").rglob("*.npy")) == entries


def test_scale_classifier_trains_only_its_own_encoder(records) -> None:
    from histobreast.models.msmv import ScaleClassifier

    torch.manual_seed(0)
    model = liu2022.build_model(tiny_config(), CLASSES)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    classifier = ScaleClassifier(model, 1, 4)
    assert {id(p) for p in classifier.parameters()} == (
        {id(p) for p in model.encoders[1].parameters()} | {id(p) for p in classifier.head.parameters()}
    )
    crops = torch.randint(0, 256, (4, 3, 3, 32, 32), dtype=torch.uint8)
    optimizer = torch.optim.SGD(classifier.parameters(), lr=0.1)
    nn.functional.cross_entropy(classifier(crops), torch.tensor([0, 1, 2, 3])).backward()
    optimizer.step()
    after = model.state_dict()
    changed = {k.split(".")[1] for k in before if k.startswith("encoders.") and not torch.equal(before[k], after[k])}
    assert changed == {"1"}
    # its input is the same normalised crop the full model gives that encoder
    model.eval(), classifier.eval()
    torch.testing.assert_close(
        model.encode(crops)[:, 1], classifier.encoder((crops[:, 1].float() - model.uint8_mean) / model.uint8_std)
    )


def test_cross_fitting_encodes_each_training_image_with_encoders_that_never_saw_it(
    records, tmp_path, monkeypatch
) -> None:
    train, val = records[0::3] + records[1::3], records[2::3]
    cfg = tiny_config(
        frozen_encoders=True, cross_fit=2, encoder_pretraining={"iterations": 2, "optimizer": "adamw", "lr": 1e-3}
    )
    # a BACH tree: the parts are contiguous image-number ranges per class (here, each class whole)
    cfg = parse_config({**_as_dict(cfg), "data": {"root": str(records[0].path.parents[1])}})
    pretrained, encoded = [], []  # (encoders' identity, image ids) of every pre-training and encoding
    real_pretrain, real_extract = liu2022.pretrain_encoders, liu2022.extract_features

    def pretrain(cfg, model, data, *args, **kwargs):  # the whole training set, or a Subset of its samples
        regions, samples = (data.dataset, data.indices) if isinstance(data, Subset) else (data, range(len(data)))
        pretrained.append((id(model), {regions.records[regions.sample_image[i]].image_id for i in samples}))
        return real_pretrain(cfg, model, data, *args, **kwargs)

    def extract(model, data, *args, **kwargs):
        features = real_extract(model, data, *args, **kwargs)
        encoded.append((id(model), {r.image_id for r in data.records}, len(features)))
        return features

    monkeypatch.setattr(liu2022, "pretrain_encoders", pretrain)
    monkeypatch.setattr(liu2022, "extract_features", extract)
    folder = liu2022.train_fold(cfg, train, val, CLASSES, tmp_path / "fold1")
    train_ids, val_ids = {r.image_id for r in train}, {r.image_id for r in val}
    # the saved model's encoders learnt from every training image; two more sets from the two parts
    assert pretrained[0][1] == train_ids and len(pretrained) == 3
    seen_by = dict(pretrained[1:])
    held_out = [(model, ids, rows) for model, ids, rows in encoded if model in seen_by]
    assert len(held_out) == 2
    assert set().union(*(ids for _, ids, _ in held_out)) == train_ids  # every training image, once
    assert sum(len(ids) for _, ids, _ in held_out) == len(train_ids)
    for model, ids, rows in held_out:
        assert ids and not ids & seen_by[model] and ids | seen_by[model] == train_ids
        assert rows == len(ids) * 6 * 2  # six views x top_k_train regions
    # validation vectors come from the saved model's encoders, as the test images' will
    assert [(ids, rows) for model, ids, rows in encoded if model == pretrained[0][0]] == [(val_ids, len(val) * 6)]
    for j in (1, 2):
        assert (tmp_path / "fold1" / "pretrain" / f"bag{j}" / "level0" / "checkpoints" / "last.json").is_file()
    assert load_model_folder(folder).model.scales == liu2022.build_model(cfg, CLASSES).scales


@pytest.mark.parametrize(
    ("model", "message"),
    [
        ({"cross_fit": 2}, "needs frozen_encoders: true and an encoder_pretraining section"),
        ({"cross_fit": 1, "frozen_encoders": True, "encoder_pretraining": {"iterations": 2}}, "must be >= 2 parts"),
    ],
)
def test_cross_fit_config_mistakes_name_the_key(model, message) -> None:
    with pytest.raises(ConfigError, match=f"model.cross_fit.*{message}"):
        tiny_config(**model)
