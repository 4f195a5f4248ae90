"""Synthetic H&E images and dataset trees in the real BreaKHis and BACH layouts (numpy + OpenCV).

The embedded data of the demo and of most tests. Images are rendered in optical density (Beer-Lambert
law with a reference haematoxylin and eosin stain matrix), so colours mix like real stains: pink
eosin stroma with fibre texture, purple-blue haematoxylin nuclei, white lumina and fat.

Classes differ the way real ones do (sizes are physical, in µm, so they scale with µm/pixel):

- normal / benign: sparse, small (5-7 µm), round, regular nuclei lining gland and duct-like rings
  around white lumina; abundant stroma, fat in normal tissue;
- in situ: round duct-like structures filled with dense, larger nuclei inside an intact rim of flat
  myoepithelial nuclei;
- invasive / malignant: dense, large (8-13 µm), pleomorphic (elongated, lobulated) nuclei in sheets,
  nests and single files that disrupt the architecture; mucin pools (MC) and papillary fronds (PC).

Malignant nuclei are large, irregular and clustered, so a nuclei-density method (KREM: threshold at
the gray mean, components with area > 80 px and area/perimeter < 2.5 at 0.42 µm/px) finds far more of
them, concentrated in the clusters. Patients have their own stain, illumination, nuclear size and
density (images of one patient look alike, so patient-level splits matter); each image adds small
jitter and sensor noise, so classes are learnable but not trivially. Every image is a pure function
of (seed, patient, file name): generating a subset gives the same pixels.
"""

from __future__ import annotations

import shutil
import zlib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import cv2
import numpy as np

from histobreast.atomic import atomic_write_bytes, atomic_write_text
from histobreast.data.bach import (
    BACH_CLASSES,
    BACH_MICRONS_PER_PIXEL,
    DATASET_DIR,
    DEFAULT_BLOCK_SIZE,
    GROUND_TRUTH_CSV,
    bach_filename,
    bach_patient_id,
)
from histobreast.data.bach import NATIVE_SIZE as BACH_NATIVE_SIZE
from histobreast.data.breakhis import (
    BREAKHIS_SUBTYPES,
    DEFAULT_MICRONS_PER_PIXEL,
    MAGNIFICATIONS,
    TREE_PREFIX,
    BreakhisName,
    parse_breakhis_name,
    read_breakhis_folds,
    write_dsfold,
)
from histobreast.data.breakhis import NATIVE_SIZE as BREAKHIS_NATIVE_SIZE
from histobreast.data.records import SCALE_FILE, ImageRecord, write_scale_file
from histobreast.data.splits import patient_split
from histobreast.errors import DatasetError

# Optical densities of unit stain, RGB order: the reference H&E stain matrix of Macenko et al. (2009)
# as used by common stain-normalisation code; it gives the lilac-pink of real H&E better than the
# older Ruifrok & Johnston vectors.
HAEMATOXYLIN_OD = np.array([0.5626, 0.7201, 0.4062], dtype=np.float32)
EOSIN_OD = np.array([0.2159, 0.8012, 0.5581], dtype=np.float32)
_H_SCALE = 1.6  # haematoxylin concentration stored as 255 in the nuclei map
Progress = Callable[[int, int], None]  # (images done, images in total)


@dataclass(frozen=True)
class NucleiSpec:
    """Nuclei of one cell type: equivalent diameter (µm), major/minor ratio, share drawn lobulated
    (pleomorphism) and haematoxylin concentration, each a (low, high) range.

    ``coarse`` nuclei (carcinoma) have clumped chromatin with clear spaces between the clumps
    ("disturbed chromatin distribution"); the others are evenly dark, as small benign nuclei look.
    """

    diameter_um: tuple[float, float]
    elongation: tuple[float, float] = (1.0, 1.3)
    irregular: float = 0.0
    darkness: tuple[float, float] = (0.7, 0.9)
    coarse: bool = False


NORMAL_NUCLEI = NucleiSpec((5.0, 6.5), (1.0, 1.35), 0.0, (0.6, 0.8))
BENIGN_NUCLEI = NucleiSpec((5.5, 7.0), (1.0, 1.5), 0.03, (0.65, 0.85))
IN_SITU_NUCLEI = NucleiSpec((7.0, 10.0), (1.1, 2.0), 0.3, (0.8, 1.05), coarse=True)
INVASIVE_NUCLEI = NucleiSpec((8.0, 13.0), (1.2, 2.2), 0.45, (0.85, 1.1), coarse=True)
LOBULAR_NUCLEI = NucleiSpec((7.0, 9.5), (1.1, 2.0), 0.25, (0.85, 1.05), coarse=True)
FIBROBLAST_NUCLEI = NucleiSpec((5.0, 6.5), (3.5, 6.0), 0.0, (0.6, 0.8))
CHROMATIN_CLUMP_UM = 0.8  # size of the chromatin clumps of coarse nuclei
LYMPHOCYTE_NUCLEI = NucleiSpec((5.0, 6.0), (1.0, 1.15), 0.0, (1.0, 1.15))
MYOEPITHELIAL_NUCLEI = NucleiSpec((5.0, 6.5), (2.5, 3.5), 0.0, (0.7, 0.85))


@dataclass(frozen=True)
class Tissue:
    """One class's architecture: structures per mm² of field and the nuclei they hold.

    The first non-zero of (ducts, sheets, fronds, glands) is the class's defining structure; at least
    one is drawn near the centre of every image, so even a 400X field shows it.
    """

    glands_per_mm2: float = 0.0
    gland_radius_um: tuple[float, float] = (25.0, 55.0)
    gland_aspect: tuple[float, float] = (1.0, 1.6)
    gland_layers: int = 1
    gland_nuclei: NucleiSpec = BENIGN_NUCLEI
    clustered_glands: bool = True
    ducts_per_mm2: float = 0.0
    duct_radius_um: tuple[float, float] = (60.0, 110.0)
    sheets_per_mm2: float = 0.0
    sheet_radius_um: tuple[float, float] = (30.0, 80.0)
    cell_spacing: float = 1.7  # tumour cell size as a multiple of the nuclear diameter
    files_per_mm2: float = 0.0
    fronds_per_mm2: float = 0.0
    mucin_per_mm2: float = 0.0
    fat_per_mm2: float = 0.0
    tumour_nuclei: NucleiSpec = INVASIVE_NUCLEI
    fibroblasts_per_mm2: float = 900.0
    lymphocytes_per_mm2: float = 150.0


