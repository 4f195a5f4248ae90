"""Pre-processing speed, and how well KREM's nuclei agree with haematoxylin on real BACH images.

- KREM per 2048x1536 image at 0.42 µm/px (BACH's native field) on one core (torch, OpenCV and
  numpy's BLAS limited to one thread): synthetic fields, and real BACH copies resized to
  2048x1536 when ../shared/data is present. Target: <= 100 ms.
- Reinhard and Macenko normalisation per 700x460 image (BreaKHis size), real BreaKHis images
  when present, else synthetic ones.
- A System B input pass (read, Macenko, six views x KREM crops) over a synthetic BACH tree,
  uncached, then through :class:`~histobreast.preprocess.cache.DiskCache` (filling pass, then a
  second pass that only reads the cache).
- KREM's nuclei against a haematoxylin-channel reference on real BACH images (recall: reference
  nuclei inside a KREM nucleus; precision: KREM centroids inside a reference nucleus), for the
  default rule and the paper's literal one (threshold at the image mean, one-sided perimeter).

Timings are the median over repeats (the minimum too, for the KREM target: the machine is shared).

    python -m benchmarks.bench_preprocess [--repeats 5] [--no-write]

Writes the ``preprocess`` section of BENCHMARKS.md.
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
import torch  # noqa: E402

from benchmarks.common import benchmark_parser, machine_info, today, write_section  # noqa: E402
from histobreast.data.imageio import list_images, read_rgb  # noqa: E402
from histobreast.data.synthetic import render_he, synth_bach  # noqa: E402
from histobreast.preprocess.cache import DiskCache, file_fingerprint  # noqa: E402
from histobreast.preprocess.krem import KremParams, crop_key_region, detect_nuclei, key_regions  # noqa: E402
from histobreast.preprocess.stain import MacenkoNormalizer, ReinhardNormalizer  # noqa: E402
from histobreast.preprocess.views import SIX_VIEWS, apply_view  # noqa: E402

SHARED_DATA = Path(os.environ.get("HISTOBREAST_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))
BACH_PHOTOS = SHARED_DATA / "bach" / "ICIAR2018_BACH_Challenge" / "Photos"
BREAKHIS = SHARED_DATA / "breakhis"
LITERAL = KremParams(threshold="mean", perimeter="inner")


def _times_ms(function: Callable[[], object], repeats: int) -> list[float]:
    function()  # warm-up
    out = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        out.append((time.perf_counter() - start) * 1e3)
    return out


def _krem_rows(repeats: int) -> list[str]:
    fields = [
        (f"synthetic {t}", render_he(t, (2048, 1536), 0.42, np.random.default_rng(i)))
        for i, t in enumerate(("Normal", "InSitu", "Invasive"))
    ]
    if BACH_PHOTOS.is_dir():
        for name in ("Benign/b015", "InSitu/is005", "Invasive/iv020"):
            real = read_rgb(BACH_PHOTOS / f"{name}.jpeg")  # 1024x768 at 0.84 µm/px
            fields.append(
                (f"real {name.split('/')[1]} (resized)", cv2.resize(real, (2048, 1536), interpolation=cv2.INTER_CUBIC))
            )
    rows = []
    for label, image in fields:
        train = _times_ms(lambda image=image: key_regions(image, 0.42, top_k=12), repeats)
        test = _times_ms(lambda image=image: key_regions(image, 0.42, top_k=1), repeats)
        rows.append(
            f"| {label} | {len(detect_nuclei(image, 0.42))} | {statistics.median(test):.0f} "
            f"| {statistics.median(train):.0f} | {min(train):.0f} |"
        )
    return rows


def _stain_rows(repeats: int) -> tuple[str, list[str]]:
    paths = list_images(BREAKHIS)[:6] if BREAKHIS.is_dir() else []
    if paths:
        images, source = [read_rgb(p) for p in paths], "real BreaKHis images"
    else:
        images = [render_he("DC", (700, 460), 0.49, np.random.default_rng(i)) for i in range(6)]
        source = "synthetic 700x460 images"
    rows = []
    for normalizer in (ReinhardNormalizer(), MacenkoNormalizer()):
        normalizer.fit(images[0])
        per_image = [
            statistics.median(_times_ms(lambda im=im, normalizer=normalizer: normalizer.normalize(im), repeats))
            for im in images[1:]
        ]
        rows.append(f"| {normalizer.method} | {statistics.median(per_image):.1f} | {max(per_image):.1f} |")
    return source, rows


def _cache_rows(images: int) -> list[str]:
    params = KremParams()
    with tempfile.TemporaryDirectory() as folder:
        records = synth_bach(Path(folder) / "bach", per_class=max(1, images // 4), size=(1024, 768), image_format="png")
        normalizer = MacenkoNormalizer().fit(read_rgb(records[0].path))

        def system_b_input(path: Path, mpp: float) -> np.ndarray:
            image = normalizer(read_rgb(path))
            crops = []
            for view in SIX_VIEWS:
                viewed = apply_view(image, view)
                crops.append(crop_key_region(viewed, key_regions(viewed, mpp, params)[0], params.output_size))
            return np.stack(crops)

        cache = DiskCache(Path(folder) / "cache")

        def run(cached: bool) -> float:
            start = time.perf_counter()
            for record in records:
                compute = lambda r=record: system_b_input(r.path, r.microns_per_pixel)  # noqa: E731
                if cached:
                    key = {
                        "file": file_fingerprint(record.path),
                        "stage": "krem_crops",
                        "params": params.to_dict(),
                        "stain": normalizer.to_dict(),
                        "views": SIX_VIEWS,
                        "mpp": record.microns_per_pixel,
                    }
                    cache.get_or_compute(key, compute)
                else:
                    compute()
            return (time.perf_counter() - start) * 1e3 / len(records)

        uncached, filling, hit = run(False), run(True), run(True)
    return [
        f"| uncached | {uncached:.0f} | 1.0x |",
        f"| cache, first pass (compute + store) | {filling:.0f} | {uncached / filling:.1f}x |",
        f"| cache, second pass (read only) | {hit:.1f} | {uncached / hit:.0f}x |",
        "",
        f"{len(records)} synthetic BACH images of 1024x768 at 0.84 µm/px; per image: read, Macenko, "
        "6 views x KREM (top 1) x 3 crops of 224 px = 18 crops (2.7 MB).",
    ]


def reference_nuclei(image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Haematoxylin-channel nuclei at 0.84 µm/px: Otsu on tissue, opening, compact blobs of 15-400 px."""
    from skimage.color import rgb2hed
    from skimage.filters import gaussian, threshold_otsu
    from skimage.measure import label, regionprops
    from skimage.morphology import disk, opening

    haematoxylin = gaussian(rgb2hed(image)[..., 0], 1)
    tissue = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY) < 204
    labels = label(opening(haematoxylin > threshold_otsu(haematoxylin[tissue]), disk(2)))
    kept = [r for r in regionprops(labels) if 15 <= r.area <= 400 and r.solidity > 0.8]
    mask = np.isin(labels, [r.label for r in kept])
    return np.array([r.centroid for r in kept]).astype(int).reshape(-1, 2), mask


