"""What ``slide predict`` writes from a finished ``tiles.csv``: heatmaps, QuPath GeoJSON, tissue mask, summary.

Everything here is a pure function of tiles.csv, the thumbnail and the mask, so a resumed run writes
the same files as an uninterrupted one. The most suspicious class is the model's last class
(carcinoma, malignant): the summary lists the tiles most likely to be it.
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from shapely.geometry import MultiPolygon, box
from shapely.ops import unary_union

from histobreast.atomic import atomic_write_bytes, atomic_write_json, atomic_write_text
from histobreast.slides.annotations import Region, write_geojson
from histobreast.slides.heatmap import average_heatmaps, write_heatmap_png
from histobreast.slides.tissue import TissueMask

#: QuPath classification colours, by class position.
COLOURS = [(0, 160, 80), (220, 30, 40), (40, 90, 220), (230, 150, 0), (150, 60, 200), (0, 170, 190)]
TOP_TILES = 5


def read_tiles_csv(
    path: str | Path, classes: Sequence[str]
) -> tuple[list[tuple[int, int, int, int]], np.ndarray, list[dict]]:
    """``(level-0 boxes, probabilities (N, C), rows)`` of a tiles.csv."""
    with Path(path).open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    boxes = [(int(r["x"]), int(r["y"]), int(r["w"]), int(r["h"])) for r in rows]
    probs = np.array([[float(r[f"p_{c}"]) for c in classes] for r in rows], np.float64).reshape(len(rows), len(classes))
    return boxes, probs, rows


def _regions(boxes: list, probs: np.ndarray, rows: list[dict], classes: Sequence[str], mpp: float) -> list[Region]:
    """Tiles as detections, then one merged annotation per predicted class."""
    detections = [
        Region(
            row["predicted"],
            box(x, y, x + w, y + h),
            "detection",
            {"tissue": float(row["tissue"]), **{f"p_{c}": float(p) for c, p in zip(classes, prob)}},
        )
        for (x, y, w, h), prob, row in zip(boxes, probs, rows)
    ]
    merged = []
    for name in classes:
        shapes = [d.geometry for d in detections if d.label == name]
        if shapes:
            union = unary_union(shapes)
            union = union if isinstance(union, MultiPolygon) or union.geom_type == "Polygon" else MultiPolygon()
            merged.append(Region(name, union, "annotation", {"area_mm2": union.area * mpp**2 / 1e6}))
    return detections + merged


def write_slide_outputs(
    slide_dir: Path,
    slide: dict[str, Any],
    thumbnail: np.ndarray,
    mask: TissueMask,
    classes: Sequence[str],
    tile_um: tuple[float, float],
    warnings: list[str],
    run: dict[str, Any],
    ensemble: bool,
) -> dict[str, Any]:
    """Write tissue.png, thumbnail.png, heatmap_<class>.png, tiles.geojson, summary.json and summary.md; return the summary."""
    boxes, probs, rows = read_tiles_csv(slide_dir / "tiles.csv", classes)
    mpp = slide["microns_per_pixel"]
    for name, image in (("tissue.png", mask.image()), ("thumbnail.png", thumbnail[..., ::-1])):
        ok, png = cv2.imencode(".png", np.ascontiguousarray(image))
        atomic_write_bytes(slide_dir / name, png.tobytes())
    heat, _ = average_heatmaps(boxes, probs, thumbnail.shape[:2], mask.downsample)
    heatmaps = {}
    for c, name in enumerate(classes):
        heatmaps[name] = write_heatmap_png(
            slide_dir / f"heatmap_{name}.png", thumbnail, heat[c], f"{Path(slide['path']).name}: P({name})"
        ).name
    regions = _regions(boxes, probs, rows, classes, mpp)
    write_geojson(slide_dir / "tiles.geojson", regions, {c: COLOURS[i % len(COLOURS)] for i, c in enumerate(classes)})
    suspicious = classes[-1]
    order = np.argsort(-probs[:, -1], kind="stable")[:TOP_TILES] if len(rows) else []
    summary = {
        "slide": slide,
        "classes": list(classes),
        "tile_um": list(tile_um),
        "tiles": len(rows),
        "ensemble": ensemble,
        "warnings": warnings,
        "area_mm2": {r.label: round(r.measurements["area_mm2"], 4) for r in regions if r.kind == "annotation"},
        "tiles_per_class": {c: sum(r["predicted"] == c for r in rows) for c in classes},
        "disagreeing_tiles": sum(bool(r["disagree"]) for r in rows),
        "most_suspicious": [
            {
                "x": boxes[i][0],
                "y": boxes[i][1],
                "w": boxes[i][2],
                "h": boxes[i][3],
                f"p_{suspicious}": float(probs[i, -1]),
            }
            for i in order
        ],
        "thumbnail_downsample": mask.downsample,
        "files": {
            "tiles": "tiles.csv",
            "geojson": "tiles.geojson",
            "tissue": "tissue.png",
            "thumbnail": "thumbnail.png",
            "heatmaps": heatmaps,
        },
        "run": run,
    }
    atomic_write_text(slide_dir / "summary.md", summary_markdown(summary))
    atomic_write_json(slide_dir / "summary.json", summary)
    return summary


def summary_markdown(summary: dict[str, Any]) -> str:
    """A slide's summary as a Markdown page: scale, tiles, area per class, most suspicious tiles, files."""
    slide = summary["slide"]
    suspicious = summary["classes"][-1]
    lines = [
        f"# {Path(slide['path']).name}",
        "",
        f"- level 0: {slide['dimensions'][0]} x {slide['dimensions'][1]} px at {slide['microns_per_pixel']:.4g} µm/px"
        f" ({slide['mpp_source']}); tissue {slide['tissue_fraction']:.1%} of the slide",
        f"- {summary['tiles']} tiles of {summary['tile_um'][0]:.0f} x {summary['tile_um'][1]:.0f} µm;"
        f" {summary['disagreeing_tiles']} where the readings disagree",
        *(f"- **warning**: {w}" for w in summary["warnings"]),
        "",
        "| class | tiles | area (mm²) |",
        "| --- | ---: | ---: |",
        *(
            f"| {c} | {summary['tiles_per_class'][c]} | {summary['area_mm2'].get(c, 0.0):.3f} |"
            for c in summary["classes"]
        ),
        "",
        f"Most suspicious tiles (P({suspicious}), level-0 x, y):",
        "",
        *(f"- {t[f'p_{suspicious}']:.3f} at ({t['x']}, {t['y']})" for t in summary["most_suspicious"]),
        "",
        *(f"![P({c})]({f})" for c, f in summary["files"]["heatmaps"].items()),
        "",
        f"QuPath: open the slide, then File > Import objects from file > `{summary['files']['geojson']}`.",
        "",
    ]
    return "\n".join(lines)
