"""``slide sample``: paper A's BACH WSI protocol, crops from annotated slides as a folder dataset.

Crops (768x512 px at the slide's level 0 by default, i.e. a field of view in µm fixed by the
slide's scale) are drawn at seeded random positions inside annotated regions (each region's class
through the class map) and inside unannotated tissue (``normal``, mapped the same way). The BACH
map makes normal+benign non-carcinoma and in situ+invasive carcinoma. The output is what
``histobreast train`` reads as it is: ``<class>/<slide>_<n>.png``, ``patients.csv`` (each slide a
patient, so splits keep a slide's crops together), ``histobreast.json`` (the crops' µm/px) and
``crops.csv`` (where every crop came from).
"""

from __future__ import annotations

import csv
import io
import os
import shutil
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from shapely.geometry import Polygon, box
from shapely.ops import unary_union
from shapely.prepared import prep

from histobreast.atomic import atomic_write_bytes, atomic_write_text
from histobreast.data.folder import PATIENTS_CSV
from histobreast.data.records import write_scale_file
from histobreast.errors import ConfigError
from histobreast.slides.annotations import check_inside, lookup_label, read_annotations
from histobreast.slides.reader import open_slide
from histobreast.slides.tissue import detect_tissue

NORMAL = "Normal"  # the label of unannotated tissue, mapped like any annotation class
#: Paper A's binary BACH task, keyed by the names BACH's WSI annotations use.
BACH_WSI_MAP = {
    "Normal": "non-carcinoma",
    "Benign": "non-carcinoma",
    "In situ": "carcinoma",
    "Invasive": "carcinoma",
}
CROPS_CSV = "crops.csv"


@dataclass(frozen=True)
class SampleOptions:
    """Crop size and counts; ``out_mpp`` resamples crops (default: the slide's level-0 scale)."""

    crop_px: tuple[int, int] = (768, 512)  # (width, height) at level 0
    per_region_class: int = 20  # crops per annotation class and slide
    normal: int = 20  # crops of unannotated tissue per slide
    min_inside: float = 0.9  # share of a crop that must lie in its region (or in unannotated tissue)
    out_mpp: float | None = None
    mpp: float | None = None  # the slides' scale when their files have none
    seed: int = 0
    attempts: int = 200  # random positions tried per wanted crop before giving up on a class


def _positions(geometry, crop: tuple[int, int], wanted: int, options: SampleOptions, rng: np.random.Generator) -> list:
    """Up to ``wanted`` crop boxes (x, y) whose ``min_inside`` share lies in ``geometry``."""
    if geometry.is_empty or wanted <= 0:
        return []
    x0, y0, x1, y1 = geometry.bounds
    w, h = crop
    inside = prep(geometry)
    found = []
    for _ in range(wanted * options.attempts):
        if len(found) == wanted:
            break
        x = int(rng.uniform(x0 - w * 0.05, max(x0, x1 - w * 0.95)))
        y = int(rng.uniform(y0 - h * 0.05, max(y0, y1 - h * 0.95)))
        candidate = box(x, y, x + w, y + h)
        if inside.intersects(candidate) and geometry.intersection(candidate).area >= options.min_inside * w * h:
            found.append((x, y))
    return found