# Densities are set so that KREM's nuclei detector counts, as on the real BACH copies at 0.84 µm/px
# (mean nuclei per image: Normal 460 < Benign 555 < InSitu 660 < Invasive 722), more nuclei in
# carcinoma than in benign or normal tissue (tests/test_data_synthetic.py checks the order).
TISSUES: dict[str, Tissue] = {
    # BACH classes
    "Normal": Tissue(glands_per_mm2=25, gland_nuclei=NORMAL_NUCLEI, fat_per_mm2=2.5, fibroblasts_per_mm2=700),
    "Benign": Tissue(glands_per_mm2=40, gland_layers=2, gland_radius_um=(20, 45), lymphocytes_per_mm2=150),
    "InSitu": Tissue(ducts_per_mm2=11, glands_per_mm2=10, tumour_nuclei=IN_SITU_NUCLEI),
    "Invasive": Tissue(sheets_per_mm2=30, files_per_mm2=25, lymphocytes_per_mm2=400),
    # BreaKHis benign subtypes
    "A": Tissue(glands_per_mm2=80, gland_radius_um=(15, 35), gland_layers=2),
    "F": Tissue(
        glands_per_mm2=30,
        gland_aspect=(2.5, 5.0),
        gland_radius_um=(30, 70),
        fibroblasts_per_mm2=1100,
        clustered_glands=False,
    ),
    "PT": Tissue(
        glands_per_mm2=20,
        gland_aspect=(3.0, 6.0),
        gland_radius_um=(40, 90),
        fibroblasts_per_mm2=2000,
        clustered_glands=False,
    ),
    "TA": Tissue(glands_per_mm2=160, gland_radius_um=(15, 30), gland_aspect=(1.0, 1.3), fibroblasts_per_mm2=600),
    # BreaKHis malignant subtypes
    "DC": Tissue(sheets_per_mm2=25, ducts_per_mm2=2, files_per_mm2=10, lymphocytes_per_mm2=400),
    "LC": Tissue(files_per_mm2=120, sheets_per_mm2=6, sheet_radius_um=(20, 45), tumour_nuclei=LOBULAR_NUCLEI),
    "MC": Tissue(mucin_per_mm2=6, sheets_per_mm2=22, sheet_radius_um=(15, 40)),
    "PC": Tissue(fronds_per_mm2=10, sheets_per_mm2=14),
}


@dataclass(frozen=True)
class Style:
    """Stain and acquisition of one patient (shared by its images), jittered a little per image."""

    haematoxylin: np.ndarray = field(default_factory=lambda: HAEMATOXYLIN_OD.copy())
    eosin: np.ndarray = field(default_factory=lambda: EOSIN_OD.copy())
    eosin_gain: float = 1.0
    haematoxylin_gain: float = 1.0
    illumination: np.ndarray = field(default_factory=lambda: np.full(3, 250.0, np.float32))
    nuclear_scale: float = 1.0
    density_scale: float = 1.0
    noise: float = 2.5

    @classmethod
    def random(cls, rng: np.random.Generator) -> Style:
        """A patient's style: stain vectors turned a little, gains, illumination, nuclear size, density."""
        return cls(
            haematoxylin=_turn(HAEMATOXYLIN_OD, rng, 0.08),
            eosin=_turn(EOSIN_OD, rng, 0.08),
            eosin_gain=rng.uniform(0.8, 1.2),
            haematoxylin_gain=rng.uniform(0.8, 1.2),
            illumination=rng.uniform(232, 255, 3).astype(np.float32),
            nuclear_scale=rng.uniform(0.9, 1.1),
            density_scale=rng.uniform(0.8, 1.2),
            noise=rng.uniform(1.5, 3.5),
        )

    def jitter(self, rng: np.random.Generator) -> Style:
        """The same patient under slightly different staining/lighting (one image)."""
        return replace(
            self,
            eosin_gain=self.eosin_gain * rng.uniform(0.92, 1.08),
            haematoxylin_gain=self.haematoxylin_gain * rng.uniform(0.93, 1.07),
            illumination=np.clip(self.illumination + rng.uniform(-6, 6, 3), 200, 255).astype(np.float32),
        )


def _turn(vector: np.ndarray, rng: np.random.Generator, amount: float) -> np.ndarray:
    turned = np.clip(vector + rng.normal(0, amount, 3), 0.02, None).astype(np.float32)
    return turned * (np.linalg.norm(vector) / np.linalg.norm(turned))


