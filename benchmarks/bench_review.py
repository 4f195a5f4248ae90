"""Case review speed on one core: what ``predict --review`` adds to a prediction run, per image.

The review's own cost is reading each image again for its thumbnail, drawing its card (matplotlib)
and writing the report; the model's inference is measured by the system benchmarks. Timed here
on ``--images`` images of the real BACH copies (1024x768 JPEG) when ``../shared/data/bach`` is
present, else on synthetic BACH-size images, with probabilities drawn at random: System A style
(an image-level call read by 4 other methods) and System B style (6 views, each with its window).

    python -m benchmarks.bench_review [--images 24] [--no-write]

Writes the ``review`` section of BENCHMARKS.md.
"""

from __future__ import annotations

import os

# One core, set before numpy / OpenCV / torch start their thread pools.
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = "1"

import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

from benchmarks.common import benchmark_parser, machine_info, today, write_section  # noqa: E402
from histobreast.data.readers import read_dataset  # noqa: E402
from histobreast.data.synthetic import synth_bach  # noqa: E402
from histobreast.predictions import Predictions  # noqa: E402
from histobreast.preprocess.views import SIX_VIEWS  # noqa: E402
from histobreast.report import RunInfo, write_case_review  # noqa: E402

REAL_BACH = Path(__file__).resolve().parents[2] / "shared" / "data" / "bach"
CLASSES = ["Normal", "Benign", "InSitu", "Invasive"]


def _table(ids: list[str], paths: list[str], rng: np.random.Generator, extra: dict | None = None) -> Predictions:
    probs = rng.dirichlet(np.ones(len(CLASSES)), size=len(ids))
    return Predictions(CLASSES, ids, probs, np.full(len(ids), -1), ids, paths=paths, extra=extra or {})


def system_a_style(ids: list[str], paths: list[str], rng: np.random.Generator) -> dict[str, Predictions]:
    """The headline call and four other whole-image methods."""
    return {name: _table(ids, paths, rng) for name in ("hybrid", "global", "local", "hybrid_max", "local_max")}


def system_b_style(ids: list[str], paths: list[str], rng: np.random.Generator) -> dict[str, Predictions]:
    """The six-view vote and one row per view with its key window (a quarter of the image)."""
    view_ids = [f"{i}/{v}" for i in ids for v in SIX_VIEWS]
    corners = rng.integers(0, 512, size=(len(view_ids), 2)).astype(np.float64)
    extra = {
        "region_x": corners[:, 0],
        "region_y": corners[:, 1] / 2,
        "region_w": np.full(len(view_ids), 512.0),
        "region_h": np.full(len(view_ids), 384.0),
    }
    return {
        "image": _table(ids, paths, rng),
        "patch": _table(view_ids, [p for p in paths for _ in SIX_VIEWS], rng, extra),
    }


def main(argv: list[str] | None = None) -> int:
    parser = benchmark_parser(__doc__)
    parser.add_argument("--images", type=int, default=24, help="images per review")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        if REAL_BACH.is_dir():
            records, source = (
                read_dataset(REAL_BACH)[: args.images],
                f"real BACH copies ({REAL_BACH.name}, 1024x768 JPEG)",
            )
        else:
            records = synth_bach(
                Path(tmp) / "bach", per_class=-(-args.images // 4), size=(1024, 768), image_format="jpg"
            )[: args.images]
            source = "synthetic BACH-size images (1024x768 JPEG)"
        ids, paths = [r.image_id for r in records], [str(r.path) for r in records]
        rows = []
        write_case_review(
            system_a_style(ids[:2], paths[:2], np.random.default_rng(0)),
            "hybrid",
            Path(tmp) / "warm",
            RunInfo(source, "-", "warm-up", "-"),
        )  # matplotlib's first figure loads its fonts
        for style, results, headline in (
            ("System A (4 other methods)", system_a_style, "hybrid"),
            ("System B (6 views with windows)", system_b_style, "image"),
        ):
            out = Path(tmp) / headline
            start = time.perf_counter()
            write_case_review(
                results(ids, paths, np.random.default_rng(0)), headline, out, RunInfo(source, "-", style, "-")
            )
            seconds = time.perf_counter() - start
            size = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
            rows.append(
                f"| {style} | {len(ids)} | {1000 * seconds / len(ids):.0f} | {len(ids) / seconds:.1f} | "
                f"{size / len(ids) / 1024:.0f} |"
            )
    section = "\n".join(
        [
            "## Case review (`predict --review`)",
            "",
            f"`python -m benchmarks.bench_review --images {args.images}` on {today()}; machine: {machine_info()}.",
            f"Images: {source}. The review's own work only (thumbnail, card, report), one core; "
            "inference is in the system sections.",
            "",
            "| readings | images | ms per image | images/s | KiB on disk per image |",
            "| --- | ---: | ---: | ---: | ---: |",
            *rows,
        ]
    )
    print(section)
    if not args.no_write:
        write_section("review", section)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