def sample_slide(
    slide_path: str | Path,
    annotation_path: str | Path,
    label_map: Mapping[str, str],
    options: SampleOptions = SampleOptions(),
) -> tuple[list[dict], float]:
    """The crops of one slide (dicts: x, y, w, h at level 0, region label, class, ``pixels``) and their µm/px."""
    slide_path = Path(slide_path)
    with open_slide(slide_path, options.mpp) as slide:
        mpp = slide.require_scale()
        regions = read_annotations(annotation_path)
        check_inside(regions, slide.dimensions, annotation_path)
        classes = {r.label: lookup_label(label_map, r.label, annotation_path) for r in regions}
        rng = np.random.default_rng([options.seed, *slide_path.stem.encode()])
        thumbnail, downsample = slide.thumbnail(2048)
        mask = detect_tissue(thumbnail, downsample, mpp)
        contours, _ = cv2.findContours(mask.image(), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
        tissue = unary_union([_contour_polygon(c, downsample) for c in contours if len(c) >= 3])
        annotated = unary_union([r.geometry for r in regions]) if regions else None
        unannotated = tissue.difference(annotated) if annotated is not None else tissue
        plan: list[tuple[str, str, object, int]] = []
        for label in dict.fromkeys(r.label for r in regions):
            geometry = unary_union([r.geometry for r in regions if r.label == label])
            plan.append((label, classes[label], geometry, options.per_region_class))
        if options.normal:
            plan.append(
                (
                    NORMAL,
                    lookup_label(label_map, NORMAL, "the class map (unannotated tissue)"),
                    unannotated,
                    options.normal,
                )
            )
        crops = []
        for label, cls, geometry, wanted in plan:
            for x, y in _positions(geometry, options.crop_px, wanted, options, rng):
                w, h = options.crop_px
                pixels = (
                    slide.read_box((x, y, w, h), (w, h))
                    if options.out_mpp is None
                    else slide.read_at_scale((x, y, w, h), options.out_mpp)
                )
                crops.append({"x": x, "y": y, "w": w, "h": h, "region": label, "class": cls, "pixels": pixels})
    return crops, options.out_mpp or mpp


def _contour_polygon(contour: np.ndarray, downsample: float):
    poly = Polygon(contour.reshape(-1, 2) * downsample)
    return poly if poly.is_valid else poly.buffer(0)


def sample_slides(
    pairs: Sequence[tuple[Path, Path]],
    out_dir: str | Path,
    label_map: Mapping[str, str] = BACH_WSI_MAP,
    options: SampleOptions = SampleOptions(),
    say: Callable[[str], None] = print,
) -> Path:
    """Sample every ``(slide, annotation file)`` pair into the new folder dataset ``out_dir``.

    The dataset is built in a hidden sibling folder and renamed into place when complete, so an
    error (a bad slide or annotation file, named in the message) or a kill leaves no partial dataset.
    """
    out = Path(out_dir)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ConfigError(f"{out}: already exists and is not empty; slide sample writes a new dataset")
    if not pairs:
        raise ConfigError("no slides to sample")
    building = out.parent / f".{out.name}.partial"
    shutil.rmtree(building, ignore_errors=True)
    try:
        scale = _write_dataset(pairs, building, label_map, options, say)
        write_scale_file(building, scale)
        if out.exists():
            out.rmdir()
        os.replace(building, out)
    finally:
        shutil.rmtree(building, ignore_errors=True)
    return out


def _write_dataset(
    pairs: Sequence[tuple[Path, Path]],
    out: Path,
    label_map: Mapping[str, str],
    options: SampleOptions,
    say: Callable[[str], None],
) -> float:
    """Crops, crops.csv and patients.csv of every pair into ``out``; returns the crops' µm/px."""
    scales = set()
    table, patients = io.StringIO(), io.StringIO()
    crops_csv, patients_csv = csv.writer(table, lineterminator="\n"), csv.writer(patients, lineterminator="\n")
    crops_csv.writerow(["image", "slide", "x", "y", "w", "h", "region", "label"])
    patients_csv.writerow(["image", "patient", "label"])
    for slide_path, annotation_path in pairs:
        slide_path = Path(slide_path)
        crops, scale = sample_slide(slide_path, annotation_path, label_map, options)
        scales.add(scale)
        for n, crop in enumerate(crops, start=1):
            image = f"{crop['class']}/{slide_path.stem}_{n:05d}.png"
            ok, png = cv2.imencode(".png", np.ascontiguousarray(crop["pixels"][..., ::-1]))
            atomic_write_bytes(out / image, png.tobytes())
            box_ = [crop["x"], crop["y"], crop["w"], crop["h"]]
            crops_csv.writerow([image, slide_path.name, *box_, crop["region"], crop["class"]])
            patients_csv.writerow([image, slide_path.stem, crop["class"]])
        counts = {c: sum(k["class"] == c for k in crops) for c in dict.fromkeys(k["class"] for k in crops)}
        say(f"{slide_path.name}: {len(crops)} crops " + ", ".join(f"{c} {n}" for c, n in counts.items()))
    if len(scales) > 1:
        raise ConfigError(f"slides have different scales {sorted(scales)}; give --out-mpp so the crops share one")
    atomic_write_text(out / CROPS_CSV, table.getvalue())
    atomic_write_text(out / PATIENTS_CSV, patients.getvalue())
    return scales.pop()
