"""``slide predict``: a model applied to every tissue tile of whole slides, at the scale it was trained on.

Per slide, into ``OUT/<slide name>/``: ``tiles.csv`` (level-0 x, y, w, h, tissue fraction,
per-class probabilities, predicted class, the readings that disagree with it), ``heatmap_<class>.png``
(overlapping tiles averaged), ``tiles.geojson`` (QuPath: tiles as detections, merged per-class
regions as annotations), ``tissue.png`` (the mask), ``summary.json`` and ``summary.md``.

Work is done in chunks of ``batch_size`` tiles, each written atomically under ``.partial/`` as it
finishes; a killed run started again with the same settings reads the finished chunks and goes on
at the next unwritten one, and the final files are built from the chunks alone, so they are the
same as an uninterrupted run's. Slides are shared out by ``shard = (K, N)`` (batch-scheduler arrays;
under torchrun, ``RANK``/``WORLD_SIZE`` give the default share).

Torch-free: the model is a :class:`~histobreast.pipelines.tile_model.TileModel`; a model folder's
(PyTorch) is loaded here only when a path is given, an exported folder's comes from
:func:`histobreast.runtime.slides.load_exported_tile_model` (onnxruntime, no torch).
"""

from __future__ import annotations

import csv
import io
import json
import logging
import os
import shutil
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from histobreast.atomic import atomic_write_json, atomic_write_text
from histobreast.errors import ConfigError
from histobreast.pipelines.slide_outputs import write_slide_outputs
from histobreast.pipelines.tile_model import TileModel
from histobreast.slides.reader import open_slide
from histobreast.slides.tiling import Tile, TileReader, tile_grid
from histobreast.slides.tissue import detect_tissue, stain_problem

log = logging.getLogger(__name__)

PARTIAL = ".partial"
RUN_JSON = "run.json"
SUMMARY_JSON = "summary.json"


@dataclass(frozen=True)
class SlidePredictOptions:
    """How slides are tiled and read; every field is part of a run's identity (see ``resume``)."""

    tile_um: tuple[float, float] | None = None  # the model's field of view (default: from the model)
    overlap: float = 0.0  # share of a tile that the next one overlaps
    min_tissue: float = 0.5  # tiles with less tissue (mask share) are skipped
    mpp: float | None = None  # the slides' µm/px when their files have none
    batch_size: int = 32  # tiles per chunk: the unit of inference and of resuming
    thumbnail_size: int = 1024  # longer side of the thumbnail (tissue mask, heatmaps)


def check_options(options: SlidePredictOptions) -> None:
    """Refuse options no run can use, naming the command-line option (before any slide is opened)."""
    if not 0 <= options.overlap < 0.95:
        raise ConfigError(f"--overlap: must be in [0, 0.95), got {options.overlap}")
    if not 0 <= options.min_tissue <= 1:
        raise ConfigError(f"--min-tissue: must be between 0 and 1, got {options.min_tissue}")
    if options.batch_size < 1:
        raise ConfigError(f"--batch-size: must be at least 1, got {options.batch_size}")
    if options.mpp is not None and not 0 < options.mpp < float("inf"):
        raise ConfigError(f"--mpp: must be a positive number of µm per pixel, got {options.mpp}")


def parse_shard(text: str | None) -> tuple[int, int]:
    """``"K/N"`` -> ``(K, N)`` with 1 <= K <= N; ``None``: torchrun's ``RANK``/``WORLD_SIZE`` or ``(1, 1)``."""
    if text is None:
        return int(os.environ.get("RANK", 0)) + 1, int(os.environ.get("WORLD_SIZE", 1))
    try:
        k, n = (int(v) for v in text.split("/"))
    except ValueError:
        raise ConfigError(f"--shard: expected K/N such as 2/8, got {text!r}") from None
    if not 1 <= k <= n:
        raise ConfigError(f"--shard: K must be between 1 and N, got {text!r}")
    return k, n


