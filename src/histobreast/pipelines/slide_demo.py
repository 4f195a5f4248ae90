"""The demo's slide stage: a synthetic slide, ``slide predict`` with the demo's System A model, heatmap + GeoJSON.

The slide (4 x 3 mm at 0.98 µm/px, BreaKHis 200X's scale) holds normal tissue with planted benign,
in situ and invasive regions and a pen stroke; the demo's model was trained on synthetic BreaKHis
200X images, so its tiles are BreaKHis's field of view (700x460 px at 200X), half-overlapping.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from histobreast.pipelines.slide_predict import SlidePredictOptions, predict_slides
from histobreast.slides.synthetic import synth_slide

DEMO_SLIDE_SIZE = (4096, 3072)
DEMO_SLIDE_MPP = 0.98


def demo_slide_stage(
    out_dir: str | Path, model_folder: str | Path, seed: int = 0, say: Callable[[str], None] = print
) -> dict[str, Any]:
    """Write ``out_dir/synthetic_slide.tif`` (+ its annotations) and ``out_dir/predictions/``; returns
    the numbers the demo report shows and the summary page to link."""
    out = Path(out_dir)
    slide = synth_slide(out / "synthetic_slide.tif", DEMO_SLIDE_SIZE, DEMO_SLIDE_MPP, seed=seed)
    options = SlidePredictOptions(overlap=0.5, batch_size=64)
    (summary,) = predict_slides([slide.path], model_folder, out / "predictions", options, say=say)
    return {
        "tiles": summary["tiles"],
        "area_mm2": summary["area_mm2"],
        "summary": str(Path("predictions") / slide.path.stem / "summary.md"),
    }