class _Canvas:
    """Maps being drawn for one image: lumen/epithelium/mucin/tumour masks and nuclei, one row each:
    (x, y, semi-major, semi-minor, angle, darkness, coarse chromatin 0/1) in pixels and degrees."""

    def __init__(self, width: int, height: int, mpp: float, rng: np.random.Generator, style: Style) -> None:
        self.width, self.height, self.mpp, self.rng, self.style = width, height, mpp, rng, style
        self.lumen = np.zeros((height, width), np.uint8)
        self.epithelium = np.zeros((height, width), np.uint8)
        self.mucin = np.zeros((height, width), np.uint8)
        self.tumour = np.zeros((height, width), np.uint8)  # where tumour cells pack (filled after drawing)
        self.nuclei: list[np.ndarray] = []
        self.area_mm2 = width * height * mpp * mpp / 1e6
        self.fibre_angle = rng.uniform(0, 180)

    def px(self, um: np.ndarray | float) -> np.ndarray | float:
        return np.asarray(um) / self.mpp if isinstance(um, np.ndarray) else um / self.mpp

    def count(self, per_mm2: float, at_least: int = 0) -> int:
        return max(at_least, int(self.rng.poisson(per_mm2 * self.area_mm2 * self.style.density_scale)))

    def centres(self, n: int, margin_px: float = 0.0, central_first: bool = False) -> np.ndarray:
        """n random points (px), allowed ``margin_px`` beyond the border; the first near the centre if asked."""
        pts = self.rng.uniform([-margin_px, -margin_px], [self.width + margin_px, self.height + margin_px], (n, 2))
        if central_first and n:
            pts[0] = self.rng.uniform([0.3 * self.width, 0.3 * self.height], [0.7 * self.width, 0.7 * self.height])
        return pts

    def add_nuclei(self, centres: np.ndarray, spec: NucleiSpec, angles: np.ndarray | None = None) -> None:
        """Add nuclei at ``centres`` (px); lobulated ones get a second, offset lobe (pleomorphism)."""
        n = len(centres)
        if n == 0:
            return
        rng = self.rng
        diameter = rng.uniform(*spec.diameter_um, n) * self.style.nuclear_scale / self.mpp
        elongation = rng.uniform(*spec.elongation, n)
        a, b = diameter / 2 * np.sqrt(elongation), diameter / 2 / np.sqrt(elongation)
        angle = rng.uniform(0, 180, n) if angles is None else angles + rng.normal(0, 12, n)
        dark = rng.uniform(*spec.darkness, n) * self.style.haematoxylin_gain
        coarse = np.full(n, float(spec.coarse))
        rows = [np.column_stack([centres, a, b, angle, dark, coarse])]
        lobed = rng.random(n) < spec.irregular
        if lobed.any():
            theta = np.deg2rad(angle[lobed] + rng.normal(0, 50, lobed.sum()))
            offset = 0.6 * a[lobed]
            lobe_centres = centres[lobed] + np.column_stack([np.cos(theta), np.sin(theta)]) * offset[:, None]
            scale = rng.uniform(0.5, 0.8, lobed.sum())
            rows.append(
                np.column_stack(
                    [
                        lobe_centres,
                        a[lobed] * scale,
                        b[lobed] * scale,
                        angle[lobed] + rng.uniform(-60, 60, lobed.sum()),
                        dark[lobed],
                        coarse[lobed],
                    ]
                )
            )
        self.nuclei.extend(rows)


def _ellipses(
    mask: np.ndarray,
    centres: np.ndarray,
    a: np.ndarray,
    b: np.ndarray,
    angles: np.ndarray,
    values: np.ndarray | int = 255,
) -> None:
    """Fill ellipses (centres (n, 2), semi-axes a and b, angles in degrees) into ``mask``, in order,
    with sub-pixel precision (4 fractional bits); ``values`` is one value or one per ellipse."""
    n = len(centres)
    if n == 0:
        return
    values = np.broadcast_to(np.asarray(values), (n,))
    fixed = np.column_stack([centres * 16, np.maximum(a, 0.07) * 16, np.maximum(b, 0.07) * 16, values])
    for (cx, cy, ax, bx, value), angle in zip(fixed.astype(np.int64).tolist(), np.asarray(angles).tolist()):
        cv2.ellipse(mask, (cx, cy), (ax, bx), angle, 0, 360, value, -1, cv2.LINE_8, 4)


def _points_in_ellipses(
    rng: np.random.Generator,
    centres: np.ndarray,
    a: np.ndarray,
    b: np.ndarray,
    angles_deg: np.ndarray,
    counts: np.ndarray,
) -> np.ndarray:
    """Uniform random points inside each ellipse i (``counts[i]`` of them), vectorised."""
    idx = np.repeat(np.arange(len(centres)), counts)
    r = np.sqrt(rng.random(len(idx)))
    t = rng.uniform(0, 2 * np.pi, len(idx))
    return _on_ellipses(centres[idx], a[idx] * r, b[idx] * r, angles_deg[idx], t)


def _on_ellipses(
    centres: np.ndarray, a: np.ndarray, b: np.ndarray, angles_deg: np.ndarray, t: np.ndarray
) -> np.ndarray:
    """Points at parameter ``t`` on rotated ellipses (all arrays of one length)."""
    x, y = a * np.cos(t), b * np.sin(t)
    phi = np.deg2rad(angles_deg)
    return centres + np.column_stack([x * np.cos(phi) - y * np.sin(phi), x * np.sin(phi) + y * np.cos(phi)])


def _ring_nuclei(
    canvas: _Canvas,
    centres: np.ndarray,
    a: np.ndarray,
    b: np.ndarray,
    angles: np.ndarray,
    layers: int,
    spec: NucleiSpec,
    outward: bool,
) -> None:
    """Nuclei lining ellipses (glands: inside the wall; fronds: outside the core), oriented across it."""
    spacing = canvas.px(np.mean(spec.diameter_um) * 1.45)
    for layer in range(layers):
        grow = (layer + 0.6) * spacing * (1 if outward else -1)
        ra, rb = np.maximum(a + grow, spacing), np.maximum(b + grow, spacing)
        perimeter = np.pi * (3 * (ra + rb) - np.sqrt((3 * ra + rb) * (ra + 3 * rb)))
        counts = np.maximum((perimeter / spacing).astype(int), 3)
        idx = np.repeat(np.arange(len(centres)), counts)
        position = np.arange(len(idx)) - np.repeat(np.cumsum(counts) - counts, counts)  # 0..count-1 per ring
        t = (position + canvas.rng.uniform(-0.25, 0.25, len(idx))) * 2 * np.pi / counts[idx]
        pts = _on_ellipses(centres[idx], ra[idx], rb[idx], angles[idx], t)
        radial = np.rad2deg(np.arctan2(pts[:, 1] - centres[idx, 1], pts[:, 0] - centres[idx, 0]))
        canvas.add_nuclei(pts + canvas.rng.normal(0, 0.06 * spacing, pts.shape), spec, radial)


