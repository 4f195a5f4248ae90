"""Torch datasets over records: shapes, targets, determinism under a seed, per-epoch choices, errors."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from histobreast.data.imageio import read_rgb
from histobreast.data.synthetic import synth_bach
from histobreast.datasets.augmenter import color_jitter
from histobreast.datasets.images import GridPatchDataset, HybridDataset, ImageDataset
from histobreast.engine.distributed import DistributedContext, build_loader
from histobreast.errors import DatasetError
from histobreast.preprocess.config import AugmentConfig
from histobreast.preprocess.patches import grid_patches
from histobreast.preprocess.stain import ReinhardNormalizer
from histobreast.preprocess.transforms import to_model_input

CLASSES = ["Normal", "Benign", "InSitu", "Invasive"]
AUGMENT = AugmentConfig(rotation=180, hflip=True, vflip=True, shear=10, color_jitter=0.1)


@pytest.fixture(scope="module")
def records(tmp_path_factory):
    return synth_bach(tmp_path_factory.mktemp("bach"), per_class=2, size=(160, 120), image_format="png")


def test_image_dataset_resizes_whole_image(records):
    data = ImageDataset(records, CLASSES, size=32)
    image, target = data[2]
    assert image.shape == (3, 32, 32) and image.dtype == torch.float32
    assert target == CLASSES.index(records[2].label)
    assert len(data) == len(records)


def test_image_dataset_at_physical_scale(records):
    mpp = records[0].microns_per_pixel * 2  # half the pixels per side
    crops = ImageDataset(records, CLASSES, size=40, microns_per_pixel=mpp, crop="random")
    whole = ImageDataset(records, CLASSES, size=40, microns_per_pixel=mpp, crop="none")
    assert crops[0][0].shape == (3, 40, 40)
    assert whole[0][0].shape == (3, 60, 80)
    padded = ImageDataset(records, CLASSES, size=100, microns_per_pixel=mpp, crop="center")
    assert padded[0][0].shape == (3, 100, 100)


def test_copies_repeat_records_with_distinct_augmentations(records):
    data = ImageDataset(records, CLASSES, size=32, copies=3, augment=AUGMENT, seed=1)
    assert len(data) == 3 * len(records)
    first, second = data[0], data[1]
    assert first[1] == second[1] == CLASSES.index(records[0].label)
    assert not torch.equal(first[0], second[0])


def test_deterministic_under_seed_and_new_choices_per_epoch(records):
    def make(seed):
        return GridPatchDataset(
            records, CLASSES, grid=(3, 2), patch_size=16, patches_per_image=2, augment=AUGMENT, seed=seed
        )

    a, b, other = make(3), make(3), make(4)
    assert all(torch.equal(a[i][0], b[i][0]) for i in range(len(a)))
    assert not all(torch.equal(a[i][0], other[i][0]) for i in range(len(a)))
    before = [a.patch_index(i) for i in range(len(a))]
    a.set_epoch(1)
    after = [a.patch_index(i) for i in range(len(a))]
    assert before != after
    b.set_epoch(1)
    assert torch.equal(a[5][0], b[5][0])


def test_patch_cap_picks_distinct_patches_per_image(records):
    data = GridPatchDataset(records, CLASSES, grid=(5, 3), patch_size=8, patches_per_image=4, seed=0)
    assert len(data) == 4 * len(records)
    for epoch in range(3):
        data.set_epoch(epoch)
        for image in range(len(records)):
            picked = {data.patch_index(image * 4 + slot)[1] for slot in range(4)}
            assert len(picked) == 4 and picked <= set(range(15))


def test_grid_patches_are_the_images_grid(records):
    data = GridPatchDataset(records, CLASSES, grid=(5, 3), patch_size=16)
    assert len(data) == 15 * len(records)
    expected = to_model_input(grid_patches(read_rgb(records[1].path), (5, 3), 16)[7])
    image, target = data[15 + 7]
    assert torch.equal(image, expected)
    assert target == CLASSES.index(records[1].label)


def test_hybrid_dataset_matches_its_parts(records):
    data = HybridDataset(records, CLASSES, size=24, grid=(5, 3), patch_size=16)
    inputs, target = data[3]
    assert inputs["global"].shape == (3, 24, 24)
    assert inputs["patches"].shape == (15, 3, 16, 16)
    patches = GridPatchDataset(records, CLASSES, grid=(5, 3), patch_size=16)
    assert torch.equal(inputs["patches"][4], patches[3 * 15 + 4][0])
    assert torch.equal(inputs["global"], ImageDataset(records, CLASSES, size=24)[3][0])
    assert target == CLASSES.index(records[3].label)


def test_stain_normaliser_is_applied(records):
    target = ReinhardNormalizer().fit(read_rgb(records[-1].path))
    plain = ImageDataset(records, CLASSES, size=32)[0][0]
    stained = ImageDataset(records, CLASSES, size=32, stain=target)[0][0]
    assert not torch.equal(plain, stained)


def test_unknown_label_names_the_file(records):
    with pytest.raises(DatasetError, match=records[0].path.name):
        ImageDataset(records, ["Benign", "InSitu", "Invasive"])
    unlabelled = [dataclasses.replace(r, label="unknown") for r in records]
    assert ImageDataset(unlabelled, CLASSES, size=16, require_labels=False)[0][1] == -1
    with pytest.raises(DatasetError, match="no records"):
        HybridDataset([], CLASSES)


def test_engine_loader_sets_the_epoch_in_workers(records):
    data = GridPatchDataset(records, CLASSES, grid=(3, 2), patch_size=8, patches_per_image=2, seed=0)
    loader = build_loader(
        data, batch_size=4, device=torch.device("cpu"), ctx=DistributedContext(), seed=0, train=False, num_workers=0
    )
    loader.sampler.set_epoch(2)
    batch = next(iter(loader))[0]
    data.set_epoch(2)
    assert torch.equal(batch[1], data[1][0])


def test_color_jitter_identity_and_range():
    image = np.random.default_rng(0).integers(0, 256, (8, 8, 3), dtype=np.uint8)
    assert np.array_equal(color_jitter(image, 1.0, 1.0, 1.0), image)
    darker = color_jitter(image, 0.5, 1.0, 1.0)
    assert darker.dtype == np.uint8 and darker.mean() < image.mean()


def test_prepared_image_cache_stays_within_its_budget(records):
    one_image = 16 * 16 * 3
    data = ImageDataset(records, CLASSES, size=16, cache_bytes=3 * one_image)
    first = data[0][0]
    for i in range(len(records)):
        data[i]
    assert len(data._cache) == 3 and data._cached_bytes == 3 * one_image
    assert torch.equal(data[0][0], first)  # re-prepared after eviction: the same tensor


def test_datasets_pickle_for_spawned_workers(records):
    import pickle

    from histobreast.preprocess.views import view_reader

    data = ImageDataset(records, CLASSES, size=16, read_image=view_reader("rot90"))
    data[0]
    copy = pickle.loads(pickle.dumps(data))
    assert not copy._cache and torch.equal(copy[0][0], data[0][0])
