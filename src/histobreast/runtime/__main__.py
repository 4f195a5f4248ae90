"""``python -m histobreast.runtime predict EXPORTED IMAGES... --out CSV`` (also ``histobreast-runtime``).

The torch-free command line (argparse, no typer): the options of ``histobreast predict`` that an
exported folder supports, plus ``--threads``. Errors print as one line and exit 1.
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
    predict.add_argument("--batch-size", type=int, help="Images per onnxruntime call.")
    predict.add_argument("--threads", type=int, help="onnxruntime intra-op threads (default: all cores).")
    predict.add_argument("--review", type=Path, help="Also write a case review here (needs matplotlib).")
    return top


def main(argv: list[str] | None = None) -> int:
    """Run the command line; returns the exit status."""
    from histobreast.runtime.predict import predict_to_csv

    args = parser().parse_args(argv)
    try:
        lines = predict_to_csv(
            args.model,
            args.inputs,
            args.out,
            tta=args.tta,
            method=args.method,
            microns_per_pixel=args.mpp,
            batch_size=args.batch_size,
            threads=args.threads,
            review=args.review,
        )
    except (HistobreastError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
