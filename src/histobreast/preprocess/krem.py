"""KREM, the key-region extraction module of Liu et al. 2022 (System B): nested densest-nuclei windows.

Steps (paper, "Methods: KREM"): grayscale; threshold at the image mean (nuclei are darker);
keep connected components with area > 80 px and area/perimeter < 2.5; take their centroids;
slide a 897 px window (stride 80) and keep the window holding the most centroids; inside it
repeat with 400 px (stride 40), then 224 px (stride 20). Crops are resized to 224 px, bilinear.

Every pixel quantity is defined at the paper's scale, 0.42 µm/px (BACH), and scaled to the
image's µm/px: lengths by ``0.42 / mpp``, areas by its square. Window counts come from an
integral image of a centroid-count map, so a level costs O(H*W + windows), not O(windows*nuclei).

Choices the paper leaves open, or states in a way that fails on real images (all fields of :class:`KremParams` or stated here):
- threshold (``threshold="two_pass_mean"``): pixels darker than the mean of the pixels darker than
  the image mean. The paper's literal rule, the image mean (``threshold="mean"``), puts the pink
  cytoplasm and stroma of BACH images on the dark side with the nuclei, so nuclei merge into large
  blobs that the shape rule then rejects; the second mean separates nuclei from the rest of the
  tissue, which is what the paper says the binary image shows ("white pixels represented the
  area occupied by the nuclei"). Measured on 13 real BACH images against a haematoxylin-channel
  reference (benchmarks/bench_preprocess.py): literal rule recall 0.00 / precision 0.00, default
  recall 0.62 / precision 0.52 (every departure and its measured effect: docs/system_b.md);
- perimeter (``perimeter="two_sided"``): the number of pixels on both sides of the component's
  edge (its own pixels with a 4-neighbour outside, plus outside pixels with a 4-neighbour in it;
  the image border counts as outside). With a one-sided or Euclidean perimeter no disc can satisfy
  area > 80 and area/perimeter < 2.5 at once (a disc has A/P = r/2), so the paper's statement that
  "the majority of nuclei" pass would be false; with the two-sided count it holds on real BACH
  nuclei. ``perimeter="inner"`` gives the one-sided count. Both are one vectorised pass over the
  label image;
- components are 8-connected; the "oval shape" the paper mentions is not tested (it gives no
  criterion), only area and area/perimeter;
- finer levels count the whole image's nuclei inside the chosen window (no second threshold
  computed from the window's own pixels);
- a centroid is counted in the window holding its pixel ``(floor(x), floor(y))``; windows are
  half-open ``[x, x+w) x [y, y+h)``;
- windows start at the parent's top-left corner and step by the stride with no extra window
  flush with the far edge (the paper notes the stride "cannot traverse the image completely",
  which is why it votes over six views); a window larger than its parent (or the image) is
  clamped to the parent's size on that axis;
- ties in count go to the window whose centre is nearest the parent's centre, then top, then left
  (a blank image gives the central window, not the top-left corner);
- the top-k level-1 windows are the k highest counts in that order, overlapping or not
  (``top_k_max_iou = 1.0``; the paper's 12 training windows "from candidate windows" are a
  translation augmentation); set ``top_k_max_iou < 1`` for greedy non-maximum suppression, in
  which case suppressed windows fill up the list only if fewer than k survive, so the number of
  regions is always ``min(k, candidate windows)``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields

import cv2
import numpy as np

from histobreast.errors import ConfigError
from histobreast.preprocess.patches import resize_rgb, window_starts

Box = tuple[int, int, int, int]  # (x, y, w, h) in image pixels


@dataclass(frozen=True)
class KremParams:
    """KREM settings, every pixel value defined at ``reference_mpp`` and scaled to the image's µm/px.

    ``min_area`` (px²) and ``max_area_perimeter`` (px) filter nuclei; ``windows``/``strides`` are
    the window sides and steps per level, coarse to fine (paper: 897/400/224 and 80/40/20);
    ``output_size`` is the side crops are resized to (224). The rest are defaults for what the
    paper leaves open (see the module docstring for why): ``threshold`` is ``"two_pass_mean"``
    (threshold at the mean of the pixels darker than the image mean) or ``"mean"`` (the image
    mean, the paper's literal rule); ``perimeter`` is ``"two_sided"`` (boundary pixels on both
    sides of the component's edge) or ``"inner"`` (the component's own boundary pixels);
    ``top_k_max_iou`` is 1.0 for plain ranking of the top-k windows, < 1 for non-maximum suppression.
    """

    reference_mpp: float = 0.42
    min_area: float = 80.0
    max_area_perimeter: float = 2.5
    windows: tuple[int, ...] = (897, 400, 224)
    strides: tuple[int, ...] = (80, 40, 20)
    output_size: int = 224
    threshold: str = "two_pass_mean"
    perimeter: str = "two_sided"
    top_k_max_iou: float = 1.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "windows", tuple(int(w) for w in self.windows))
        object.__setattr__(self, "strides", tuple(int(s) for s in self.strides))
        problems = []
        if self.reference_mpp <= 0:
            problems.append(f"reference_mpp must be > 0, got {self.reference_mpp}")
        if self.min_area < 0 or self.max_area_perimeter <= 0:
            problems.append(
                f"min_area must be >= 0 and max_area_perimeter > 0, got {self.min_area} and {self.max_area_perimeter}"
            )
        if not self.windows or len(self.windows) != len(self.strides):
            problems.append(f"windows {self.windows} and strides {self.strides} must be non-empty and equally long")
        if any(v <= 0 for v in self.windows + self.strides) or self.output_size <= 0:
            problems.append("windows, strides and output_size must be positive")
        if self.threshold not in ("two_pass_mean", "mean"):
            problems.append(f"threshold must be 'two_pass_mean' or 'mean', got {self.threshold!r}")
        if self.perimeter not in ("two_sided", "inner"):
            problems.append(f"perimeter must be 'two_sided' or 'inner', got {self.perimeter!r}")
        if not 0.0 < self.top_k_max_iou <= 1.0:
            problems.append(f"top_k_max_iou must be in (0, 1], got {self.top_k_max_iou}")
        if problems:
            raise ConfigError("KremParams: " + "; ".join(problems))

    def scale(self, microns_per_pixel: float) -> float:
        """Image pixels per reference pixel: ``reference_mpp / microns_per_pixel`` (lengths scale by it)."""
        if not microns_per_pixel > 0:
            raise ConfigError(f"microns_per_pixel must be > 0, got {microns_per_pixel}")
        return self.reference_mpp / microns_per_pixel

    def scaled_windows(self, microns_per_pixel: float) -> tuple[tuple[int, int], ...]:
        """``(window, stride)`` per level in the image's pixels (rounded, at least 1 px)."""
        s = self.scale(microns_per_pixel)
        return tuple((max(1, round(w * s)), max(1, round(st * s))) for w, st in zip(self.windows, self.strides))

    def to_dict(self) -> dict[str, object]:
        """Plain JSON-able dict (cache keys, run records)."""
        return {f.name: getattr(self, f.name) for f in fields(self)}


