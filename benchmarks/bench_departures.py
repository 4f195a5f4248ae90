"""Where histobreast departs from paper B's KREM and from the libraries' Reinhard, measured on real BACH images.

- KREM nuclei: how many each rule finds and how well they agree with a haematoxylin-channel
  reference (recall: reference nuclei inside a KREM nucleus; precision: KREM centroids inside a
  reference nucleus), for the paper's literal rule (threshold at the image mean, one-sided
  perimeter, A/P < 2.5) and with each of our departures added one at a time; the ratio of our
  two-sided perimeter to the one-sided one; 4- against 8-connected components; how many kept
  nuclei an "oval shape" test would question.
- KREM windows: how often windows tie (where the tie-break to the centre decides), what counting
  nuclear pixels instead of centroids changes, what re-thresholding inside each chosen window
  (instead of reusing the whole image's nuclei) changes, how much the 12 training windows overlap.
- Reinhard: our tissue-only LAB statistics against all-pixel Reinhard as TIAToolbox computes it
  (8-bit OpenCV LAB, mean and std over every pixel; its steps reproduced here, since tiatoolbox is
  not in the lock file) and as torchstain computes it when ``torchstain`` is importable; and our
  ``pixels="all"`` option against both (parity).

    python -m benchmarks.bench_departures [--every 11] [--no-write]

Writes the ``departures`` section of BENCHMARKS.md; needs ../shared/data/bach.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = "1"

import statistics  # noqa: E402
from collections.abc import Callable  # noqa: E402
from pathlib import Path  # noqa: E402

import cv2  # noqa: E402
import numpy as np  # noqa: E402

from benchmarks.bench_preprocess import BACH_PHOTOS, LITERAL, reference_nuclei  # noqa: E402
from benchmarks.common import benchmark_parser, machine_info, today, write_section  # noqa: E402
from histobreast.data.imageio import read_rgb  # noqa: E402
from histobreast.preprocess.krem import (  # noqa: E402
    KremParams,
    _dark_pixels,
    _ranked_windows,
    detect_nuclei,
    key_regions,
)
from histobreast.preprocess.stain import ReinhardNormalizer, tissue_mask  # noqa: E402

MPP = 0.84  # the real BACH copies: 1024x768 of BACH's 2048x1536 field at 0.42 µm/px
REFERENCE = "Benign/b015"  # the Reinhard target image (fixed, so the section is repeatable)
DEFAULT = KremParams()
# Nuclei rules: the paper's literal one, then our departures added one at a time.
RULES: list[tuple[str, KremParams]] = [
    ("paper literal: image-mean threshold, one-sided perimeter, A/P < 2.5", LITERAL),
    ("+ two-sided perimeter (image-mean threshold)", KremParams(threshold="mean")),
    ("+ two-pass threshold (one-sided perimeter)", KremParams(perimeter="inner")),
    ("two-pass threshold, one-sided perimeter, A/P < 5", KremParams(perimeter="inner", max_area_perimeter=5.0)),
    ("**default**: two-pass threshold, two-sided perimeter, A/P < 2.5", DEFAULT),
]
Box = tuple[int, int, int, int]


def _components(image: np.ndarray, params: KremParams, connectivity: int) -> dict[str, np.ndarray]:
    """KREM's components at either connectivity: labels, areas, one- and two-sided perimeters, kept labels.

    At connectivity 8 this reproduces :func:`detect_nuclei` (checked in :func:`_nuclei_rows`); it
    exists to measure 4-connectivity, which KREM's own perimeter pass does not support.
    """
    dark = _dark_pixels(cv2.cvtColor(image, cv2.COLOR_RGB2GRAY), params.threshold)
    n, labels = cv2.connectedComponents(dark, connectivity=connectivity, ltype=cv2.CV_32S)
    padded = np.pad(labels, 1)
    around = np.stack([padded[:-2, 1:-1], padded[2:, 1:-1], padded[1:-1, :-2], padded[1:-1, 2:]])
    inner = np.bincount(labels[(labels > 0) & (around != labels).any(axis=0)], minlength=n)
    # A background pixel counts once for each distinct component among its 4 neighbours.
    outside = np.sort(around[:, labels == 0], axis=0)
    first = np.vstack([np.ones((1, outside.shape[1]), bool), outside[1:] != outside[:-1]])
    outer = np.bincount(outside[(outside > 0) & first], minlength=n)
    areas = np.bincount(labels.ravel(), minlength=n)
    scale = params.scale(MPP)
    perimeter = inner + outer if params.perimeter == "two_sided" else inner
    keep = (areas > params.min_area * scale**2) & (areas < params.max_area_perimeter * scale * perimeter)
    keep[0] = False
    return {"labels": labels, "areas": areas, "inner": inner, "two_sided": inner + outer, "keep": keep}


def _centroids(labels: np.ndarray, keep: np.ndarray) -> np.ndarray:
    rows, cols = np.nonzero(keep[labels])
    own = labels[rows, cols]
    kept = np.flatnonzero(keep)
    area = np.bincount(own, minlength=keep.size)[kept]
    return (
        np.stack([np.bincount(own, weights=c, minlength=keep.size)[kept] for c in (cols, rows)], axis=1) / area[:, None]
    )


def _agreement(
    mask: np.ndarray, centroids: np.ndarray, centres: np.ndarray, reference: np.ndarray
) -> tuple[float, float]:
    """(recall, precision) against the haematoxylin reference, as in bench_preprocess."""
    found = np.floor(centroids).astype(int)
    recall = float(mask[centres[:, 0], centres[:, 1]].mean()) if len(centres) else float("nan")
    precision = float(reference[found[:, 1], found[:, 0]].mean()) if len(found) else 0.0
    return recall, precision


def _oval_doubts(components: dict[str, np.ndarray]) -> tuple[float, float]:
    """Shares of kept nuclei with an ellipse axis ratio above 2, and with solidity below 0.8."""
    from skimage.measure import regionprops

    kept = components["keep"][components["labels"]]
    props = regionprops(np.where(kept, components["labels"], 0))
    ratios = np.array([p.axis_major_length / max(p.axis_minor_length, 1e-6) for p in props])
    solidity = np.array([p.solidity for p in props])
    return float((ratios > 2).mean()), float((solidity < 0.8).mean())


def _nuclei_rows(images: list[tuple[str, np.ndarray]]) -> list[str]:
    found: dict[str, list[tuple[int, float, float]]] = {name: [] for name, _ in RULES}
    found["default with 4-connected components"] = []
    ratios, oval = [], []
    for _, image in images:
        centres, reference = reference_nuclei(image)
        for name, params in RULES:
            nuclei = detect_nuclei(image, MPP, params)
            found[name].append((len(nuclei), *_agreement(nuclei.mask, nuclei.centroids, centres, reference)))
        eight, four = _components(image, DEFAULT, 8), _components(image, DEFAULT, 4)
        assert int(eight["keep"].sum()) == found[RULES[-1][0]][-1][0], "the 8-connected re-implementation drifted"
        four_mask = four["keep"][four["labels"]]
        found["default with 4-connected components"].append(
            (
                int(four["keep"].sum()),
                *_agreement(four_mask, _centroids(four["labels"], four["keep"]), centres, reference),
            )
        )
        kept = eight["keep"]
        ratios.append(float(np.median(eight["two_sided"][kept] / eight["inner"][kept])))
        oval.append(_oval_doubts(eight))
    rows = []
    for name, values in found.items():
        counts, recalls, precisions = zip(*values)
        rows.append(
            f"| {name} | {statistics.median(counts):.0f} | {min(counts)}-{max(counts)} "
            f"| {np.nanmedian(recalls):.2f} | {statistics.median(precisions):.2f} |"
        )
    literal = np.array([v[0] for v in found[RULES[0][0]]], float)
    default = np.array([v[0] for v in found[RULES[-1][0]]], float)
    factor = default / np.maximum(literal, 1)
    elongated, concave = zip(*oval)
    return [
        "| nuclei rule | nuclei found (median) | range over images | recall | precision |",
        "|---|---|---|---|---|",
        *rows,
        "",
        f"- The default finds {np.min(factor):.0f}x-{np.max(factor):.0f}x the literal rule's nuclei "
        f"(median {np.median(factor):.0f}x; an image where the literal rule finds none counts as 1).",
        f"- Two-sided perimeter / one-sided perimeter of the default's nuclei: median {np.median(ratios):.2f} "
        f"(range of per-image medians {min(ratios):.2f}-{max(ratios):.2f}), so A/P < 2.5 on the two-sided "
        f"count is about A/P < {2.5 * np.median(ratios):.1f} on the one-sided one.",
        f"- Oval shape (not implemented): of the default's nuclei, a median {np.median(elongated):.0%} per image "
        f"have an ellipse axis ratio above 2 and {np.median(concave):.0%} a solidity below 0.8.",
    ]


def _iou(a: Box, b: Box) -> float:
    ix = max(0, min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0]))
    iy = max(0, min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1]))
    inter = ix * iy
    return inter / (a[2] * a[3] + b[2] * b[3] - inter)


def _integral(points_or_mask: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Integral image of a (H, W) map: a bool mask as is, or (N, 2) centroids as per-pixel counts."""
    if points_or_mask.shape == shape:
        counts = points_or_mask.astype(np.float32)
    else:
        counts = np.zeros(shape, np.float32)
        cols = np.clip(np.floor(points_or_mask[:, 0]).astype(int), 0, shape[1] - 1)
        rows = np.clip(np.floor(points_or_mask[:, 1]).astype(int), 0, shape[0] - 1)
        np.add.at(counts, (rows, cols), 1.0)
    return cv2.integral(counts, sdepth=cv2.CV_32F)


