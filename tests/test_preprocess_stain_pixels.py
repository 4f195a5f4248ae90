"""Reinhard over all pixels (``pixels="all"``, as torchstain and TIAToolbox) against over tissue only
(ours by default): parity with a hand-computed all-pixel transfer, the two differ where there is glass,
the setting travels with the target (JSON, config, ``histobreast stain``)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from skimage.color import lab2rgb, rgb2lab
from typer.testing import CliRunner

from histobreast.cli import app
from histobreast.errors import ConfigError
from histobreast.pipelines.config import parse_config
from histobreast.preprocess.stain import ReinhardNormalizer, create_normalizer, load_normalizer
from histobreast.preprocess.stain_target import fit_stain_normalizer
from test_preprocess_images import he_like_image


def _with_glass(image: np.ndarray, fraction: float) -> np.ndarray:
    """``image`` with its right ``fraction`` replaced by near-white glass (L* about 97)."""
    out = image.copy()
    out[:, int(out.shape[1] * (1 - fraction)) :] = (246, 244, 247)
    return out


def _all_pixel_reinhard(source: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """Reinhard colour transfer by hand: scikit-image LAB, mean and std over every pixel, back to uint8."""
    src, ref = rgb2lab(source).reshape(-1, 3), rgb2lab(reference).reshape(-1, 3)
    lab = (src - src.mean(0)) / src.std(0) * ref.std(0) + ref.mean(0)
    return np.round(np.clip(lab2rgb(lab.reshape(source.shape)), 0, 1) * 255).astype(np.uint8)


@pytest.fixture(scope="module")
def pair() -> tuple[np.ndarray, np.ndarray]:
    """A reference with 20% glass and a paler, bluer source with 50% glass."""
    reference = _with_glass(he_like_image(96, 128, nuclei=40, seed=1), 0.2)
    source = he_like_image(96, 128, nuclei=40, seed=2).astype(np.float32) * (0.85, 0.9, 1.0) + (25, 20, 10)
    return reference, _with_glass(np.clip(source, 0, 255).astype(np.uint8), 0.5)


def test_all_pixel_option_equals_a_hand_computed_all_pixel_transfer(pair) -> None:
    reference, source = pair
    ours = ReinhardNormalizer(pixels="all").fit(reference).normalize(source)
    expected = _all_pixel_reinhard(source, reference)
    difference = np.abs(ours.image.astype(int) - expected)
    assert not ours.fell_back
    # OpenCV's and scikit-image's LAB conversions differ in the last bit: never more than 1 grey level.
    assert difference.max() <= 1 and difference.mean() < 0.5


def test_tissue_statistics_ignore_glass_where_all_pixel_ones_do_not(pair) -> None:
    reference, _ = pair
    cells = he_like_image(96, 64, nuclei=20, seed=4)
    glass = np.full((96, 64, 3), (246, 244, 247), np.uint8)
    little, much = np.hstack([cells, glass[:, :16]]), np.hstack([cells, glass])  # 20% and 50% glass
    outputs = {
        pixels: [ReinhardNormalizer(pixels=pixels).fit(reference).normalize(im).image[:, :64] for im in (little, much)]
        for pixels in ("tissue", "all")
    }
    # Over tissue only, the same cells get the same colours whatever the amount of glass beside them.
    assert np.abs(outputs["tissue"][0].astype(int) - outputs["tissue"][1]).max() <= 1
    # Over all pixels, more glass raises the image mean, so matching it to the target's darkens the cells.
    assert outputs["all"][1].mean() < outputs["all"][0].mean() - 5


def test_pixels_travel_with_the_target(tmp_path, pair) -> None:
    reference, _ = pair
    path = ReinhardNormalizer(pixels="all").fit(reference).save(tmp_path / "t.json")
    assert json.loads(path.read_text())["pixels"] == "all" and load_normalizer(path).pixels == "all"
    legacy = json.loads(path.read_text())
    del legacy["pixels"]  # a target written before the option existed is tissue-only
    (tmp_path / "legacy.json").write_text(json.dumps(legacy))
    assert load_normalizer(tmp_path / "legacy.json").pixels == "tissue"
    (tmp_path / "bad.json").write_text(json.dumps({**legacy, "pixels": "glass"}))
    with pytest.raises(ConfigError, match="bad.json: 'pixels'"):
        load_normalizer(tmp_path / "bad.json")
    with pytest.raises(ConfigError, match="reinhard method only"):
        create_normalizer("macenko", "all")


def _cfg(**stain: object):
    return parse_config({"name": "t", "model": {"name": "resnet18"}, "data": {}, "preprocess": {"stain": stain}})


def test_config_option_and_its_checks(tmp_path, pair) -> None:
    reference, _ = pair
    from PIL import Image

    Image.fromarray(reference).save(tmp_path / "ref.png")
    fitted = fit_stain_normalizer(
        _cfg(method="reinhard", target=str(tmp_path / "ref.png"), pixels="all").preprocess.stain, []
    )
    assert isinstance(fitted, ReinhardNormalizer) and fitted.pixels == "all"
    saved = fitted.save(tmp_path / "all.json")
    with pytest.raises(ConfigError, match="fitted on all pixels, but preprocess.stain.pixels is tissue"):
        fit_stain_normalizer(_cfg(method="reinhard", target=str(saved)).preprocess.stain, [])
    with pytest.raises(ConfigError, match="pixels"):
        _cfg(method="macenko", target="train", pixels="all")


def test_stain_cli_fits_all_pixels_and_apply_checks_it(tmp_path, pair) -> None:
    from PIL import Image

    reference, source = pair
    Image.fromarray(reference).save(tmp_path / "ref.png")
    Image.fromarray(source).save(tmp_path / "src.png")
    runner = CliRunner()
    fitted = runner.invoke(
        app, ["stain", "fit", str(tmp_path / "ref.png"), "--out", str(tmp_path / "t.json"), "--pixels", "all"]
    )
    assert fitted.exit_code == 0, fitted.output
    assert "(all pixels)" in fitted.output and load_normalizer(tmp_path / "t.json").pixels == "all"
    applied = runner.invoke(
        app, ["stain", "apply", str(tmp_path / "t.json"), str(tmp_path / "src.png"), "--out", str(tmp_path / "out")]
    )
    assert applied.exit_code == 0 and "(all pixels)" in applied.output
    expected = ReinhardNormalizer(pixels="all").fit(reference).normalize(source).image
    assert np.array_equal(np.asarray(Image.open(tmp_path / "out" / "src.png")), expected)
    refused = runner.invoke(
        app,
        [
            "stain",
            "apply",
            str(tmp_path / "t.json"),
            str(tmp_path / "src.png"),
            "--out",
            str(tmp_path / "o2"),
            "--pixels",
            "tissue",
        ],
    )
    assert refused.exit_code != 0 and "fitted on all pixels" in str(refused.exception)
    assert not (tmp_path / "o2").exists()