def _draw_glands(canvas: _Canvas, tissue: Tissue, defining: bool) -> None:
    """Glands and ducts: a white lumen inside a ring of epithelium lined by regular nuclei."""
    n = canvas.count(tissue.glands_per_mm2, at_least=int(defining))
    if not n:
        return
    rng = canvas.rng
    radius = canvas.px(rng.uniform(*tissue.gland_radius_um, n))
    aspect = rng.uniform(*tissue.gland_aspect, n)
    a, b = radius * np.sqrt(aspect), radius / np.sqrt(aspect)
    if tissue.clustered_glands:  # lobules: glands gather around a few centres
        lobules = canvas.centres(max(1, n // 12), central_first=defining)
        centres = lobules[rng.integers(0, len(lobules), n)] + rng.normal(0, canvas.px(120.0), (n, 2))
        if defining:
            centres[0] = lobules[0]
    else:
        centres = canvas.centres(n, central_first=defining)
    angles = rng.uniform(0, 180, n) if tissue.gland_aspect[1] < 2 else canvas.fibre_angle + rng.normal(0, 15, n)
    wall = canvas.px(np.mean(tissue.gland_nuclei.diameter_um) * 1.25) * tissue.gland_layers
    _ellipses(canvas.epithelium, centres, a + wall * 0.2, b + wall * 0.2, angles)
    _ellipses(canvas.lumen, centres, a - wall, b - wall, angles)
    _ring_nuclei(canvas, centres, a, b, angles, tissue.gland_layers, tissue.gland_nuclei, outward=False)


def _draw_ducts(canvas: _Canvas, tissue: Tissue, defining: bool) -> None:
    """Carcinoma in situ: round ducts filled with dense tumour nuclei inside a myoepithelial rim."""
    n = canvas.count(tissue.ducts_per_mm2, at_least=int(defining))
    if not n:
        return
    rng = canvas.rng
    radius = canvas.px(rng.uniform(*tissue.duct_radius_um, n))
    a, b = radius * rng.uniform(1.0, 1.25, n), radius / rng.uniform(1.0, 1.25, n)
    angles = rng.uniform(0, 180, n)
    centres = canvas.centres(n, central_first=defining)
    _ellipses(canvas.epithelium, centres, a, b, angles)
    _ellipses(canvas.tumour, centres, a * 0.9, b * 0.9, angles)
    holes = rng.integers(0, 4, n)  # cribriform spaces
    owner = np.repeat(np.arange(n), holes)
    spots = _points_in_ellipses(rng, centres, a * 0.7, b * 0.7, angles, holes)
    hole = canvas.px(rng.uniform(6, 14, len(owner)))
    _ellipses(canvas.lumen, spots, hole, hole, np.zeros(len(owner)))
    _ring_nuclei(canvas, centres, a, b, angles, 1, MYOEPITHELIAL_NUCLEI, outward=False)


def _draw_sheets(canvas: _Canvas, tissue: Tissue, centres: np.ndarray | None = None, defining: bool = False) -> None:
    """Invasive tumour: irregular nests and sheets (unions of ellipses) packed with pleomorphic nuclei."""
    rng = canvas.rng
    n = canvas.count(tissue.sheets_per_mm2, at_least=int(defining)) if centres is None else len(centres)
    if not n:
        return
    if centres is None:
        centres = canvas.centres(n, central_first=defining)
    parts = rng.integers(2, 6, n)
    owner = np.repeat(np.arange(n), parts)
    radius = canvas.px(rng.uniform(*tissue.sheet_radius_um, n))[owner] * rng.uniform(0.4, 0.9, len(owner))
    sub = centres[owner] + rng.normal(0, 1, (len(owner), 2)) * radius[:, None] * 0.9
    a, b = radius * rng.uniform(1.0, 1.6, len(owner)), radius / rng.uniform(1.0, 1.6, len(owner))
    angles = rng.uniform(0, 180, len(owner))
    _ellipses(canvas.epithelium, sub, a, b, angles)
    _ellipses(canvas.tumour, sub, a, b, angles)


def _fill_tumour(canvas: _Canvas, tissue: Tissue) -> None:
    """Pack tumour nuclei into the tumour mask: a jittered hexagonal lattice of cells (one nucleus
    each, cytoplasm between), so dense clusters stay separate nuclei rather than one dark blob."""
    if not canvas.tumour.any():
        return
    rng, spec = canvas.rng, tissue.tumour_nuclei
    spacing = canvas.px(np.mean(spec.diameter_um) * tissue.cell_spacing)
    rows, cols = int(canvas.height / (spacing * 0.866)) + 2, int(canvas.width / spacing) + 2
    yy, xx = np.mgrid[0:rows, 0:cols].astype(np.float64)
    points = np.column_stack([(xx + 0.5 * (yy % 2)).ravel() * spacing, yy.ravel() * spacing * 0.866])
    points += rng.normal(0, 0.18 * spacing, points.shape)
    xi, yi = points[:, 0].astype(int), points[:, 1].astype(int)
    inside = (xi >= 0) & (xi < canvas.width) & (yi >= 0) & (yi < canvas.height)
    points, xi, yi = points[inside], xi[inside], yi[inside]
    keep = (canvas.tumour[yi, xi] > 0) & (canvas.lumen[yi, xi] == 0)
    keep &= rng.random(len(points)) < min(1.0, 0.9 * canvas.style.density_scale)
    canvas.add_nuclei(points[keep], spec)


def _draw_single_files(canvas: _Canvas, tissue: Tissue) -> None:
    """Lobular-type invasion: single-file chains of tumour cells following the stroma."""
    n = canvas.count(tissue.files_per_mm2)
    if not n:
        return
    rng = canvas.rng
    lengths = rng.integers(5, 16, n)
    owner = np.repeat(np.arange(n), lengths)
    heading = np.deg2rad(canvas.fibre_angle + rng.normal(0, 25, n))[owner] + rng.normal(0, 0.25, len(owner))
    step = canvas.px(np.mean(tissue.tumour_nuclei.diameter_um) * 1.5)
    moves = np.column_stack([np.cos(heading), np.sin(heading)]) * step
    starts = np.cumsum(lengths) - lengths
    walk = np.cumsum(moves, axis=0)
    walk -= np.repeat(walk[starts] - moves[starts], lengths, axis=0)
    pts = canvas.centres(n)[owner] + walk
    canvas.add_nuclei(pts, tissue.tumour_nuclei, np.rad2deg(heading))


def _draw_fronds(canvas: _Canvas, tissue: Tissue) -> None:
    """Papillary carcinoma: finger-like fibrovascular cores lined by stratified tumour nuclei in open space."""
    n = canvas.count(tissue.fronds_per_mm2, at_least=1)
    rng = canvas.rng
    a, b = canvas.px(rng.uniform(70, 160, n)), canvas.px(rng.uniform(12, 25, n))
    angles = rng.uniform(0, 180, n)
    centres = canvas.centres(n, central_first=True)
    lining = canvas.px(np.mean(tissue.tumour_nuclei.diameter_um) * 1.25) * 2
    _ellipses(canvas.lumen, centres, a + lining * 2.5, b + lining * 2.5, angles)  # open space around
    _ellipses(canvas.lumen, centres, a + lining, b + lining, angles, 0)
    _ellipses(canvas.epithelium, centres, a + lining, b + lining, angles)
    _ellipses(canvas.epithelium, centres, a, b, angles, 0)  # the stromal core
    _ring_nuclei(canvas, centres, a, b, angles, 2, tissue.tumour_nuclei, outward=True)


def _draw_mucin(canvas: _Canvas, tissue: Tissue) -> None:
    """Mucinous carcinoma: pale mucin lakes with small tumour clusters floating in them."""
    n = canvas.count(tissue.mucin_per_mm2, at_least=1)
    rng = canvas.rng
    lakes = np.repeat(canvas.centres(n, central_first=True), rng.integers(2, 5, n), axis=0)
    lakes += rng.normal(0, canvas.px(70.0), lakes.shape)
    r = canvas.px(rng.uniform(60, 150, len(lakes)))
    _ellipses(canvas.mucin, lakes, r * rng.uniform(1, 1.5, len(lakes)), r, rng.uniform(0, 180, len(lakes)))
    clusters = rng.integers(1, 4, len(lakes))
    floating = (
        np.repeat(lakes, clusters, axis=0)
        + rng.normal(0, 1, (clusters.sum(), 2)) * np.repeat(r * 0.4, clusters)[:, None]
    )
    _draw_sheets(canvas, tissue, centres=floating)


def _draw_fat(canvas: _Canvas, tissue: Tissue) -> None:
    """Adipose tissue: packed white fat cells separated by thin septa."""
    rng = canvas.rng
    for centre in canvas.centres(canvas.count(tissue.fat_per_mm2)):
        cell = canvas.px(rng.uniform(25, 45))
        extent = canvas.px(rng.uniform(120, 260))
        steps = int(min(extent / cell, 40))
        grid = np.stack(np.meshgrid(np.arange(-steps, steps + 1), np.arange(-steps, steps + 1)), -1).reshape(-1, 2)
        grid = grid[np.linalg.norm(grid, axis=1) * 2 * cell < extent] * 2 * cell + centre
        grid += rng.normal(0, cell * 0.15, grid.shape)
        _ellipses(
            canvas.lumen,
            grid,
            cell * rng.uniform(0.8, 0.95, len(grid)),
            cell * rng.uniform(0.8, 0.95, len(grid)),
            rng.uniform(0, 180, len(grid)),
        )


def _draw_stroma_cells(canvas: _Canvas, tissue: Tissue) -> None:
    """Fibroblasts (thin, along the fibres) and lymphocytes (small, round, dark) scattered in stroma."""
    n = canvas.count(tissue.fibroblasts_per_mm2)
    canvas.add_nuclei(canvas.centres(n), FIBROBLAST_NUCLEI, np.full(n, canvas.fibre_angle))
    canvas.add_nuclei(canvas.centres(canvas.count(tissue.lymphocytes_per_mm2)), LYMPHOCYTE_NUCLEI)


def _stroma_eosin(rng: np.random.Generator, height: int, width: int, mpp: float, angle: float) -> np.ndarray:
    """Eosin of collagen stroma: a base level with slow variation (about 70 µm) and wavy fibres.

    Fibres are streaky noise (about 25 µm long, 2 µm wide) drawn in a frame turned to ``angle`` and
    sampled through a smooth displacement that bends them; one low-resolution 3-channel field gives
    both displacements and the slow variation.
    """
    side = int(np.hypot(width, height)) + 8
    streak_cells = (max(int(side * mpp / 2.0), 2), max(int(side * mpp / 25.0), 2))  # (rows, cols)
    streaks = cv2.resize(
        rng.standard_normal(streak_cells, dtype=np.float32), (side, side), interpolation=cv2.INTER_LINEAR
    )
    cell = 70.0 / mpp
    slow = cv2.resize(
        rng.standard_normal((int(height / cell) + 3, int(width / cell) + 3, 3), dtype=np.float32),
        (width, height),
        interpolation=cv2.INTER_CUBIC,
    )
    cos, sin = float(np.cos(np.deg2rad(angle))), float(np.sin(np.deg2rad(angle)))
    xs = np.arange(width, dtype=np.float32) - width / 2
    ys = np.arange(height, dtype=np.float32)[:, None] - height / 2
    bend = 10.0 / mpp
    map_x = cos * xs + sin * ys + side / 2 + bend * slow[..., 0]
    map_y = cos * ys - sin * xs + side / 2 + bend * slow[..., 1]
    fibres = cv2.remap(streaks, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
    # Collagen is an even pink; the texture is lighter clefts between bundles (never darker streaks,
    # which a nuclei detector thresholding at the mean gray would pick up as thin dark fragments).
    np.minimum(fibres, 0.0, out=fibres)
    return cv2.addWeighted(fibres, 0.06, np.ascontiguousarray(slow[..., 2]), 0.04, 0.33)


def _nuclei_map(canvas: _Canvas) -> np.ndarray:
    """Haematoxylin concentration of all nuclei, with chromatin texture.

    Nuclei at least a pixel wide are filled ellipses (fine chromatin: +-15 %; coarse chromatin: clumps
    about 0.8 µm across, clear spaces nearly unstained). Smaller ones deposit their stain mass
    at three points along their long axis, spread over about a pixel.
    """
    h, w = canvas.height, canvas.width
    if not canvas.nuclei:
        return np.zeros((h, w), np.float32)
    rng = canvas.rng
    nuc = np.concatenate(canvas.nuclei)
    x, y, a = nuc[:, 0], nuc[:, 1], nuc[:, 2]
    nuc = nuc[(x > -a) & (x < w + a) & (y > -a) & (y < h + a)]
    big = nuc[:, 3] >= 1.0  # minor semi-axis of at least one pixel: draw the shape
    conc = np.zeros((h, w), np.float32)
    for coarse in (False, True):
        drawn = nuc[big & ((nuc[:, 6] > 0) == coarse)]
        if not len(drawn):
            continue
        shapes = np.zeros((h, w), np.uint8)
        _ellipses(
            shapes, drawn[:, :2], drawn[:, 2], drawn[:, 3], drawn[:, 4], np.clip(drawn[:, 5] / _H_SCALE * 255, 0, 255)
        )
        layer = cv2.GaussianBlur(shapes, (0, 0), 0.6).astype(np.float32) * (_H_SCALE / 255)
        if coarse:
            cell = CHROMATIN_CLUMP_UM / canvas.mpp
            grain = rng.random((int(h / cell) + 2, int(w / cell) + 2) if cell > 1.5 else (h, w), dtype=np.float32)
            grain = cv2.resize(grain, (w, h), interpolation=cv2.INTER_LINEAR) if cell > 1.5 else grain
            layer *= np.where(grain > 0.45, np.float32(1.2), np.float32(0.08))
        else:
            layer *= cv2.addWeighted(rng.random((h, w), dtype=np.float32), 0.3, layer, 0.0, 0.85)
        conc += layer
    small = nuc[~big]
    if len(small):
        phi = np.deg2rad(small[:, 4])
        along = np.column_stack([np.cos(phi), np.sin(phi)]) * (0.6 * small[:, 2:3])
        points = np.concatenate([small[:, :2], small[:, :2] + along, small[:, :2] - along])
        mass = np.tile(np.pi * small[:, 2] * small[:, 3] * small[:, 5] / 3, 3)
        xi, yi = np.clip(points[:, 0].astype(int), 0, w - 1), np.clip(points[:, 1].astype(int), 0, h - 1)
        splat = np.bincount(yi * w + xi, weights=mass, minlength=h * w).reshape(h, w).astype(np.float32)
        conc += np.minimum(cv2.GaussianBlur(splat, (0, 0), 0.7), _H_SCALE)
    return conc


def render_he(
    tissue: str | Tissue,
    size: tuple[int, int],
    microns_per_pixel: float,
    rng: np.random.Generator,
    style: Style | None = None,
) -> np.ndarray:
    """Render one synthetic H&E image ``(height, width, 3)`` uint8 RGB of ``tissue`` at ``microns_per_pixel``.

    ``tissue`` is a key of :data:`TISSUES` (a BACH class or a BreaKHis subtype) or a :class:`Tissue`;
    ``size`` is ``(width, height)``. Deterministic given ``rng`` and ``style``.
    """
    if isinstance(tissue, str):
        if tissue not in TISSUES:
            raise DatasetError(f"unknown synthetic tissue {tissue!r}; expected one of {sorted(TISSUES)}")
        tissue = TISSUES[tissue]
    width, height = size
    if width < 1 or height < 1 or microns_per_pixel <= 0:
        raise DatasetError(f"image size must be positive and microns_per_pixel > 0, got {size}, {microns_per_pixel}")
    style = (style or Style.random(rng)).jitter(rng)
    canvas = _Canvas(width, height, microns_per_pixel, rng, style)
    mpp = microns_per_pixel
    defining = next(
        k
        for k, v in (
            ("ducts", tissue.ducts_per_mm2),
            ("sheets", tissue.sheets_per_mm2),
            ("fronds", tissue.fronds_per_mm2),
            ("mucin", tissue.mucin_per_mm2),
            ("glands", tissue.glands_per_mm2),
            ("none", 1),
        )
        if v > 0
    )
    _draw_fat(canvas, tissue)
    if tissue.mucin_per_mm2:
        _draw_mucin(canvas, tissue)
    if tissue.fronds_per_mm2:
        _draw_fronds(canvas, tissue)
    _draw_glands(canvas, tissue, defining == "glands")
    _draw_ducts(canvas, tissue, defining == "ducts")
    _draw_sheets(canvas, tissue, defining=defining == "sheets")
    _fill_tumour(canvas, tissue)
    _draw_single_files(canvas, tissue)
    _draw_stroma_cells(canvas, tissue)

    soften = max(0.8 / mpp, 0.5)  # masks get soft edges about 1 µm wide
    eosin = _stroma_eosin(rng, height, width, mpp, canvas.fibre_angle)
    haem = _nuclei_map(canvas)
    haem += 0.03
    # Each structure mask blends eosin towards its own level and adds a little haematoxylin.
    for mask, blur, eosin_level, haem_level in (
        (canvas.epithelium, soften, 0.22, 0.04),
        (canvas.mucin, soften * 3, 0.06, 0.12),
        (canvas.lumen, soften, 0.02, -0.03),
    ):
        if not mask.any():
            continue
        weight = np.multiply(cv2.GaussianBlur(mask, (0, 0), blur), 1 / 255, dtype=np.float32)
        towards = np.subtract(eosin_level, eosin, dtype=np.float32)
        towards *= weight
        eosin += towards
        cv2.scaleAdd(weight, haem_level, haem, dst=haem)
    eosin *= style.eosin_gain
    # Beer-Lambert per channel: illumination * exp(-(H * h_c + E * e_c)); then uniform sensor noise
    # (standard deviation style.noise), drawn as bytes and scaled by a lookup table.
    amplitude = style.noise * 3.46
    scale_noise = np.round(np.arange(256) / 255 * amplitude).astype(np.uint8)
    log_light = np.log(style.illumination)
    channels = []
    for c in range(3):
        optical = cv2.addWeighted(
            haem, -float(style.haematoxylin[c]), eosin, -float(style.eosin[c]), float(log_light[c])
        )
        noise = cv2.LUT(np.frombuffer(rng.bytes(width * height), np.uint8).reshape(height, width), scale_noise)
        channels.append(cv2.add(cv2.convertScaleAbs(cv2.exp(optical), beta=-amplitude / 2), noise))
    return cv2.merge(channels)


# ----------------------------------------------------------------------------------------------------
# Dataset trees


def _rng(seed: int, *keys: str) -> np.random.Generator:
    """A generator that depends only on the seed and the given names (not on generation order)."""
    return np.random.default_rng([seed, *(zlib.crc32(k.encode()) for k in keys)])


def _encode(image: np.ndarray, suffix: str) -> bytes:
    params = {
        ".png": [cv2.IMWRITE_PNG_COMPRESSION, 1, cv2.IMWRITE_PNG_STRATEGY, cv2.IMWRITE_PNG_STRATEGY_HUFFMAN_ONLY],
        ".jpg": [cv2.IMWRITE_JPEG_QUALITY, 90],
        ".jpeg": [cv2.IMWRITE_JPEG_QUALITY, 90],
    }.get(suffix, [])
    ok, buffer = cv2.imencode(suffix, np.ascontiguousarray(image[..., ::-1]), params)
    if not ok:
        raise DatasetError(f"could not encode a synthetic image as {suffix}")
    return buffer.tobytes()


def _check_size(size: tuple[int, int]) -> tuple[int, int]:
    width, height = (int(v) for v in size)
    if width < 1 or height < 1:
        raise DatasetError(f"image size must be positive, got {size}")
    return width, height


SYNTH_MARKER = "histobreast-synthetic.txt"  # marks a folder whose dataset tree `data synth` wrote


def _replace_earlier_synth(out_dir: Path, tree: Sequence[str]) -> None:
    """Clear the tree (``tree``: its top-level names) that an earlier synth wrote into ``out_dir``.

    Writing over it would mix old and new images (another size, format or count), which the readers
    then reject. A tree there without the marker is someone's data: refused, nothing touched.
    """
    present = [name for name in (*tree, SCALE_FILE) if (out_dir / name).exists()]
    if present and not (out_dir / SYNTH_MARKER).is_file():
        raise DatasetError(
            f"{out_dir}: already holds {', '.join(present)}, not written by `histobreast data "
            f"synth` (no {SYNTH_MARKER}); choose an empty or new folder (nothing was changed)"
        )
    for name in present:
        target = out_dir / name
        if target.is_dir():
            shutil.rmtree(target)
        elif target.exists():
            target.unlink()
    atomic_write_text(
        out_dir / SYNTH_MARKER,
        "Synthetic images written by `histobreast data synth`; a later synth into this folder replaces them.\n",
    )


def plan_breakhis(
    patients_per_subtype: int = 2,
    images_per_magnification: int = 3,
    magnifications: Iterable[int] = MAGNIFICATIONS,
    from_folds: str | Path | None = None,
    seed: int = 0,
) -> list[BreakhisName]:
    """The BreaKHis file names a synthetic tree will hold (no pixels): cheap, for checks and tests.

    From ``from_folds`` (official fold files): every name they list (all 7,909 images, 82 patients).
    Otherwise ``patients_per_subtype`` invented patients per subtype, each with
    ``images_per_magnification`` images at every magnification.
    """
    magnifications = tuple(magnifications)
    if from_folds is not None:
        names = [parse_breakhis_name(i + ".png") for i in read_breakhis_folds(from_folds)[0].subsets]
        return sorted((n for n in names if n.magnification in magnifications), key=lambda n: n.filename)
    if patients_per_subtype < 1 or images_per_magnification < 1:
        raise DatasetError("patients_per_subtype and images_per_magnification must be >= 1")
    rng = np.random.default_rng([seed, 7])
    slides = rng.choice(np.arange(1000, 30000), size=len(BREAKHIS_SUBTYPES) * patients_per_subtype, replace=False)
    names = []
    for i, subtype in enumerate(np.repeat(BREAKHIS_SUBTYPES, patients_per_subtype)):
        slide = f"{slides[i]}{rng.choice(['', '', '', 'AB', 'CD', 'E'])}"
        letter = "B" if subtype in ("A", "F", "PT", "TA") else "M"
        for mag in magnifications:
            for seq in range(1, images_per_magnification + 1):
                names.append(BreakhisName("SOB", letter, str(subtype), "14", slide, mag, seq))
    return names


def synth_breakhis(
    out_dir: str | Path,
    *,
    patients_per_subtype: int = 2,
    images_per_magnification: int = 3,
    magnifications: Iterable[int] = MAGNIFICATIONS,
    size: tuple[int, int] = BREAKHIS_NATIVE_SIZE,
    from_folds: str | Path | None = None,
    folds: int = 5,
    seed: int = 0,
    progress: Progress | None = None,
) -> list[ImageRecord]:
    """Write a synthetic BreaKHis tree under ``out_dir`` and return its records.

    Writes ``BreaKHis_v1/histology_slides/breast/...`` PNGs named by the real scheme, and
    ``mkfold/dsfold1..N.txt``: ``from_folds``'s folds when given (limited to the images written:
    the same folds when every magnification is written), else ``folds`` random
    patient-disjoint 70/30 splits (stratified by class, as the official protocol). ``size`` (width,
    height) below the native 700x460 keeps the field of view, so µm/pixel grows; the tree then gets a
    ``histobreast.json`` with the scale per magnification, which :func:`read_breakhis` picks up.
    ``progress(done, total)`` is called after each image. An earlier synth's tree in ``out_dir``
    is replaced; any other BreaKHis tree there is refused.
    """
    out_dir = Path(out_dir)
    width, height = _check_size(size)
    names = plan_breakhis(patients_per_subtype, images_per_magnification, magnifications, from_folds, seed)
    _replace_earlier_synth(out_dir, (TREE_PREFIX.parts[0], "mkfold"))
    scale = {mag: mpp * BREAKHIS_NATIVE_SIZE[0] / width for mag, mpp in DEFAULT_MICRONS_PER_PIXEL.items()}
    styles: dict[str, Style] = {}
    records = []
    for name in names:
        if name.patient_id not in styles:
            styles[name.patient_id] = Style.random(_rng(seed, "patient", name.patient_id))
        image = render_he(
            name.subtype, (width, height), scale[name.magnification], _rng(seed, name.filename), styles[name.patient_id]
        )
        path = out_dir / name.relpath
        atomic_write_bytes(path, _encode(image, ".png"))
        records.append(
            ImageRecord(
                path=path,
                label=name.label,
                patient_id=name.patient_id,
                microns_per_pixel=scale[name.magnification],
                source="breakhis",
                subtype=name.subtype,
                magnification=name.magnification,
                index=name.sequence,
            )
        )
        if progress is not None:
            progress(len(records), len(names))
    if (width, height) != BREAKHIS_NATIVE_SIZE:
        write_scale_file(out_dir, scale)
    if from_folds is not None:
        written = [r.image_id for r in records]
        for split in read_breakhis_folds(from_folds):
            fold = int(split.name.removeprefix("fold"))
            write_dsfold(split.restrict(written), out_dir / "mkfold" / f"dsfold{fold}.txt", fold)
    else:
        for fold in range(1, folds + 1):
            split = patient_split(records, {"train": 0.7, "test": 0.3}, seed=seed * 1000 + fold, name=f"fold{fold}")
            write_dsfold(split, out_dir / "mkfold" / f"dsfold{fold}.txt", fold)
    return records


def synth_bach(
    out_dir: str | Path,
    *,
    per_class: int = 20,
    size: tuple[int, int] = (512, 384),
    image_format: str = "tif",
    classes: Sequence[str] = BACH_CLASSES,
    seed: int = 0,
    block_size: int = DEFAULT_BLOCK_SIZE,
    progress: Progress | None = None,
) -> list[ImageRecord]:
    """Write a synthetic BACH microscopy tree under ``out_dir`` and return its records.

    Writes ``ICIAR2018_BACH_Challenge/Photos/<Class>/<n|b|is|iv>NNN.<format>`` (numbers 1..per_class)
    and ``Photos/microscopy_ground_truth.csv``. Consecutive numbers come from one synthetic patient
    (runs of 3-12 images share a stain style), as in the real data. The field of view is BACH's
    (2048x1536 at 0.42 µm/px), so a smaller ``size`` means more µm/pixel; then ``histobreast.json``
    at ``out_dir`` records the scale for :func:`read_bach`. ``block_size`` sets the records'
    pseudo-patients (as the reader would). ``progress(done, total)`` is called after each image.
    An earlier synth's tree in ``out_dir`` is replaced; any other BACH tree there is refused.
    """
    out_dir = Path(out_dir)
    width, height = _check_size(size)
    suffix = "." + image_format.lower().lstrip(".")
    if suffix not in (".tif", ".tiff", ".png", ".jpg", ".jpeg"):
        raise DatasetError(f"image format must be tif, tiff, png, jpg or jpeg, got {image_format!r}")
    unknown = [c for c in classes if c not in BACH_CLASSES]
    if unknown or per_class < 1:
        raise DatasetError(f"classes must be among {BACH_CLASSES} and per_class >= 1, got {list(classes)}, {per_class}")
    mpp = BACH_MICRONS_PER_PIXEL * BACH_NATIVE_SIZE[0] / width
    _replace_earlier_synth(out_dir, (DATASET_DIR,))
    photos = out_dir / DATASET_DIR / "Photos"
    records, truth = [], []
    for label in classes:
        run_rng = _rng(seed, "runs", label)
        patient, left, style = 0, 0, Style()
        for number in range(1, per_class + 1):
            if left == 0:
                patient, left = patient + 1, int(run_rng.integers(3, 13))
                style = Style.random(_rng(seed, "patient", label, str(patient)))
            left -= 1
            filename = bach_filename(label, number, suffix)
            image = render_he(label, (width, height), mpp, _rng(seed, filename), style)
            path = photos / label / filename
            atomic_write_bytes(path, _encode(image, suffix))
            truth.append(f"{filename},{label}")
            records.append(
                ImageRecord(
                    path=path,
                    label=label,
                    patient_id=bach_patient_id(label, number, block_size),
                    microns_per_pixel=mpp,
                    source="bach",
                    index=number,
                )
            )
            if progress is not None:
                progress(len(records), per_class * len(classes))
    atomic_write_text(photos / GROUND_TRUTH_CSV, "\n".join(truth) + "\n")
    if (width, height) != BACH_NATIVE_SIZE:
        write_scale_file(out_dir, mpp)
    return records
