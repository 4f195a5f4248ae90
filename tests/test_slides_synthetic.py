"""Synthetic pyramidal slides, tissue masks, annotations in and out, tile grids and averaged heatmaps."""

from __future__ import annotations

import json
import threading

import numpy as np
import pytest
from shapely.geometry import Polygon, box

from histobreast.slides.annotations import (
    AnnotationError,
    Region,
    check_inside,
    map_labels,
    read_annotations,
    write_geojson,
)
from histobreast.slides.heatmap import average_heatmaps
from histobreast.slides.reader import SlideError, _to_rgb, open_slide
from histobreast.slides.synthetic import PEN_RGB, synth_slide
from histobreast.slides.tiling import TileReader, tile_grid
from histobreast.slides.tissue import TissueMask, detect_tissue, stain_problem


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    return synth_slide(tmp_path_factory.mktemp("slide") / "synthetic.tif", (2048, 1536), 1.0, seed=3, variants=2)


def test_synthetic_slide_is_a_pyramid_with_its_scale(synthetic):
    with open_slide(synthetic.path) as slide:
        assert slide.dimensions == (2048, 1536) and slide.mpp == pytest.approx(1.0) and slide.mpp_source == "file"
        assert slide.level_count == 2 and slide.level_downsamples[1] == pytest.approx(4.0)
        corner = slide.read_region((0, 0), 0, (16, 16))
        assert corner.mean() > 235  # glass
        x, y = (int(v) for v in synthetic.regions[0].geometry.centroid.coords[0])
        assert slide.read_region((x, y), 0, (64, 64)).mean() < 220  # stained tissue


@pytest.mark.parametrize("mpp", [0.0, -1.0, float("nan"), float("inf"), 1e308])
def test_an_impossible_mpp_is_refused_by_the_python_api_too(synthetic, mpp):
    with pytest.raises(SlideError, match="--mpp"):  # 1e308 once passed as "a positive number"
        open_slide(synthetic.path, mpp)


def test_tissue_mask_finds_the_oval_not_the_pen_or_glass(synthetic):
    with open_slide(synthetic.path) as slide:
        thumbnail, downsample = slide.thumbnail(512)
        mask = detect_tissue(thumbnail, downsample, slide.mpp)
    assert stain_problem(thumbnail) is None
    pen = np.all(np.abs(thumbnail.astype(int) - PEN_RGB) < 40, axis=2)
    assert pen.sum() > 50 and not mask.mask[pen].any()
    true = np.zeros_like(mask.mask)
    yy, xx = np.mgrid[: true.shape[0], : true.shape[1]]
    cx, cy = synthetic.tissue.centroid.coords[0]
    inside = ((xx * downsample - cx) / (0.38 * 2048)) ** 2 + ((yy * downsample - cy) / (0.4 * 1536)) ** 2 <= 1
    dice = 2 * (mask.mask & inside).sum() / (mask.mask.sum() + inside.sum())
    assert dice > 0.85 and not mask.mask[~inside].mean() > 0.02


@pytest.mark.parametrize("kind", ["imagescope", "asap", "geojson"])
def test_annotation_files_round_trip(synthetic, kind):
    regions = read_annotations(synthetic.annotation_files[kind])
    assert [r.label for r in regions] == [r.label for r in synthetic.regions]
    for read, planted in zip(regions, synthetic.regions):
        assert read.geometry.is_valid
        assert read.geometry.symmetric_difference(planted.geometry).area < 0.01 * planted.geometry.area


def test_imagescope_label_from_attribute_value(tmp_path):
    xml = tmp_path / "bach.xml"
    xml.write_text(
        '<Annotations><Annotation Id="1"><Regions><Region Id="1" Text="">'
        '<Attributes><Attribute Name="Description" Value="In situ"/></Attributes>'
        '<Vertices><Vertex X="10" Y="10"/><Vertex X="50" Y="10"/><Vertex X="50" Y="40"/></Vertices>'
        "</Region></Regions></Annotation></Annotations>"
    )
    (region,) = read_annotations(xml)
    assert region.label == "In situ" and region.geometry.area == pytest.approx(600)


def test_unknown_class_and_region_outside_are_refused(tmp_path):
    path = tmp_path / "a.geojson"
    write_geojson(path, [Region("Tumour-ish", box(0, 0, 10, 10)), Region("Benign", box(90, 90, 300, 120))])
    regions = read_annotations(path)
    with pytest.raises(AnnotationError, match=r"a\.geojson: annotation class 'Tumour-ish' is not in the class map"):
        map_labels(regions, {"Benign": "non-carcinoma", "In situ": "carcinoma"}, path)
    assert map_labels(regions[1:], {"benign": "non-carcinoma"}, path)[0].label == "non-carcinoma"
    with pytest.raises(AnnotationError, match=r"region 2 \(Benign\) spans x 90\.\.300.*outside the 200x200 slide"):
        check_inside(regions, (200, 200), path)
    broken = tmp_path / "broken.xml"
    broken.write_text("<Annotations><Annotation>")
    with pytest.raises(AnnotationError, match="broken.xml: not a readable XML"):
        read_annotations(broken)