Chooser = Callable[[np.ndarray, np.ndarray], int]


def _centre_first(boxes: np.ndarray, counts: np.ndarray) -> int:
    return 0  # _ranked_windows already breaks ties towards the parent's centre


def _raster_first(boxes: np.ndarray, counts: np.ndarray) -> int:
    """The top-left-most of the windows tied for most nuclei (what a plain arg-max over the grid picks)."""
    tied = np.flatnonzero(counts == counts[0])
    return int(tied[np.lexsort((boxes[tied, 0], boxes[tied, 1]))[0]])


def _chain(integral: np.ndarray, size: tuple[int, int], choose: Chooser = _centre_first) -> tuple[list[Box], list[int]]:
    """Nested windows (level 1 first) and, per level, how many windows tied for the most nuclei."""
    parent: Box = (0, 0, *size)
    chain, ties = [], []
    for window, stride in DEFAULT.scaled_windows(MPP):
        boxes, counts = _ranked_windows(integral, parent, window, stride)
        ties.append(int((counts == counts[0]).sum()))
        parent = tuple(int(v) for v in boxes[choose(boxes, counts)])
        chain.append(parent)
    return chain, ties


def _rethresholded_chain(image: np.ndarray, level1: Box) -> list[Box]:
    """Levels 2 and 3 found from nuclei detected again inside each chosen window (its own thresholds)."""
    chain = [level1]
    for window, stride in DEFAULT.scaled_windows(MPP)[1:]:
        x, y, w, h = chain[-1]
        crop = np.ascontiguousarray(image[y : y + h, x : x + w])
        integral = _integral(detect_nuclei(crop, MPP, DEFAULT).centroids, crop.shape[:2])
        boxes, _ = _ranked_windows(integral, (0, 0, w, h), window, stride)
        bx, by, bw, bh = (int(v) for v in boxes[0])
        chain.append((x + bx, y + by, bw, bh))
    return chain