def _agreement_rows() -> list[str]:
    paths = sorted(BACH_PHOTOS.glob("*/*.jpeg"))[::22]
    scores: dict[str, list[tuple[int, float, float]]] = {"default": [], "paper literal": []}
    for path in paths:
        image = read_rgb(path)
        centres, reference = reference_nuclei(image)
        for name, params in (("default", KremParams()), ("paper literal", LITERAL)):
            nuclei = detect_nuclei(image, 0.84, params)
            found = np.floor(nuclei.centroids).astype(int)
            recall = nuclei.mask[centres[:, 0], centres[:, 1]].mean() if len(centres) else float("nan")
            precision = reference[found[:, 1], found[:, 0]].mean() if len(found) else 0.0
            scores[name].append((len(nuclei), recall, precision))
    rows = []
    for name, values in scores.items():
        counts, recalls, precisions = zip(*values)
        rows.append(
            f"| {name} | {statistics.median(counts):.0f} | {np.nanmedian(recalls):.2f} "
            f"| {statistics.median(precisions):.2f} |"
        )
    return [
        f"{len(paths)} real BACH images (every 22nd file, 1024x768 at 0.84 µm/px); median over images.",
        "",
        "| KREM rule | nuclei found | recall | precision |",
        "|---|---|---|---|",
        *rows,
    ]


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = benchmark_parser(__doc__)
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per measurement")
    parser.add_argument("--cache-images", type=int, default=12, help="images in the cache pass")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> str:
    """Run every measurement, print the Markdown section and (unless --no-write) save it."""
    args = _parse(argv)
    torch.set_num_threads(1)
    cv2.setNumThreads(1)
    stain_source, stain_rows = _stain_rows(args.repeats)
    lines = [
        "## Pre-processing: KREM, stain normalisation, cache",
        "",
        f"`python -m benchmarks.bench_preprocess` on {today()}: {machine_info()}. One core: torch, OpenCV and "
        f"BLAS limited to one thread. Median of {args.repeats} runs after a warm-up.",
        "",
        "### KREM per 2048x1536 image at 0.42 µm/px (target <= 100 ms)",
        "",
        "Nuclei detection plus the nested window search; test = densest window only, train = 12 level-1 "
        "windows each refined to levels 2 and 3 (crops not included).",
        "",
        "| image | nuclei | ms, test (top 1) | ms, train (top 12) | ms, train, fastest run |",
        "|---|---|---|---|---|",
        *_krem_rows(args.repeats),
        "",
        f"### Stain normalisation per 700x460 image ({stain_source}; target fitted on the first)",
        "",
        "| method | ms per image (median over images) | slowest image |",
        "|---|---|---|",
        *stain_rows,
        "",
        "### Cached second pass (System B inputs)",
        "",
        "| pass | ms per image | speed-up |",
        "|---|---|---|",
        *_cache_rows(args.cache_images),
    ]
    if BACH_PHOTOS.is_dir():
        lines += ["", "### KREM nuclei against a haematoxylin reference", "", *_agreement_rows()]
    markdown = "\n".join(lines)
    print(markdown)
    if not args.no_write:
        write_section("preprocess", markdown)
    return markdown


if __name__ == "__main__":
    main()
