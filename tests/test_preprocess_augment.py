"""System A augmentation: exact geometry, no black corners, deterministic under a seed, labels untouched,
materialised copies equal to on-the-fly copies."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from histobreast.data.records import ImageRecord
from histobreast.errors import ConfigError, DatasetError
from histobreast.preprocess.augment import (
    PAPER_COPIES,
    Augmentation,
    AugmentedCopies,
    AugmentParams,
    augment,
    augmented_copy,
    copy_path,
    materialise_copies,
    sample_augmentation,
)
from test_preprocess_images import he_like_image


def _image(height: int = 46, width: int = 70, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(1, 256, size=(height, width, 3), dtype=np.uint8)


def test_identity_flips_and_quarter_turn_are_exact() -> None:
    image = _image()
    assert np.array_equal(Augmentation().apply(image), image)
    assert np.array_equal(Augmentation(flip_horizontal=True).apply(image), image[:, ::-1])
    assert np.array_equal(Augmentation(flip_vertical=True).apply(image), image[::-1])
    square = _image(40, 40)
    assert np.array_equal(Augmentation(angle=90.0).apply(square), np.rot90(square))  # counter-clockwise


def test_shear_moves_rows_sideways() -> None:
    """x-shear of 45 degrees shifts row y by (y - centre) pixels; the centre row stays put."""
    image = _image(41, 81)
    sheared = Augmentation(shear_x=45.0).apply(image)
    assert np.array_equal(sheared[20], image[20])
    assert np.array_equal(sheared[25, 10:70], image[25, 5:65])


@pytest.mark.parametrize("seed", range(5))
def test_no_black_corners_at_any_angle(seed: int) -> None:
    """Reflection padding: a uniform image stays uniform under every rotation and shear."""
    uniform = np.full((60, 90, 3), 180, np.uint8)
    params = AugmentParams(max_shear=20.0)
    out = augment(uniform, np.random.default_rng(seed), params)
    assert out.shape == uniform.shape and (out == 180).all()
    tissue = he_like_image(120, 160, nuclei=40, seed=seed)
    rotated = Augmentation(angle=45.0, shear_x=10.0).apply(tissue)
    assert rotated.min(axis=2).max() > 0 and (rotated.sum(axis=2) > 60).all()  # no black pixel anywhere


def test_samples_stay_in_range_and_cover_any_angle() -> None:
    rng = np.random.default_rng(0)
    samples = [sample_augmentation(rng) for _ in range(400)]
    angles = np.array([s.angle for s in samples])
    shears = np.array([[s.shear_x, s.shear_y] for s in samples])
    assert angles.min() < -150 and angles.max() > 150 and np.abs(angles).max() <= 180
    assert np.abs(shears).max() <= 10.0 and (np.sign(shears) < 0).any() and (np.sign(shears) > 0).any()
    flips = np.array([[s.flip_horizontal, s.flip_vertical] for s in samples])
    assert 0.4 < flips.mean() < 0.6
    with pytest.raises(ConfigError, match="max_shear"):
        AugmentParams(max_shear=60.0)


def test_deterministic_under_a_seed() -> None:
    image = _image(64, 64)
    assert np.array_equal(augment(image, np.random.default_rng(3)), augment(image, np.random.default_rng(3)))
    copies = [augmented_copy(image, "b001", k, seed=11) for k in range(PAPER_COPIES)]
    assert all(np.array_equal(c, augmented_copy(image, "b001", k, seed=11)) for k, c in enumerate(copies))
    assert len({c.tobytes() for c in copies}) == PAPER_COPIES  # eight different images
    assert not np.array_equal(copies[0], augmented_copy(image, "b001", 0, seed=12))
    assert not np.array_equal(copies[0], augmented_copy(image, "b002", 0, seed=11))
    assert not np.array_equal(copies[0], augmented_copy(image, "b001", 0, seed=11, epoch=1))


class _Pairs:
    """A dataset of (image, label) pairs, like ImageDataset without a transform."""

    def __init__(self, images: list[np.ndarray], labels: list[int]) -> None:
        self.images, self.labels = images, labels

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> tuple[np.ndarray, int]:
        return self.images[i], self.labels[i]


def test_augmented_copies_keep_labels_and_order() -> None:
    base = _Pairs([_image(32, 32, seed=s) for s in range(3)], [2, 0, 1])
    data = AugmentedCopies(base, copies=4, seed=5, keys=["a", "b", "c"], transform=lambda x: x.astype(np.float32))
    assert len(data) == 12
    assert [data[i][1] for i in range(12)] == [2] * 4 + [0] * 4 + [1] * 4
    image, label = data[6]  # image 1 ("b"), copy 2
    assert image.dtype == np.float32 and label == 0
    assert np.array_equal(image, augmented_copy(base.images[1], "b", 2, seed=5).astype(np.float32))
    first = data[6][0]
    data.set_epoch(3)
    assert not np.array_equal(data[6][0], first)
    with pytest.raises(IndexError):
        data[12]


def _records(tmp_path, count: int = 2) -> list[ImageRecord]:
    records = []
    for i in range(count):
        path = tmp_path / "src" / f"img{i}.png"
        path.parent.mkdir(exist_ok=True)
        Image.fromarray(_image(40, 50, seed=i)).save(path)
        records.append(
            ImageRecord(
                path=path,
                label=["benign", "malignant"][i % 2],
                patient_id=f"p{i}",
                microns_per_pixel=0.49,
                source="test",
                magnification=40,
                index=i,
            )
        )
    return records


def test_materialised_copies_match_on_the_fly_and_keep_labels(tmp_path) -> None:
    records = _records(tmp_path)
    out = materialise_copies(records, tmp_path / "aug", copies=3, seed=9)
    assert [r.path.name for r in out] == [f"img{i}_aug{k}.png" for i in range(2) for k in range(3)]
    assert all(r.path == copy_path(tmp_path / "aug", records[i // 3], i % 3) for i, r in enumerate(out))
    for i, new in enumerate(out):
        source = records[i // 3]
        assert (new.label, new.patient_id, new.magnification, new.microns_per_pixel, new.index) == (
            source.label,
            source.patient_id,
            source.magnification,
            source.microns_per_pixel,
            source.index,
        )
        assert new.extra == {"augmented_from": str(source.path), "augment_copy": str(i % 3)}
    base = _Pairs([np.asarray(Image.open(r.path)) for r in records], [0, 1])
    on_the_fly = AugmentedCopies(base, copies=3, seed=9, keys=[r.image_id for r in records])
    for i, new in enumerate(out):
        assert np.array_equal(np.asarray(Image.open(new.path)), on_the_fly[i][0])
    assert sorted(p.name for p in (tmp_path / "aug").iterdir()) == sorted(r.path.name for r in out)  # no temp files


def test_materialise_refuses_colliding_names(tmp_path) -> None:
    first = _records(tmp_path, 1)[0]
    other_dir = tmp_path / "other"
    other_dir.mkdir()
    twin = ImageRecord(
        path=other_dir / "img0.png", label="benign", patient_id="p9", microns_per_pixel=0.49, source="test"
    )
    with pytest.raises(DatasetError, match="image id 'img0'"):
        materialise_copies([first, twin], tmp_path / "aug", read_image=lambda p: _image(8, 8))