@dataclass(frozen=True)
class Nuclei:
    """Nuclei found by KREM: centroids ``(N, 2)`` float ``(x, y)`` and per-nucleus area and perimeter (px).

    ``labels`` is the ``(H, W)`` component label image and ``keep`` flags the labels kept as nuclei;
    ``mask`` (their union, ``(H, W)`` bool) is built only when asked for, since KREM does not need it.
    """

    centroids: np.ndarray
    areas: np.ndarray
    perimeters: np.ndarray
    labels: np.ndarray
    keep: np.ndarray

    def __len__(self) -> int:
        return int(self.centroids.shape[0])

    @property
    def mask(self) -> np.ndarray:
        """``(H, W)`` bool mask of the pixels of kept components."""
        return self.keep[self.labels]


@dataclass(frozen=True)
class KeyRegion:
    """Nested key windows, level 1 (largest) first; each box ``(x, y, w, h)`` lies inside its parent."""

    boxes: tuple[Box, ...]
    counts: tuple[int, ...]


def _check_rgb(image: np.ndarray) -> None:
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ConfigError(f"KREM expects an (H, W, 3) uint8 RGB image, got shape {image.shape} {image.dtype}")


def _dark_pixels(gray: np.ndarray, threshold: str) -> np.ndarray:
    """uint8 0/1 map of pixels darker than the threshold (see :class:`KremParams`)."""
    histogram = cv2.calcHist([gray], [0], None, [256], [0, 256]).ravel().astype(np.float64)
    levels = np.arange(256.0)
    level = histogram @ levels / histogram.sum()
    if threshold == "two_pass_mean":
        below = histogram[: int(np.ceil(level))]
        if below.sum() > 0:
            level = below @ levels[: below.size] / below.sum()
    # gray < level for integer grey values is gray <= ceil(level) - 1 (THRESH_BINARY_INV keeps <=).
    return cv2.threshold(gray, np.ceil(level) - 1, 1, cv2.THRESH_BINARY_INV)[1]


