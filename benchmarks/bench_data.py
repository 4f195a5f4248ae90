"""Data speed on one core: synthetic H&E generation, image decoding, dataset inspection.

- Synthetic BreaKHis-size images (700x460 at 200X, 0.98 µm/px), all eight subtypes in turn:
  rendering only, and the full ``synth_breakhis`` path (render, PNG encode, atomic write).
  Target: >= 20 images per second.
- Synthetic BACH images at our real copies' size (1024x768, 0.84 µm/px), rendering only.
- Reading the written tree back: ``read_breakhis`` (names + headers) and ``read_rgb`` (full decode),
  and ``inspect_dataset`` (read, decode, summarise) on it.

Rates are images per second from the median of ``--repeats`` timed runs after a warm-up; the
machine is shared, so expect run-to-run noise of 10-30 %.

    python -m benchmarks.bench_data [--repeats 3] [--no-write]

Writes the ``data`` section of BENCHMARKS.md.
"""

from __future__ import annotations

import os

# One core, set before numpy / OpenCV / torch start their thread pools.
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = "1"

import argparse  # noqa: E402
import statistics  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable  # noqa: E402
from pathlib import Path  # noqa: E402

import cv2  # noqa: E402
import numpy as np  # noqa: E402

from benchmarks.common import benchmark_parser, machine_info, today, write_section  # noqa: E402
from histobreast.data.breakhis import BREAKHIS_SUBTYPES, DEFAULT_MICRONS_PER_PIXEL, read_breakhis  # noqa: E402
from histobreast.data.imageio import read_rgb  # noqa: E402
from histobreast.data.inspect import inspect_dataset  # noqa: E402
from histobreast.data.synthetic import render_he, synth_breakhis  # noqa: E402

BREAKHIS_SIZE = (700, 460)
TARGET_PER_SECOND = 20.0


def _rate(function: Callable[[], int], repeats: int) -> float:
    """Images per second: ``function`` returns how many images one call handled; median over repeats."""
    function()  # warm-up
    rates = []
    for _ in range(repeats):
        start = time.perf_counter()
        images = function()
        rates.append(images / (time.perf_counter() - start))
    return statistics.median(rates)


def _render(tissues: list[str], size: tuple[int, int], mpp: float) -> Callable[[], int]:
    def run() -> int:
        for i, tissue in enumerate(tissues):
            render_he(tissue, size, mpp, np.random.default_rng(i))
        return len(tissues)

    return run


def _rows(repeats: int, workdir: Path) -> list[str]:
    subtypes = list(BREAKHIS_SUBTYPES) * 2
    render_breakhis = _rate(_render(subtypes, BREAKHIS_SIZE, DEFAULT_MICRONS_PER_PIXEL[200]), repeats)
    render_bach = _rate(_render(["Normal", "Benign", "InSitu", "Invasive"], (1024, 768), 0.84), repeats)

    runs = iter(range(repeats + 1))

    def write_tree() -> int:
        return len(
            synth_breakhis(
                workdir / f"tree{next(runs)}",
                patients_per_subtype=1,
                images_per_magnification=2,
                magnifications=(200, 400),
                folds=1,
            )
        )

    write_breakhis = _rate(write_tree, repeats)
    tree = workdir / "tree0"
    paths = [r.path for r in read_breakhis(tree)]
    read_names = _rate(lambda: len(read_breakhis(tree)), repeats)
    decode = _rate(lambda: sum(1 for p in paths if read_rgb(p) is not None), repeats)
    inspect = _rate(lambda: inspect_dataset(tree).images, repeats)

    def verdict(rate: float) -> str:
        return "meets" if rate >= TARGET_PER_SECOND else "MISSES"

    return [
        "| step | images per second | note |",
        "|---|---|---|",
        f"| render synthetic BreaKHis 700x460 (8 subtypes, 200X) | {render_breakhis:.0f} | "
        f"{verdict(render_breakhis)} the >= {TARGET_PER_SECOND:.0f}/s target |",
        f"| `synth_breakhis` 700x460: render + PNG + atomic write | {write_breakhis:.0f} | "
        f"{verdict(write_breakhis)} the >= {TARGET_PER_SECOND:.0f}/s target |",
        f"| render synthetic BACH 1024x768 (4 classes, 0.84 µm/px) | {render_bach:.0f} | |",
        f"| `read_breakhis` (parse names, read headers) | {read_names:.0f} | 700x460 PNGs |",
        f"| `read_rgb` full decode | {decode:.0f} | 700x460 PNGs |",
        f"| `inspect_dataset` (read, decode, summarise) | {inspect:.0f} | 700x460 PNGs |",
    ]


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = benchmark_parser(__doc__)
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per measurement (median reported)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> str:
    """Run every measurement, print the Markdown section and (unless --no-write) save it."""
    args = _parse(argv)
    cv2.setNumThreads(1)
    load = os.getloadavg()[0]  # the machine is shared: say how busy it was
    with tempfile.TemporaryDirectory(prefix="bench_data_") as tmp:
        rows = _rows(args.repeats, Path(tmp))
    markdown = "\n".join(
        [
            "## Data: synthetic generation, reading, inspection",
            "",
            f"`python -m benchmarks.bench_data` on {today()}: {machine_info()}. One core: OpenCV and BLAS limited "
            f"to one thread. Median of {args.repeats} runs after a warm-up. The machine is shared (1-minute load "
            f"average {load:.1f} at the start), so rates vary by up to ~2x between runs.",
            "",
            *rows,
        ]
    )
    print(markdown)
    if not args.no_write:
        write_section("data", markdown)
    return markdown


if __name__ == "__main__":
    main()
