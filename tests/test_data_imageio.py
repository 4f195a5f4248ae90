"""Image I/O: every supported input becomes (H, W, 3) uint8 RGB; every bad file raises naming it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tifffile
from PIL import Image

from histobreast.data.imageio import SkipReport, image_size, list_images, read_rgb, to_rgb_uint8
from histobreast.data.readers import check_images
from histobreast.data.records import ImageRecord
from histobreast.errors import ImageReadError

RNG = np.random.default_rng(0)
RGB = RNG.integers(0, 256, (12, 10, 3), dtype=np.uint8)


def _rgb_ok(image: np.ndarray, shape: tuple[int, int] = (12, 10)) -> None:
    assert image.dtype == np.uint8 and image.shape == (*shape, 3) and image.flags.c_contiguous


def test_rgb_png_and_jpeg_and_tiff(tmp_path: Path) -> None:
    Image.fromarray(RGB).save(tmp_path / "a.png")
    tifffile.imwrite(tmp_path / "a.tif", RGB)
    Image.fromarray(RGB).save(tmp_path / "a.jpg", quality=95)
    for name in ("a.png", "a.tif"):
        assert np.array_equal(read_rgb(tmp_path / name), RGB)
    jpeg = read_rgb(tmp_path / "a.jpg")
    _rgb_ok(jpeg)
    assert image_size(tmp_path / "a.jpg") == (10, 12)


def test_rgba_is_composited_onto_white(tmp_path: Path) -> None:
    rgba = np.zeros((12, 10, 4), np.uint8)
    rgba[..., :3] = 40
    rgba[:6, :, 3] = 255  # top opaque, bottom transparent
    rgba[6:, :5, 3] = 128
    Image.fromarray(rgba, "RGBA").save(tmp_path / "a.png")
    out = read_rgb(tmp_path / "a.png")
    _rgb_ok(out)
    assert (out[:6] == 40).all() and (out[6:, 5:] == 255).all()
    assert (np.abs(out[6:, :5].astype(int) - round(40 * 128 / 255 + 255 * 127 / 255)) <= 1).all()


def test_grayscale_palette_and_16_bit(tmp_path: Path) -> None:
    gray = RGB[..., 0]
    Image.fromarray(gray, "L").save(tmp_path / "gray.png")
    out = read_rgb(tmp_path / "gray.png")
    _rgb_ok(out)
    assert np.array_equal(out, np.repeat(gray[..., None], 3, axis=-1))

    Image.fromarray(RGB).convert("P", palette=Image.Palette.ADAPTIVE, colors=8).save(tmp_path / "pal.png")
    palette_image = Image.open(tmp_path / "pal.png")
    assert palette_image.mode == "P"
    assert np.array_equal(read_rgb(tmp_path / "pal.png"), np.asarray(palette_image.convert("RGB")))

    wide = (RGB.astype(np.uint16) << 8) | 0xFF  # high byte = the 8-bit image
    tifffile.imwrite(tmp_path / "rgb16.tif", wide)
    assert np.array_equal(read_rgb(tmp_path / "rgb16.tif"), RGB)
    Image.fromarray(wide[..., 0].astype(np.uint16)).save(tmp_path / "gray16.png")
    assert Image.open(tmp_path / "gray16.png").mode.startswith("I")
    assert np.array_equal(read_rgb(tmp_path / "gray16.png"), np.repeat(RGB[..., :1], 3, axis=-1))


def test_float_and_planar_arrays() -> None:
    assert np.array_equal(to_rgb_uint8(RGB.astype(np.float32) / 255), RGB)
    assert np.array_equal(to_rgb_uint8(np.moveaxis(RGB, -1, 0)), RGB)
    with pytest.raises(ImageReadError, match="lie in"):
        to_rgb_uint8(np.full((4, 4, 3), 2.0))
    with pytest.raises(ImageReadError, match="unsupported pixel type"):
        to_rgb_uint8(np.zeros((4, 4, 3), np.int64))


def _bad_files(tmp_path: Path) -> dict[str, tuple[Path, str]]:
    Image.fromarray(RGB).save(tmp_path / "good.png")
    data = (tmp_path / "good.png").read_bytes()
    (tmp_path / "empty.png").write_bytes(b"")
    (tmp_path / "truncated.png").write_bytes(data[: len(data) // 2])
    (tmp_path / "corrupt.png").write_bytes(data[:40] + bytes(len(data) - 40))
    (tmp_path / "text.png").write_text("this is not an image\n")
    (tmp_path / "text.tif").write_text("neither is this\n")
    return {
        "empty": (tmp_path / "empty.png", "empty file"),
        "truncated": (tmp_path / "truncated.png", "truncated or corrupt"),
        "corrupt": (tmp_path / "corrupt.png", "corrupt|not an image"),
        "non-image": (tmp_path / "text.png", "not an image"),
        "non-image tif": (tmp_path / "text.tif", "corrupt or unsupported TIFF"),
        "missing": (tmp_path / "missing.png", "file not found"),
    }


def test_bad_files_raise_naming_the_file(tmp_path: Path) -> None:
    for case, (path, reason) in _bad_files(tmp_path).items():
        with pytest.raises(ImageReadError, match=reason) as info:
            read_rgb(path)
        assert info.value.path == path and str(info.value).startswith(f"{path}: "), case


def test_skip_mode_lists_every_skipped_file(tmp_path: Path) -> None:
    bad = _bad_files(tmp_path)
    paths = [tmp_path / "good.png"] + [p for p, _ in bad.values()]
    records = [ImageRecord(path=p, label="x", patient_id=p.stem, microns_per_pixel=1.0, source="folder") for p in paths]
    with pytest.raises(ImageReadError):
        check_images(records)
    skip = SkipReport()
    good = check_images(records, skip)
    assert [r.path.name for r in good] == ["good.png"]
    assert [e.path for e in skip] == paths[1:]
    assert len(skip.lines()) == len(bad) and all(line.startswith(str(tmp_path)) for line in skip.lines())
    # header-only checks cannot see a truncated pixel stream; decoding can
    headers = SkipReport()
    check_images(records, headers, decode=False)
    assert tmp_path / "truncated.png" not in [e.path for e in headers]


def test_list_images_ignores_hidden_and_non_image_files(tmp_path: Path) -> None:
    for name in ("a.png", "b.TIF", ".hidden.png", "notes.txt", ".cache/c.png", "sub/d.jpeg"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"x")
    assert [p.relative_to(tmp_path).as_posix() for p in list_images(tmp_path)] == ["a.png", "b.TIF", "sub/d.jpeg"]


@pytest.mark.realdata
def test_real_rgba_bracs_sample_becomes_rgb(bracs_dir: Path) -> None:
    path = bracs_dir / "images" / "1231_pathologicalbenign_23.png"
    assert Image.open(path).mode == "RGBA"
    image = read_rgb(path)
    _rgb_ok(image, (480, 691))
    assert np.array_equal(image, np.asarray(Image.open(path).convert("RGB")))  # opaque: alpha changes nothing
