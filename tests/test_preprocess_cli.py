"""``histobreast stain fit/apply`` and ``histobreast krem`` end to end on tiny synthetic images."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from histobreast.cli import app
from histobreast.errors import ConfigError
from histobreast.preprocess.stain import StainError, load_normalizer
from test_preprocess_images import he_like_image

runner = CliRunner()


def _save(path, image: np.ndarray):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(image).save(path)
    return path


@pytest.mark.parametrize("method", ["reinhard", "macenko"])
def test_stain_fit_then_apply_to_files_and_folders(tmp_path, method: str) -> None:
    reference = _save(tmp_path / "ref.png", he_like_image(128, 160, nuclei=80, seed=1))
    target = tmp_path / "target.json"
    result = runner.invoke(app, ["stain", "fit", str(reference), "-o", str(target), "--method", method])
    assert result.exit_code == 0, result.output
    assert json.loads(target.read_text())["method"] == method
    single = _save(tmp_path / "in" / "one.jpg", he_like_image(96, 128, nuclei=40, seed=2))
    folder = tmp_path / "slides"
    _save(folder / "a" / "two.png", he_like_image(96, 128, nuclei=40, seed=3))
    _save(folder / "blank.png", np.full((64, 64, 3), 250, np.uint8))
    out = tmp_path / "out"
    result = runner.invoke(
        app, ["stain", "apply", str(target), str(single), str(folder), str(single), "--out", str(out)]
    )
    assert result.exit_code == 0, result.output
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*.png")) == ["a/two.png", "blank.png", "one.png"]
    assert "2 of 3 images normalised" in result.output
    assert "blank.png: too little tissue" in result.output
    expected = load_normalizer(target)(np.asarray(Image.open(folder / "a" / "two.png")))
    assert np.array_equal(np.asarray(Image.open(out / "a" / "two.png")), expected)
    assert np.array_equal(np.asarray(Image.open(out / "blank.png")), np.full((64, 64, 3), 250, np.uint8))


def test_stain_errors_name_the_file(tmp_path) -> None:
    blank = _save(tmp_path / "blank.png", np.full((64, 64, 3), 250, np.uint8))
    result = runner.invoke(app, ["stain", "fit", str(blank), "-o", str(tmp_path / "t.json")])
    assert result.exit_code == 1 and isinstance(result.exception, StainError)
    assert str(result.exception).startswith(f"{blank}: cannot fit a Reinhard target: too little tissue")
    target = tmp_path / "t.json"
    target.write_text(json.dumps({"method": "reinhard", "lab_mean": [60, 20, -10], "lab_std": [10, 5, 5]}))
    result = runner.invoke(app, ["stain", "apply", str(target), str(tmp_path / "nope.png"), "--out", str(tmp_path)])
    assert isinstance(result.exception, ConfigError) and "nope.png: not an image file or folder" in str(
        result.exception
    )
    result = runner.invoke(app, ["stain", "apply", str(target), str(tmp_path), "--out", str(tmp_path)])
    assert isinstance(result.exception, ConfigError) and "would overwrite the input" in str(result.exception)


def test_krem_overlay_and_crops(tmp_path) -> None:
    image = _save(tmp_path / "field.png", he_like_image(cluster=(760, 250, 48), seed=3))
    out, crops = tmp_path / "overlay.png", tmp_path / "crops"
    result = runner.invoke(
        app, ["krem", str(image), "--mpp", "0.84", "--out", str(out), "--top-k", "2", "--crops", str(crops)]
    )
    assert result.exit_code == 0, result.output
    overlay = np.asarray(Image.open(out))
    assert overlay.shape == (768, 1024, 3) and not np.array_equal(overlay, np.asarray(Image.open(image)))
    assert sorted(p.name for p in crops.iterdir()) == [f"field_raw_level{k}.png" for k in (1, 2, 3)]
    assert all(Image.open(p).size == (224, 224) for p in crops.iterdir())
    assert "448" in result.output and "nuclei at 0.84" in result.output
    result = runner.invoke(app, ["krem", str(image), "--mpp", "0.84", "--out", str(out), "--view", "diagonal"])
    assert isinstance(result.exception, ConfigError) and "unknown view 'diagonal'" in str(result.exception)
    jpeg = tmp_path / "overlay.jpg"  # the suffix names the format (a .jpg used to hold PNG data)
    assert runner.invoke(app, ["krem", str(image), "--mpp", "0.84", "--out", str(jpeg)]).exit_code == 0
    assert jpeg.read_bytes()[:2] == b"\xff\xd8" and Image.open(jpeg).format == "JPEG"
    result = runner.invoke(app, ["krem", str(image), "--mpp", "0.84", "--out", str(tmp_path / "overlay.xyz")])
    assert isinstance(result.exception, ConfigError) and "unknown image suffix '.xyz'" in str(result.exception)
    assert not (tmp_path / "overlay.xyz").exists()


def test_help_texts() -> None:
    for args in (["stain", "--help"], ["stain", "fit", "--help"], ["stain", "apply", "--help"], ["krem", "--help"]):
        result = runner.invoke(app, args)
        assert result.exit_code == 0 and "Usage" in result.output
    assert "--mpp" in runner.invoke(app, ["krem", "--help"]).output
