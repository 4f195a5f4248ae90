"""Spanhol et al. 2016 baseline: patch datasets and the four-member max-rule pipeline on tiny data."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from degenerate_inputs import assert_predict_flags_degenerate_inputs
from histobreast.data.synthetic import synth_bach
from histobreast.datasets.spanhol_patches import SpanholPatchDataset, image_patch_batches, load_scaled
from histobreast.errors import CheckpointError, ConfigError, DatasetError
from histobreast.pipelines import spanhol2016
from histobreast.pipelines.bagging import read_ensemble_folder
from histobreast.pipelines.config import parse_config
from histobreast.pipelines.package import load_model_folder
from histobreast.preprocess.patches import sliding_window_patches
from histobreast.preprocess.transforms import to_model_input
from histobreast.votes import combine_members
from tiny_system_a import one_torch_thread  # noqa: F401 (autouse fixture)

CLASSES = ["Normal", "Invasive"]


@pytest.fixture(scope="module")
def records(tmp_path_factory):
    return synth_bach(tmp_path_factory.mktemp("bach"), per_class=3, size=(96, 72), classes=tuple(CLASSES))


def _config(**spanhol):
    return parse_config(
        {
            "name": "spanhol_tiny",
            "pipeline": "spanhol2016",
            "model": {"name": "spanhol_patch_cnn"},
            "train": {
                "iterations": 2,
                "batch_size": 8,
                "num_workers": 0,
                "device": "cpu",
                "tensorboard": False,
                "progress": False,
            },
            "spanhol": {"patch_sizes": [16, 32], "random_patches": 6, "scale": 0.5, **spanhol},
        }
    )


def test_sliding_patches_are_the_preprocess_windows(records) -> None:
    data = SpanholPatchDataset(records[:2], CLASSES, patch_size=16, overlap=0.5, scale=0.5)
    image = load_scaled(records[0], 0.5)
    assert image.shape == (36, 48, 3)
    expected = sliding_window_patches(image, 16, 0.5)
    first = [i for i in range(len(data)) if data.image_of[i] == 0]
    assert len(first) == len(expected) == 4 * 5  # rows 0,8,16,20 x cols 0,8,16,24,32
    torch.testing.assert_close(torch.stack([data[i][0] for i in first]), to_model_input(expected))
    assert [data[i][1] for i in first] == [CLASSES.index(records[0].label)] * len(first)
    batches = image_patch_batches(image, 16, 0.5, batch_size=7)
    assert [len(b) for b in batches] == [7, 7, 6]
    torch.testing.assert_close(torch.cat(batches), to_model_input(expected))


def test_random_patches_are_seeded_and_inside_the_image(records) -> None:
    def make(seed):
        return SpanholPatchDataset(
            records[:3], CLASSES, patch_size=16, extraction="random", random_patches=5, scale=0.5, seed=seed
        )

    a, b, c = make(0), make(0), make(1)
    assert len(a) == 15
    np.testing.assert_array_equal(a.positions, b.positions)
    assert not np.array_equal(a.positions, c.positions)
    assert a.positions.min() >= 0 and (a.positions + 16 <= np.array([36, 48])).all()
    y, x = a.positions[0]
    torch.testing.assert_close(a[0][0], to_model_input(load_scaled(records[0], 0.5)[y : y + 16, x : x + 16]))


def test_patch_dataset_refuses_bad_labels_and_sizes(records) -> None:
    with pytest.raises(DatasetError, match=str(records[0].path)):
        SpanholPatchDataset(records[:1], ["Benign"], patch_size=16)
    with pytest.raises(DatasetError, match="does not fit"):
        SpanholPatchDataset(records[:1], CLASSES, patch_size=64, scale=0.5)
    with pytest.raises(ConfigError, match="extraction"):
        SpanholPatchDataset(records[:1], CLASSES, patch_size=16, extraction="grid")  # type: ignore[arg-type]


def test_options_are_validated() -> None:
    with pytest.raises(ConfigError, match="spanhol.overlap"):
        _config(overlap=1.0)
    with pytest.raises(ConfigError, match="spanhol.fusion"):
        _config(fusion="product")
    assert [m[0] for m in _config().spanhol.members()] == [
        "patch16_sliding",
        "patch16_random",
        "patch32_sliding",
        "patch32_random",
    ]


def test_four_members_fused_by_max_rule_end_to_end(tmp_path, records) -> None:
    cfg = _config()
    folder = spanhol2016.train_fold(cfg, records[:4], records[4:5], CLASSES, tmp_path / "fold1")
    assert folder == tmp_path / "fold1" / "model"
    ensemble = read_ensemble_folder(folder)
    assert ensemble.rule == "max"
    assert ensemble.member_names() == ["patch16_sliding", "patch16_random", "patch32_sliding", "patch32_random"]
    assert (tmp_path / "fold1" / "patch32_random" / "checkpoints" / "best.json").is_file()
    with pytest.raises(CheckpointError, match="ensemble"):
        load_model_folder(folder)
    assert_predict_flags_degenerate_inputs(folder, records[0].path, tmp_path, small_is_refused=True)  # members too

    methods = spanhol2016.predict_records(folder, records)
    assert list(methods) == ["max_fusion", *ensemble.member_names()]
    members = np.stack([methods[name].probs for name in ensemble.member_names()])
    np.testing.assert_allclose(methods["max_fusion"].probs, combine_members(members, "max").numpy(), rtol=1e-6)
    assert methods["max_fusion"].image_ids == [r.image_id for r in records]

    member = load_model_folder(folder / "patch32_sliding")
    assert member.model.patch_size == 32 and member.info["spanhol"]["extraction"] == "sliding"
    alone = spanhol2016.predict_records(member, records[:2])
    assert list(alone) == ["image"]
    # The member's image probabilities are the mean of its sliding-window patch probabilities.
    image = load_scaled(records[0], 0.5)
    with torch.no_grad():
        patches = member.model.predict_proba(torch.cat(image_patch_batches(image, 32, 0.5)))
    np.testing.assert_allclose(alone["image"].probs[0], patches.mean(dim=0).numpy(), rtol=1e-5)


def test_resume_keeps_finished_members(tmp_path, records) -> None:
    cfg = _config(patch_sizes=[16], extractions=["sliding"])
    folder = spanhol2016.train_fold(cfg, records[:4], [], CLASSES, tmp_path / "fold")
    stamp = json.loads((folder / "patch16_sliding" / "model.json").read_text())["created"]
    again = spanhol2016.train_fold(cfg, records[:4], [], CLASSES, tmp_path / "fold", resume=True)
    assert again == folder
    assert json.loads((folder / "patch16_sliding" / "model.json").read_text())["created"] == stamp


@pytest.mark.realdata
def test_real_bach_images_give_the_configured_patches(bach_dir) -> None:
    from histobreast.data.readers import read_dataset

    records = read_dataset(bach_dir, "bach")[:2]
    data = SpanholPatchDataset(records, sorted({r.label for r in records}), patch_size=64, scale=0.25)
    # 1024x768 copies at a quarter: 256x192; 64 px windows every 32 px: 7 x 5 per image.
    assert [img.shape for img in data.images] == [(192, 256, 3)] * 2
    assert len(data) == 2 * 35
    assert data[0][0].shape == (3, 64, 64)
