"""``slide predict --review``: a case-review card per slide, through the image case review.

A slide's call is the mean probability of its ``TOP_TILES`` most suspicious tiles (top-k pooling:
a small focus of carcinoma makes a carcinoma slide, as a pathologist reads it); the card shows
the slide's thumbnail with those tiles outlined (green where a tile agrees with the slide's call,
red where not), least certain slides first. Slides without a tissue tile have no card.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from histobreast.pipelines.slide_outputs import read_tiles_csv
from histobreast.predictions import Predictions
from histobreast.report import RunInfo, write_case_review
from histobreast.report.case_review import model_description

TOP_TILES = 5
HEADLINE = "slide"


def slide_tables(summaries: Sequence[dict[str, Any]], out_dir: str | Path) -> dict[str, Predictions]:
    """``{"slide": one row per slide, "tiles": its top tiles as windows on the thumbnail}``."""
    out = Path(out_dir)
    classes = summaries[0]["classes"]
    slides, slide_probs, paths, tiles, tile_probs, corners = [], [], [], [], [], []
    for summary in summaries:
        stem = Path(summary["slide"]["path"]).stem
        boxes, probs, _ = read_tiles_csv(out / stem / "tiles.csv", classes)
        if not len(boxes):
            continue
        top = np.argsort(-probs[:, -1], kind="stable")[:TOP_TILES]
        slides.append(stem)
        slide_probs.append(probs[top].mean(axis=0))
        paths.append(str(out / stem / summary["files"]["thumbnail"]))
        for rank, i in enumerate(top, start=1):
            tiles.append(f"{stem}/top{rank}")
            tile_probs.append(probs[i])
            corners.append([v / summary["thumbnail_downsample"] for v in boxes[i]])
    none = np.full(len(slides), -1)
    table = Predictions(classes, slides, np.array(slide_probs).reshape(-1, len(classes)), none, slides, paths=paths)
    regions = np.array(corners).reshape(-1, 4)
    windows = Predictions(
        classes,
        tiles,
        np.array(tile_probs).reshape(-1, len(classes)),
        np.full(len(tiles), -1),
        [t.split("/")[0] for t in tiles],
        extra={f"region_{c}": regions[:, k] for k, c in enumerate("xywh")},
    )
    return {HEADLINE: table, "tiles": windows}


def write_slide_review(
    summaries: Sequence[dict[str, Any]], out_dir: str | Path, review_dir: str | Path, model: str | Path
) -> dict[str, Path] | None:
    """Write the review of ``summaries`` (outputs under ``out_dir``) into ``review_dir``; None when no slide has tiles."""
    tables = slide_tables(summaries, out_dir)
    if not tables[HEADLINE].image_ids:
        return None
    run = RunInfo(
        dataset=", ".join(s["slide"]["path"] for s in summaries),
        split="unlabelled slides",
        model=f"{model} (slide call: mean of the {TOP_TILES} most suspicious tiles)",
        config=f"{model_description(model)} (the model's training config)",
    )
    return write_case_review(tables, HEADLINE, review_dir, run, readings="most suspicious tiles")