def _overlap(boxes: list[Box], shape: tuple[int, int]) -> tuple[float, float]:
    """Mean pairwise IoU of ``boxes``, and the fraction of an image of ``shape`` they cover together."""
    covered = np.zeros(shape, bool)
    for x, y, w, h in boxes:
        covered[y : y + h, x : x + w] = True
    return float(np.mean([_iou(a, b) for i, a in enumerate(boxes) for b in boxes[i + 1 :]])), float(covered.mean())


def _window_rows(images: list[tuple[str, np.ndarray]]) -> list[str]:
    levels = len(DEFAULT.windows)
    tied = np.zeros(levels)
    raster_iou, area_iou, rethreshold_iou = ([[] for _ in range(levels)] for _ in range(3))
    overlap: dict[str, list[tuple[float, float]]] = {
        "plain ranking (default)": [],
        "non-maximum suppression, IoU <= 0.5": [],
    }
    for _, image in images:
        size = (image.shape[1], image.shape[0])
        nuclei = detect_nuclei(image, MPP, DEFAULT)
        counts = _integral(nuclei.centroids, image.shape[:2])
        chain, ties = _chain(counts, size)
        tied += np.array(ties) > 1
        by_raster, _ = _chain(counts, size, _raster_first)
        by_area, _ = _chain(_integral(nuclei.mask, image.shape[:2]), size)
        rethresholded = _rethresholded_chain(image, chain[0])
        for level in range(levels):
            raster_iou[level].append(_iou(chain[level], by_raster[level]))
            area_iou[level].append(_iou(chain[level], by_area[level]))
            rethreshold_iou[level].append(_iou(chain[level], rethresholded[level]))
        for values, max_iou in zip(overlap.values(), (1.0, 0.5)):
            params = KremParams(top_k_max_iou=max_iou)
            regions = key_regions(image, MPP, params, top_k=12)
            values.append(_overlap([r.boxes[0] for r in regions], image.shape[:2]))

    def cells(ious: list[list[float]]) -> str:
        return " | ".join(
            f"{np.mean(np.isclose(v, 1.0)):.0%} same, IoU {np.mean(v):.2f}"
            for v in (ious[level] for level in range(levels))
        )

    n = len(images)
    lines = [
        "| level | 1 | 2 | 3 |",
        "|---|---|---|---|",
        "| images where windows tie for the most nuclei | " + " | ".join(f"{t / n:.0%}" for t in tied) + " |",
        "| tie-break: top-left-most tied window instead of the most central | " + cells(raster_iou) + " |",
        "| count nuclear pixels instead of centroids | " + cells(area_iou) + " |",
        "| re-threshold inside each chosen window | " + cells(rethreshold_iou) + " |",
        "",
        '"same": share of images whose window is identical to the default\'s; IoU: mean overlap with it. '
        "Level 1 of the re-thresholding row is the default's by construction.",
        "",
        "| 12 training windows per view | mean pairwise IoU | image covered by their union |",
        "|---|---|---|",
    ]
    for name, values in overlap.items():
        ious, covers = zip(*values)
        lines.append(f"| {name} | {np.mean(ious):.2f} | {np.mean(covers):.0%} |")
    return lines


