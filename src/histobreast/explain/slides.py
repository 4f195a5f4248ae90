"""``slide predict --explain N``: class activation maps of a slide's N most suspicious tiles.

After ``slide predict`` has written a slide's ``tiles.csv``, the N tiles most likely to be the
model's last class (carcinoma, malignant: the summary's most suspicious) are read again at the
model's scale, exactly as they were classified, and explained by
:func:`histobreast.explain.api.explain` (any model or ensemble folder). Written into
``OUT/<slide>/explained/``: the tiles themselves (``tiles/top<rank>_x<X>_y<Y>.png``, level-0
corner in the name) and :func:`~histobreast.explain.api.write_explanations`' figures, maps and
``explanations.json``, written last (a folder without it is an interrupted run's). A rerun, with
another N or method, replaces the folder whole.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from histobreast.atomic import atomic_write_bytes
from histobreast.data.records import ImageRecord
from histobreast.explain.api import explain, write_explanations
from histobreast.explain.cam import DEFAULT_METHOD, check_method
from histobreast.pipelines.slide_model import LoadedTileModel
from histobreast.pipelines.slide_outputs import read_tiles_csv
from histobreast.pipelines.tile_model import TILE_LABEL
from histobreast.slides.reader import open_slide

EXPLAINED = "explained"


def explain_slide_tiles(
    summary: dict[str, Any],
    out_dir: str | Path,
    model: LoadedTileModel,
    count: int,
    *,
    method: str = DEFAULT_METHOD,
    device: str = "auto",
) -> Path | None:
    """Explain the ``count`` most suspicious tiles of the slide ``summary`` describes (outputs under
    ``out_dir``); returns its ``explanations.json``, or None for a slide without tiles."""
    check_method(method)
    slide_path = Path(summary["slide"]["path"])
    slide_dir = Path(out_dir) / slide_path.stem
    boxes, probs, _ = read_tiles_csv(slide_dir / "tiles.csv", summary["classes"])
    if not boxes or count < 1:
        return None
    top = np.argsort(-probs[:, -1], kind="stable")[:count]  # the order of the summary's most_suspicious
    folder = slide_dir / EXPLAINED
    shutil.rmtree(folder, ignore_errors=True)
    records = []
    with open_slide(slide_path, summary["slide"]["microns_per_pixel"]) as slide:
        for rank, i in enumerate(top, start=1):
            x, y, w, h = boxes[i]
            tile = slide.read_at_scale((x, y, w, h), model.microns_per_pixel)
            ok, png = cv2.imencode(".png", np.ascontiguousarray(tile[..., ::-1]))
            if not ok:
                raise OSError(f"cannot encode tile ({x}, {y}) of {slide_path} as PNG")
            path = atomic_write_bytes(folder / "tiles" / f"top{rank}_x{x}_y{y}.png", png.tobytes())
            records.append(ImageRecord(path, TILE_LABEL, slide_path.stem, model.microns_per_pixel, "slide"))
    target: Any = model.path if model.is_ensemble else model.members["model"]
    found = explain(target, records, method=method, device=device)
    return write_explanations(found, folder, model=str(model.path))