def _pixel_coordinates(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(rows, cols)`` of the non-zero pixels of a uint8 mask, in raster order."""
    points = cv2.findNonZero(mask)
    if points is None:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    points = points.reshape(-1, 2).astype(np.int64)
    return points[:, 1], points[:, 0]


def _perimeters(dark: np.ndarray, labels: np.ndarray, n: int, two_sided: bool) -> np.ndarray:
    """Per-label perimeter: component pixels with a 4-neighbour outside (the image border counts as
    outside), plus, when ``two_sided``, outside pixels with a 4-neighbour in the component."""
    cross = cv2.getStructuringElement(cv2.MORPH_CROSS, (3, 3))
    eroded = cv2.erode(dark, cross, borderType=cv2.BORDER_CONSTANT, borderValue=0)
    band = (cv2.dilate(dark, cross) if two_sided else dark) - eroded
    rows, cols = _pixel_coordinates(band)
    # Labels of each band pixel and its 4 neighbours, read from a copy padded with background.
    width = labels.shape[1] + 2
    padded = cv2.copyMakeBorder(labels, 1, 1, 1, 1, cv2.BORDER_CONSTANT, value=0).reshape(-1)
    at = (rows + 1) * width + cols + 1
    # With 8-connected components a pixel and its 4-neighbours hold at most two labels besides the
    # background (on opposite sides of it), so the largest and the smallest non-zero label are all of them.
    largest = padded[at]
    smallest = np.where(largest == 0, n, largest)
    for offset in (-1, 1, -width, width):
        neighbour = padded[at + offset]
        np.maximum(largest, neighbour, out=largest)
        np.minimum(smallest, np.where(neighbour == 0, n, neighbour), out=smallest)
    return np.bincount(largest, minlength=n) + np.bincount(smallest[smallest != largest], minlength=n)


def detect_nuclei(image: np.ndarray, microns_per_pixel: float, params: KremParams = KremParams()) -> Nuclei:
    """Nucleus-like dark components: threshold the grey image, keep components by area and area/perimeter."""
    _check_rgb(image)
    scale = params.scale(microns_per_pixel)
    dark = _dark_pixels(cv2.cvtColor(image, cv2.COLOR_RGB2GRAY), params.threshold)
    # connectedComponentsWithStats costs ~3x the labelling itself; areas and centroids are cheaper
    # from the dark pixels' coordinates.
    n, labels = cv2.connectedComponents(dark, connectivity=8, ltype=cv2.CV_32S)
    rows, cols = _pixel_coordinates(dark)
    own = labels[rows, cols]
    areas = np.bincount(own, minlength=n)
    perimeters = _perimeters(dark, labels, n, params.perimeter == "two_sided")
    keep = (areas > params.min_area * scale**2) & (areas < params.max_area_perimeter * scale * perimeters)
    keep[0] = False  # label 0 is everything brighter than the threshold
    kept = np.flatnonzero(keep)
    in_kept = keep[own]
    sums = [np.bincount(own[in_kept], weights=coord[in_kept], minlength=n)[kept] for coord in (cols, rows)]
    centroids = np.stack(sums, axis=1) / areas[kept, None] if len(kept) else np.zeros((0, 2))
    return Nuclei(centroids=centroids, areas=areas[kept], perimeters=perimeters[kept], labels=labels, keep=keep)


def _integral_counts(centroids: np.ndarray, height: int, width: int) -> np.ndarray:
    """Integral image ``(H+1, W+1)`` of the per-pixel centroid counts (float32: exact below 2**24 nuclei)."""
    cols = np.clip(np.floor(centroids[:, 0]).astype(np.int64), 0, width - 1)
    rows = np.clip(np.floor(centroids[:, 1]).astype(np.int64), 0, height - 1)
    counts = np.zeros((height, width), dtype=np.float32)
    np.add.at(counts, (rows, cols), 1.0)
    return cv2.integral(counts, sdepth=cv2.CV_32F)


def _ranked_windows(integral: np.ndarray, parent: Box, window: int, stride: int) -> tuple[np.ndarray, np.ndarray]:
    """All windows inside ``parent``, best first: boxes ``(M, 4)`` and their centroid counts ``(M,)``."""
    px, py, pw, ph = parent
    w, h = min(window, pw), min(window, ph)
    xs = px + window_starts(pw, w, stride)
    ys = py + window_starts(ph, h, stride)
    x0, y0 = np.meshgrid(xs, ys)
    counts = (integral[y0 + h, x0 + w] - integral[y0, x0 + w] - integral[y0 + h, x0] + integral[y0, x0]).astype(
        np.int64
    )
    centre_distance = (x0 + w / 2 - (px + pw / 2)) ** 2 + (y0 + h / 2 - (py + ph / 2)) ** 2
    # lexsort: last key is primary -> most nuclei, then nearest the parent's centre, then top, then left.
    order = np.lexsort((x0.ravel(), y0.ravel(), centre_distance.ravel(), -counts.ravel()))
    boxes = np.stack([x0.ravel(), y0.ravel(), np.full(x0.size, w), np.full(x0.size, h)], axis=1)
    return boxes[order], counts.ravel()[order]


def _iou(box: np.ndarray, others: np.ndarray) -> np.ndarray:
    x1 = np.maximum(box[0], others[:, 0])
    y1 = np.maximum(box[1], others[:, 1])
    x2 = np.minimum(box[0] + box[2], others[:, 0] + others[:, 2])
    y2 = np.minimum(box[1] + box[3], others[:, 1] + others[:, 3])
    inter = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    return inter / (box[2] * box[3] + others[:, 2] * others[:, 3] - inter)


def _select_top_k(boxes: np.ndarray, top_k: int, max_iou: float) -> list[int]:
    """Indices of the first ``top_k`` ranked boxes, skipping overlaps above ``max_iou`` while others remain."""
    if max_iou >= 1.0:
        return list(range(min(top_k, len(boxes))))
    chosen: list[int] = []
    for i in range(len(boxes)):
        if len(chosen) == top_k:
            break
        if not chosen or _iou(boxes[i], boxes[chosen]).max() <= max_iou:
            chosen.append(i)
    suppressed = (i for i in range(len(boxes)) if i not in chosen)
    while len(chosen) < min(top_k, len(boxes)):
        chosen.append(next(suppressed))
    return chosen


def regions_from_centroids(
    centroids: np.ndarray,
    image_size: tuple[int, int],
    microns_per_pixel: float,
    params: KremParams = KremParams(),
    top_k: int = 1,
) -> list[KeyRegion]:
    """Nested densest windows from nucleus centroids in an image of ``image_size = (width, height)``."""
    if top_k < 1:
        raise ConfigError(f"top_k must be >= 1, got {top_k}")
    width, height = image_size
    integral = _integral_counts(np.asarray(centroids, dtype=np.float64).reshape(-1, 2), height, width)
    levels = params.scaled_windows(microns_per_pixel)
    boxes, counts = _ranked_windows(integral, (0, 0, width, height), *levels[0])
    regions = []
    for i in _select_top_k(boxes, top_k, params.top_k_max_iou):
        chain: list[Box] = [tuple(int(v) for v in boxes[i])]
        chain_counts = [int(counts[i])]
        for window, stride in levels[1:]:
            sub_boxes, sub_counts = _ranked_windows(integral, chain[-1], window, stride)
            chain.append(tuple(int(v) for v in sub_boxes[0]))
            chain_counts.append(int(sub_counts[0]))
        regions.append(KeyRegion(boxes=tuple(chain), counts=tuple(chain_counts)))
    return regions


def key_regions(
    image: np.ndarray, microns_per_pixel: float, params: KremParams = KremParams(), top_k: int = 1
) -> list[KeyRegion]:
    """The ``top_k`` densest level-1 windows of ``image`` (densest first), each refined to the finer levels."""
    nuclei = detect_nuclei(image, microns_per_pixel, params)
    return regions_from_centroids(nuclei.centroids, (image.shape[1], image.shape[0]), microns_per_pixel, params, top_k)


def crop_key_region(
    image: np.ndarray, region: KeyRegion, output_size: int = 224, interpolation: str = "bilinear"
) -> np.ndarray:
    """Crops of ``region``'s boxes resized to ``output_size``: ``(levels, S, S, 3)`` uint8, coarse to fine.

    The paper subsamples with bilinear interpolation (4x, 1.79x and 1x at 0.42 µm/px).
    """
    return np.stack(
        [
            resize_rgb(image[y : y + h, x : x + w], (output_size, output_size), interpolation)
            for x, y, w, h in region.boxes
        ]
    )


# Overlay colours (RGB): nuclei outlines, then levels 1..3 (blue, orange, yellow read well on H&E pink).
NUCLEI_COLOUR = (0, 255, 0)
LEVEL_COLOURS = ((70, 150, 255), (255, 140, 0), (255, 235, 0))


def draw_overlay(image: np.ndarray, nuclei: Nuclei, regions: Sequence[KeyRegion]) -> np.ndarray:
    """A copy of ``image`` with nuclei outlines and the nested windows drawn on it, for checking by eye.

    The densest region is drawn with thick lines, one colour per level, and a legend (top-left, on a
    dark band); further top-k level-1 windows are drawn thin.
    """
    _check_rgb(image)
    out = image.copy()
    thick = max(2, round(min(image.shape[:2]) / 250))
    contours, _ = cv2.findContours(nuclei.mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    cv2.drawContours(out, contours, -1, NUCLEI_COLOUR, max(1, thick // 3))
    for region in regions[1:]:
        x, y, w, h = region.boxes[0]
        cv2.rectangle(out, (x, y), (x + w - 1, y + h - 1), LEVEL_COLOURS[0], max(1, thick // 2))
    legend = [(f"{len(nuclei)} nuclei", NUCLEI_COLOUR)]
    if regions:
        for level, ((x, y, w, h), count) in enumerate(zip(regions[0].boxes, regions[0].counts)):
            colour = LEVEL_COLOURS[level % len(LEVEL_COLOURS)]
            cv2.rectangle(out, (x, y), (x + w - 1, y + h - 1), colour, thick)
            legend.append((f"level {level + 1}: {w}x{h} px, {count} nuclei", colour))
    font, scale, weight = cv2.FONT_HERSHEY_SIMPLEX, thick / 4, max(1, thick // 2)
    (text_width, text_height), _ = cv2.getTextSize(max((t for t, _ in legend), key=len), font, scale, weight)
    line = round(text_height * 1.6)
    band = out[: line * len(legend) + line // 2, : text_width + 2 * thick]
    band[:] = (band * 0.35).astype(np.uint8)  # darken behind the text so every colour reads
    for i, (text, colour) in enumerate(legend, start=1):
        cv2.putText(out, text, (thick, line * i), font, scale, colour, weight, cv2.LINE_AA)
    return out