def test_tile_grid_is_physical_and_in_level_zero_pixels():
    mask = TissueMask(np.zeros((100, 100), bool), downsample=10.0)
    mask.mask[:, :50] = True  # left half of a 1000x1000 px slide
    tiles = tile_grid((1000, 1000), 0.5, (100.0, 50.0), mask)  # 200x100 px tiles
    assert {(t.w, t.h) for t in tiles} == {(200, 100)}
    assert {t.x for t in tiles} == {0, 200, 400} and len(tiles) == 30  # x=400: half tissue, kept at 0.5
    overlapped = tile_grid((1000, 1000), 0.5, (100.0, 50.0), mask, overlap=0.5, min_tissue=0.99)
    assert sorted({t.x for t in overlapped}) == [0, 100, 200, 300]
    assert all(t.tissue == 1.0 for t in overlapped)


def test_overlapping_tiles_are_averaged_not_overwritten():
    boxes = [(0, 0, 20, 20), (10, 0, 20, 20)]
    probs = np.array([[1.0, 0.0], [0.0, 1.0]])
    heat, count = average_heatmaps(boxes, probs, (4, 4), 10.0)
    assert count[0].tolist() == [1, 2, 1, 0]
    assert heat[1, 0, :3].tolist() == [0.0, 0.5, 1.0] and np.isnan(heat[1, 0, 3])


def test_tile_reader_thread_and_workers_read_the_same_pixels(synthetic):
    with open_slide(synthetic.path) as slide:
        tiles = tile_grid(slide.dimensions, 1.0, (256.0, 256.0), TissueMask(np.ones((6, 8), bool), 256.0))[:6]
        chunks = [tiles[:4], tiles[4:]]
        direct = [slide.read_box(t.box, (64, 64)) for t in tiles]
        with TileReader(slide, (64, 64)) as reader:
            here = [a for batch in reader.batches(chunks) for a in batch]
        with TileReader(slide, (64, 64), workers=1) as reader:
            there = [a for batch in reader.batches(chunks) for a in batch]
    assert len(here) == 6 and all(np.array_equal(a, b) and np.array_equal(a, c) for a, b, c in zip(here, there, direct))


def test_tile_reader_reads_the_next_chunk_while_this_one_is_used(synthetic, monkeypatch):
    with open_slide(synthetic.path) as slide:
        tiles = tile_grid(slide.dimensions, 1.0, (256.0, 256.0), TissueMask(np.ones((6, 8), bool), 256.0))[:6]
        read = threading.Semaphore(0)
        inner = slide.read_box
        monkeypatch.setattr(slide, "read_box", lambda *a: (inner(*a), read.release())[0])
        with TileReader(slide, (64, 64)) as reader:
            batches = reader.batches([tiles[:3], tiles[3:]])
            next(batches)
            # the second chunk's three tiles are read with no further ask (the three of the first are counted too)
            assert all(read.acquire(timeout=30) for _ in range(6))
            assert len(next(batches)) == 3


def test_openslide_reads_the_pixels_of_its_public_read_region(synthetic):
    """The numpy-buffer read gives openslide-python's pixels, opaque or (past the slide's edge) transparent."""
    with open_slide(synthetic.path) as slide:
        assert slide.backend == "openslide"
        for location, level, size in [
            ((100, 200), 0, (300, 170)),
            ((1900, 1400), 0, (300, 300)),
            ((-50, 8), 1, (90, 60)),
        ]:
            public = np.asarray(slide._backend._slide.read_region(location, level, size))
            assert np.array_equal(slide.read_region(location, level, size), _to_rgb(public))


def test_geojson_is_qupath_flavoured(tmp_path):
    path = write_geojson(
        tmp_path / "x.geojson", [Region("carcinoma", Polygon([(0, 0), (4, 0), (4, 3)]), "detection", {"p": 0.5})]
    )
    feature = json.loads(path.read_text())["features"][0]
    assert feature["properties"]["objectType"] == "detection"
    assert feature["properties"]["classification"] == {"name": "carcinoma"}
    assert feature["properties"]["measurements"] == {"p": 0.5}


def test_large_reads_in_bands_match_one_read(synthetic, monkeypatch):
    import histobreast.slides.reader as reader

    with open_slide(synthetic.path) as slide:
        whole = slide.read_box((0, 0, 2048, 1536), (512, 384))
        monkeypatch.setattr(reader, "BAND_PIXELS", 50_000)
        banded = slide.read_box((0, 0, 2048, 1536), (512, 384))
    assert banded.shape == whole.shape and np.abs(banded.astype(int) - whole).mean() < 2