def _lab_8bit(image: np.ndarray) -> np.ndarray:
    """8-bit OpenCV LAB rescaled to L* 0-100 and a*, b* around 0 (TIAToolbox's ``lab_split``)."""
    lab = cv2.cvtColor(image, cv2.COLOR_RGB2LAB).astype(np.float32)
    return (lab - (0.0, 128.0, 128.0)) / (2.55, 1.0, 1.0)


def _tiatoolbox_style(reference: np.ndarray) -> Callable[[np.ndarray], np.ndarray]:
    """All-pixel Reinhard by TIAToolbox's steps: 8-bit LAB, every pixel's mean and std, 8-bit LAB back."""
    ref = _lab_8bit(reference).reshape(-1, 3)
    target_mean, target_std = ref.mean(0), ref.std(0)

    def normalise(image: np.ndarray) -> np.ndarray:
        lab = _lab_8bit(image)
        flat = lab.reshape(-1, 3)
        out = (lab - flat.mean(0)) * (target_std / flat.std(0)) + target_mean
        back = np.clip(out * (2.55, 1.0, 1.0) + (0.0, 128.0, 128.0), 0, 255).astype(np.uint8)
        return cv2.cvtColor(back, cv2.COLOR_LAB2RGB)

    return normalise


def _torchstain(reference: np.ndarray) -> Callable[[np.ndarray], np.ndarray] | None:
    """torchstain's numpy Reinhard fitted on ``reference``, or None when torchstain is not installed."""
    try:
        from torchstain.numpy.normalizers import NumpyReinhardNormalizer
    except ImportError:
        return None
    normalizer = NumpyReinhardNormalizer()
    normalizer.fit(reference)
    return normalizer.normalize