def parse_pair(text: str, option: str) -> tuple[float, float]:
    """``"WIDTHxHEIGHT"`` (or one number for a square) -> ``(width, height)``; ``option`` names it in errors."""
    try:
        parts = [float(v) for v in text.lower().split("x")]
    except ValueError:
        parts = []
    if len(parts) not in (1, 2) or any(not p > 0 for p in parts):
        raise ConfigError(f"{option}: expected WIDTH or WIDTHxHEIGHT (positive numbers), got {text!r}")
    return (parts[0], parts[-1])


def describe_summary(summary: dict[str, Any], out_dir: str | Path) -> str:
    """One line per predicted slide: ``name: N tiles (class area, ...) -> OUT/name``."""
    name = Path(summary["slide"]["path"]).stem
    areas = ", ".join(f"{c} {a:.2f} mm²" for c, a in summary["area_mm2"].items()) or "no tiles"
    return f"{name}: {summary['tiles']} tiles ({areas}) -> {Path(out_dir) / name}"


def shard_slides(slides: Sequence[Path], shard: tuple[int, int]) -> list[Path]:
    """This shard's slides: every N-th of the sorted list, starting at the K-th."""
    k, n = shard
    return [s for i, s in enumerate(sorted(slides)) if i % n == k - 1]


def _chunk_rows(tiles: Sequence[Tile], probs: np.ndarray, readings: dict[str, np.ndarray], classes: list[str]) -> str:
    """The CSV rows (no header) of one chunk: probabilities rounded to 6 decimals."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    predicted = probs.argmax(axis=1)
    for i, tile in enumerate(tiles):
        disagree = [name for name, p in readings.items() if int(p[i].argmax()) != int(predicted[i])]
        writer.writerow(
            [tile.x, tile.y, tile.w, tile.h, f"{tile.tissue:.4f}"]
            + [f"{v:.6f}" for v in probs[i]]
            + [classes[int(predicted[i])], ";".join(disagree)]
        )
    return buffer.getvalue()


def tiles_header(classes: Sequence[str]) -> list[str]:
    """Columns of tiles.csv."""
    return ["x", "y", "w", "h", "tissue", *(f"p_{c}" for c in classes), "predicted", "disagree"]


def _run_identity(slide: Path, model: TileModel, options: SlidePredictOptions, tile_um: tuple[float, float]) -> dict:
    return {
        "slide": str(slide.resolve()),
        "slide_bytes": slide.stat().st_size,
        "model": str(model.path.resolve()),
        "options": {**asdict(options), "tile_um": list(tile_um)},
    }


def _start_or_resume(slide_dir: Path, identity: dict) -> Path:
    """The ``.partial`` folder of this run (created, or an interrupted one with the same identity)."""
    partial = slide_dir / PARTIAL
    run_json = partial / RUN_JSON
    if run_json.is_file():
        if json.loads(run_json.read_text()) != identity:
            raise ConfigError(
                f"{partial}: holds an interrupted run with other settings or another model; "
                "rerun it with those, or choose another --out"
            )
        return partial
    if slide_dir.exists() and any(p.name != PARTIAL for p in slide_dir.iterdir()):
        raise ConfigError(f"{slide_dir}: already holds files of another run; choose another --out")
    atomic_write_json(run_json, identity)
    return partial


def predict_slide(
    slide_path: str | Path,
    model: TileModel,
    out_dir: str | Path,
    options: SlidePredictOptions = SlidePredictOptions(),
    *,
    workers: int = 0,
    say: Callable[[str], None] = log.info,
    after_chunk: Callable[[int], None] | None = None,
) -> dict[str, Any]:
    """Predict one slide into ``out_dir/<slide name>/``; returns its summary (see module doc).

    A finished slide with the same settings is returned as it is; ``after_chunk(i)`` is called after
    chunk ``i`` is written (tests kill the run there).
    """
    slide_path = Path(slide_path)
    slide_dir = Path(out_dir) / slide_path.stem
    tile_um = options.tile_um or model.default_field_of_view()
    if tile_um is None:
        raise ConfigError(f"{model.path}: the model's field of view is not known; give the tile size with --tile-um")
    identity = _run_identity(slide_path, model, options, tile_um)
    summary_path = slide_dir / SUMMARY_JSON
    if summary_path.is_file():
        summary = json.loads(summary_path.read_text())
        if summary.get("run") == identity:
            say(f"{slide_path.name}: already done ({summary_path})")
            return summary
        raise ConfigError(f"{slide_dir}: already holds results of another run; choose another --out")
    with open_slide(slide_path, options.mpp) as slide:
        mpp = slide.require_scale()
        thumbnail, downsample = slide.thumbnail(options.thumbnail_size)
        mask = detect_tissue(thumbnail, downsample, mpp)
        warnings = [w for w in [stain_problem(thumbnail)] if w]
        tiles = tile_grid(slide.dimensions, mpp, tile_um, mask, overlap=options.overlap, min_tissue=options.min_tissue)
        if not tiles:
            warnings.append("no tissue tile found: the outputs are empty")
        for warning in warnings:
            say(f"warning: {slide_path}: {warning}")
        partial = _start_or_resume(slide_dir, identity)
        chunks = [tiles[i : i + options.batch_size] for i in range(0, len(tiles), options.batch_size)]
        todo = [i for i in range(len(chunks)) if not (partial / f"chunk{i:06d}.csv").is_file()]
        if len(todo) < len(chunks):
            say(f"{slide_path.name}: resuming at chunk {todo[0] if todo else len(chunks)} of {len(chunks)}")
        out_px = (round(tile_um[0] / model.microns_per_pixel), round(tile_um[1] / model.microns_per_pixel))
        with TileReader(slide, out_px, workers) as reader:
            for index, arrays in zip(todo, reader.batches([chunks[i] for i in todo])):
                probs, readings = model.predict(arrays, slide_path.stem)
                atomic_write_text(
                    partial / f"chunk{index:06d}.csv", _chunk_rows(chunks[index], probs, readings, model.classes)
                )
                say(f"{slide_path.name}: {min(len(tiles), (index + 1) * options.batch_size)}/{len(tiles)} tiles")
                if after_chunk is not None:
                    after_chunk(index)
        rows = "".join((partial / f"chunk{i:06d}.csv").read_text() for i in range(len(chunks)))
        header = ",".join(tiles_header(model.classes)) + "\n"
        atomic_write_text(slide_dir / "tiles.csv", header + rows)
        slide_facts = {
            "path": str(slide_path),
            "dimensions": list(slide.dimensions),
            "microns_per_pixel": mpp,
            "mpp_source": slide.mpp_source,
            "tissue_fraction": round(mask.fraction, 4),
        }
    summary = write_slide_outputs(
        slide_dir, slide_facts, thumbnail, mask, model.classes, tile_um, warnings, identity, model.is_ensemble
    )
    shutil.rmtree(partial)
    return summary


def predict_slides(
    slides: Sequence[str | Path],
    model: str | Path | TileModel,
    out_dir: str | Path,
    options: SlidePredictOptions = SlidePredictOptions(),
    *,
    shard: tuple[int, int] = (1, 1),
    workers: int = 0,
    device: str = "cpu",
    model_mpp: float | None = None,
    say: Callable[[str], None] = log.info,
) -> list[dict[str, Any]]:
    """:func:`predict_slide` for this shard's slides with one loaded model; returns their summaries.

    ``model`` is a loaded :class:`TileModel`, or a model or ensemble folder loaded on ``device`` at
    ``model_mpp`` (default: its training scale)."""
    names = [Path(s).stem for s in slides]
    clashes = sorted({n for n in names if names.count(n) > 1})
    if clashes:
        raise ConfigError(f"slides share the name {clashes[0]!r}: each slide's outputs go to OUT/<name>; rename one")
    if not isinstance(model, TileModel):
        from histobreast.pipelines.slide_model import load_tile_model  # PyTorch: only for model folders

        model = load_tile_model(model, device, model_mpp)
    return [
        predict_slide(s, model, out_dir, options, workers=workers, say=say)
        for s in shard_slides([Path(s) for s in slides], shard)
    ]
