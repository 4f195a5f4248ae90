"""``python -m histobreast.runtime predict|slide EXPORTED ...`` (also ``histobreast-runtime``).

The torch-free command line (argparse, no typer): the options of ``histobreast predict`` and
``histobreast slide predict`` that an exported folder supports, plus ``--threads``. Errors print
as one line and exit 1.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from histobreast.errors import HistobreastError


def parser() -> argparse.ArgumentParser:
    """The runtime's argument parser (one sub-command: ``predict``)."""
    top = argparse.ArgumentParser(prog="histobreast-runtime", description="Apply exported histobreast models (ONNX).")
    commands = top.add_subparsers(dest="command", required=True)
    predict = commands.add_parser("predict", help="Class probabilities for images, one CSV row per image.")
    predict.add_argument("model", type=Path, help="Exported folder (export.json), from `histobreast export`.")
    predict.add_argument("inputs", type=Path, nargs="+", help="Images and/or folders (searched recursively).")
    predict.add_argument("--out", type=Path, required=True, help="CSV to write, one row per image.")
    predict.add_argument("--tta", action="store_true", help="Average over the six views (raw, 3 rotations, 2 flips).")
    predict.add_argument("--method", help="Evaluation method (default: the headline; an ensemble: its vote).")
    predict.add_argument("--mpp", "--microns-per-pixel", dest="mpp", type=float, help="µm/px of the images.")
    predict.add_argument("--batch-size", type=int, help="Images per onnxruntime call (System B: crop stacks).")
    predict.add_argument("--threads", type=int, help="onnxruntime intra-op threads (default: all cores).")
    predict.add_argument("--review", type=Path, help="Also write a case review here (needs matplotlib).")
    slide = commands.add_parser("slide", help="Every tissue tile of whole slides: tiles.csv, heatmaps, GeoJSON.")
    slide.add_argument("model", type=Path, help="Exported folder (export.json), from `histobreast export`.")
    slide.add_argument("slides", type=Path, nargs="+", help="Slide files (SVS, NDPI, TIFF, MRXS, DICOM, ...).")
    slide.add_argument("--out", type=Path, required=True, help="Output folder: one sub-folder per slide.")
    slide.add_argument("--tile-um", help="Tile field of view in µm, WIDTHxHEIGHT (default: the training images').")
    slide.add_argument("--overlap", type=float, default=0.0, help="Share of a tile the next one overlaps, 0 to 0.9.")
    slide.add_argument("--min-tissue", type=float, default=0.5, help="Least tissue share of a kept tile.")
    slide.add_argument("--mpp", type=float, help="µm/px of slides whose file has no scale.")
    slide.add_argument("--model-mpp", type=float, help="The model's training scale, if its description lacks it.")
    slide.add_argument("--batch-size", type=int, default=32, help="Tiles per batch (the unit a killed run resumes at).")
    slide.add_argument("--workers", type=int, default=0, help="Tile-reading processes (0: read in this one).")
    slide.add_argument("--shard", help="K/N: this job's share of the slides.")
    slide.add_argument("--threads", type=int, help="onnxruntime intra-op threads (default: all cores).")
    slide.add_argument("--review", type=Path, help="Also write a case review here: a card per slide.")
    return top


def slide_main(args: argparse.Namespace) -> list[str]:
    """``slide``: :func:`~histobreast.pipelines.slide_predict.predict_slides` with the exported folder's tile model."""
    from histobreast.pipelines.slide_predict import (
        SlidePredictOptions,
        check_options,
        describe_summary,
        parse_pair,
        parse_shard,
        predict_slides,
    )
    from histobreast.pipelines.slide_review import write_slide_review
    from histobreast.runtime.slides import load_exported_tile_model

    options = SlidePredictOptions(
        tile_um=parse_pair(args.tile_um, "--tile-um") if args.tile_um else None,
        overlap=args.overlap,
        min_tissue=args.min_tissue,
        mpp=args.mpp,
        batch_size=args.batch_size,
    )
    check_options(options)
    model = load_exported_tile_model(args.model, args.model_mpp, args.threads)
    summaries = predict_slides(
        args.slides, model, args.out, options, shard=parse_shard(args.shard), workers=args.workers, say=print
    )
    lines = [describe_summary(summary, args.out) for summary in summaries]
    if args.review is not None and summaries:
        written = write_slide_review(summaries, args.out, args.review, args.model)
        lines.append(f"review: {written['html']}" if written else "review: no slide has a tissue tile")
    return lines


def predict_main(args: argparse.Namespace) -> list[str]:
    """``predict``: :func:`~histobreast.runtime.predict.predict_to_csv`."""
    from histobreast.runtime.predict import predict_to_csv

    options = {"tta": args.tta, "method": args.method, "microns_per_pixel": args.mpp, "batch_size": args.batch_size}
    return predict_to_csv(args.model, args.inputs, args.out, review=args.review, threads=args.threads, **options)


def main(argv: list[str] | None = None) -> int:
    """Run the command line; returns the exit status."""
    args = parser().parse_args(argv)
    try:
        lines = (slide_main if args.command == "slide" else predict_main)(args)
    except (HistobreastError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