def _reinhard_rows(paths: list[Path]) -> list[str]:
    reference = read_rgb(BACH_PHOTOS / f"{REFERENCE}.jpeg")
    ours = {pixels: ReinhardNormalizer(pixels=pixels).fit(reference) for pixels in ("tissue", "all")}
    others = {"TIAToolbox's steps": _tiatoolbox_style(reference), "torchstain": _torchstain(reference)}
    others = {name: f for name, f in others.items() if f is not None}
    pairs = [("ours (tissue)", "ours, pixels=all")] + [
        (mine, other) for other in others for mine in ("ours (tissue)", "ours, pixels=all")
    ]
    scores: dict[tuple[str, str], list[tuple[float, float, float, str]]] = {pair: [] for pair in pairs}
    for path in paths:
        image = read_rgb(path)
        outputs = {
            "ours (tissue)": ours["tissue"].normalize(image).image,
            "ours, pixels=all": ours["all"].normalize(image).image,
        }
        outputs |= {name: f(image) for name, f in others.items()}
        tissue = float(tissue_mask(image).mean())
        for a, b in pairs:
            difference = np.abs(outputs[a].astype(int) - outputs[b])
            scores[(a, b)].append((float(difference.mean()), float((difference > 2).mean()), tissue, path.stem))
    rows = []
    for (a, b), values in scores.items():
        means = [v[0] for v in values]
        worst = max(values)
        low = [v[0] for v in values if v[2] < 0.5]
        rows.append(
            f"| {a} | {b} | {np.mean(means):.1f} | {worst[0]:.1f} ({worst[3]}, {worst[2]:.0%} tissue) "
            f"| {np.mean(low) if low else float('nan'):.1f} ({len(low)}) | {np.mean([v[1] for v in values]):.2%} |"
        )
    missing = "" if "torchstain" in others else " torchstain was not importable, so its rows are absent."
    return [
        f"{len(paths)} real BACH images normalised to the target fitted on {REFERENCE} "
        f"({tissue_mask(reference).mean():.0%} tissue). Differences in grey levels (0-255) per RGB value.{missing}",
        "",
        "| A | B | mean abs difference, mean over images | largest per-image mean (image, tissue) "
        "| mean over images with < 50% tissue (images) | values more than 2 grey levels apart |",
        "|---|---|---|---|---|---|",
        *rows,
    ]


def main(argv: list[str] | None = None) -> str:
    """Run every measurement, print the Markdown section and (unless --no-write) save it."""
    parser = benchmark_parser(__doc__)
    parser.add_argument("--every", type=int, default=11, help="use every n-th BACH image for the KREM tables")
    args = parser.parse_args(argv)
    cv2.setNumThreads(1)
    if not BACH_PHOTOS.is_dir():
        raise SystemExit(f"{BACH_PHOTOS}: the real BACH copies are needed for this benchmark")
    paths = sorted(BACH_PHOTOS.glob("*/*.jpeg"))
    images = [(p.stem, read_rgb(p)) for p in paths[:: args.every]]
    nuclei = _nuclei_rows(images)
    nuclei[0] = (
        f"{len(images)} real BACH images (every {args.every}th of the {len(paths)} files), 1024x768 at {MPP} "
        "µm/px; median over images."
    )
    lines = [
        "## Departures from paper B's KREM and from the libraries' Reinhard",
        "",
        f"`python -m benchmarks.bench_departures --every {args.every}` on {today()}: {machine_info()}. "
        "What each departure listed in docs/system_b.md and docs/preprocess.md changes on real images.",
        "",
        "### KREM nuclei: the paper's literal rule and each departure",
        "",
        f"{len(images)} real BACH images (every {args.every}th of the {len(paths)} files), 1024x768 at {MPP} "
        "µm/px; median over images.",
        "",
        *_nuclei_rows(images),
        "",
        "### KREM windows (default nuclei, raw view)",
        "",
        *_window_rows(images),
        "",
        "### Reinhard: tissue-only against all-pixel statistics",
        "",
        *_reinhard_rows(paths),
    ]
    markdown = "\n".join(lines)
    print(markdown)
    if not args.no_write:
        write_section("departures", markdown)
    return markdown


if __name__ == "__main__":
    main()
