"""Slide reading, inspection and tissue masks on the five real slide files in ../shared/data/wsi."""

from __future__ import annotations

import cv2
import pytest
from typer.testing import CliRunner

from histobreast.cli import app
from histobreast.slides.inspect import inspect_slide
from histobreast.slides.reader import SlideError, open_slide
from histobreast.slides.tissue import detect_tissue, stain_problem

pytestmark = pytest.mark.realdata

#: Tissue fractions measured once (2026-12-03, thumbnails of 1024 px) with a margin: 36.7% and 63.5%.
TISSUE_RANGES = {"CMU-1-Small-Region.svs": (0.30, 0.43), "tcga-cr-7395-01a-01-ts1.svs": (0.57, 0.70)}


def test_cmu_svs_reads_with_its_scale(wsi_dir):
    with open_slide(wsi_dir / "CMU-1-Small-Region.svs") as slide:
        assert slide.mpp == pytest.approx(0.499) and slide.mpp_source == "file"
        assert slide.objective == 20 and slide.format == "aperio" and slide.backend == "openslide"
        assert slide.dimensions == (2220, 2967)
        assert {"label", "macro", "thumbnail"} <= set(slide.associated_images)
        # a physical-scale read: 100x100 µm at 1 µm/px from level 0 at 0.499 µm/px
        assert slide.read_at_scale((500, 500, 200, 200), 0.998).shape == (100, 100, 3)


def test_tcga_svs_is_refused_without_mpp_and_reads_both_levels_with_it(wsi_dir):
    path = wsi_dir / "tcga-cr-7395-01a-01-ts1.svs"
    with pytest.raises(SlideError, match="no µm/px in the file; give the scale with --mpp") as err:
        open_slide(path)
    assert str(path) in str(err.value) and "\n" not in str(err.value)
    with open_slide(path, mpp=0.5) as slide:
        assert slide.mpp_source == "given" and slide.level_dimensions == [(4443, 3567), (2221, 1783)]
        for level in (0, 1):
            assert slide.read_region((2000, 1500), level, (32, 32)).shape == (32, 32, 3)
        assert slide.best_level(2.0) == 1


@pytest.mark.parametrize(
    ("name", "expected"),
    [("kidney-48-5.tif", "looks like IHC, not H&E"), ("test3-DAPI-2.ndpi", "looks like fluorescence")],
)
def test_non_he_slides_are_read_and_flagged(wsi_dir, name, expected):
    report = inspect_slide(wsi_dir / name)
    assert not report.refused
    assert any(expected in p and p.startswith("not brightfield H&E") for p in report.problems), report.problems


def test_dicom_is_refused_in_one_line(wsi_dir):
    path = wsi_dir / "small_dicom.dcm"
    with pytest.raises(SlideError) as err:
        open_slide(path)
    message = str(err.value)
    assert message.startswith(str(path)) and "\n" not in message
    assert "ImageType is missing" in message and "wsidicom" in message and "openslide 4" in message


def test_dicom_with_its_two_defects_mended_reads_through_openslide(wsi_dir, tmp_path):
    """What the shared DICOM lacks, exactly: with ImageType set and its YCbCr JPEG frames declared as
    such (the file says RGB), openslide 4 reads it pixel for pixel as PIL decodes the frames; wsidicom
    still refuses it (no pixel spacing), and the scale must be given."""
    import io

    import numpy as np
    import pydicom
    from PIL import Image
    from pydicom.encaps import generate_frames

    ds = pydicom.dcmread(wsi_dir / "small_dicom.dcm")
    ds.ImageType = ["ORIGINAL", "PRIMARY", "VOLUME", "NONE"]
    ds.PhotometricInterpretation = "YBR_FULL_422"
    ds.save_as(tmp_path / "mended.dcm")
    first_frame = next(generate_frames(ds.PixelData, number_of_frames=int(ds.NumberOfFrames)))
    expected = np.asarray(Image.open(io.BytesIO(first_frame)).convert("RGB"))
    with pytest.raises(SlideError, match="no µm/px in the file"):
        open_slide(tmp_path / "mended.dcm")
    with open_slide(tmp_path / "mended.dcm", mpp=0.5) as slide:
        assert (slide.backend, slide.format, slide.dimensions) == ("openslide", "dicom", (3236, 2638))
        assert np.abs(slide.read_region((0, 0), 0, (500, 500)).astype(int) - expected).mean() < 1.0


@pytest.mark.parametrize("name", sorted(TISSUE_RANGES))
def test_tissue_masks_are_saved_and_plausible(wsi_dir, tmp_path, name):
    report = inspect_slide(wsi_dir / name, mpp=0.5, masks_dir=tmp_path)
    mask = cv2.imread(str(tmp_path / f"{(wsi_dir / name).stem}.tissue.png"), cv2.IMREAD_GRAYSCALE)
    assert mask is not None and set(mask.ravel().tolist()) <= {0, 255}
    h, w = mask.shape
    for y, x in ((0, 0), (0, w - 1), (h - 1, 0), (h - 1, w - 1)):
        assert mask[y, x] == 0, f"corner ({x}, {y}) is tissue"
    low, high = TISSUE_RANGES[name]
    assert low <= (mask > 0).mean() <= high
    assert ("tissue", f"{(mask > 0).mean():.1%} of the slide") in report.facts


def test_he_slides_pass_the_stain_check(wsi_dir):
    for name in TISSUE_RANGES:
        with open_slide(wsi_dir / name, mpp=0.5) as slide:
            thumbnail, downsample = slide.thumbnail()
            assert stain_problem(thumbnail) is None
            assert detect_tissue(thumbnail, downsample, slide.mpp).fraction > 0.2


def test_truncated_svs_and_non_slide_are_one_line_errors(wsi_dir, tmp_path):
    data = (wsi_dir / "CMU-1-Small-Region.svs").read_bytes()
    truncated = tmp_path / "truncated.svs"
    truncated.write_bytes(data[: len(data) // 2])
    report = inspect_slide(truncated)
    assert report.refused and report.problems, report.problems
    text = tmp_path / "notes.svs"
    text.write_text("not a slide\n")
    with pytest.raises(SlideError, match="not a slide any reader opens"):
        open_slide(text)


def test_cli_inspect_prints_a_table_per_slide(wsi_dir):
    result = CliRunner().invoke(
        app, ["slide", "inspect", str(wsi_dir / "CMU-1-Small-Region.svs"), str(wsi_dir / "tcga-cr-7395-01a-01-ts1.svs")]
    )
    assert result.exit_code == 0, result.output
    assert "0.499 (file)" in result.output and "2: 4443x3567, 2221x1783" in result.output
    assert "no µm/px in the file" in result.output
    refused = CliRunner().invoke(app, ["slide", "inspect", str(wsi_dir / "small_dicom.dcm")])
    assert refused.exit_code == 1 and "refused: DICOM WSI not readable" in refused.output
