"""Synthetic H&E: the canvas of one image and the structures drawn on it (glands, ducts, tumour
sheets, single files, papillary fronds, mucin, fat, stroma cells), all in µm scaled to pixels.
"""

from __future__ import annotations

import cv2
import numpy as np

from histobreast.data.synthetic.tissue import (
    FIBROBLAST_NUCLEI,
    LYMPHOCYTE_NUCLEI,
    MYOEPITHELIAL_NUCLEI,
    NucleiSpec,
    Style,
    Tissue,
)


class Canvas:
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


def fill_ellipses(
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
    canvas: Canvas,
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


def draw_glands(canvas: Canvas, tissue: Tissue, defining: bool) -> None:
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
    fill_ellipses(canvas.epithelium, centres, a + wall * 0.2, b + wall * 0.2, angles)
    fill_ellipses(canvas.lumen, centres, a - wall, b - wall, angles)
    _ring_nuclei(canvas, centres, a, b, angles, tissue.gland_layers, tissue.gland_nuclei, outward=False)


def draw_ducts(canvas: Canvas, tissue: Tissue, defining: bool) -> None:
    """Carcinoma in situ: round ducts filled with dense tumour nuclei inside a myoepithelial rim."""
    n = canvas.count(tissue.ducts_per_mm2, at_least=int(defining))
    if not n:
        return
    rng = canvas.rng
    radius = canvas.px(rng.uniform(*tissue.duct_radius_um, n))
    a, b = radius * rng.uniform(1.0, 1.25, n), radius / rng.uniform(1.0, 1.25, n)
    angles = rng.uniform(0, 180, n)
    centres = canvas.centres(n, central_first=defining)
    fill_ellipses(canvas.epithelium, centres, a, b, angles)
    fill_ellipses(canvas.tumour, centres, a * 0.9, b * 0.9, angles)
    holes = rng.integers(0, 4, n)  # cribriform spaces
    owner = np.repeat(np.arange(n), holes)
    spots = _points_in_ellipses(rng, centres, a * 0.7, b * 0.7, angles, holes)
    hole = canvas.px(rng.uniform(6, 14, len(owner)))
    fill_ellipses(canvas.lumen, spots, hole, hole, np.zeros(len(owner)))
    _ring_nuclei(canvas, centres, a, b, angles, 1, MYOEPITHELIAL_NUCLEI, outward=False)


def draw_sheets(canvas: Canvas, tissue: Tissue, centres: np.ndarray | None = None, defining: bool = False) -> None:
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
    fill_ellipses(canvas.epithelium, sub, a, b, angles)
    fill_ellipses(canvas.tumour, sub, a, b, angles)


def fill_tumour(canvas: Canvas, tissue: Tissue) -> None:
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


def draw_single_files(canvas: Canvas, tissue: Tissue) -> None:
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


def draw_fronds(canvas: Canvas, tissue: Tissue) -> None:
    """Papillary carcinoma: finger-like fibrovascular cores lined by stratified tumour nuclei in open space."""
    n = canvas.count(tissue.fronds_per_mm2, at_least=1)
    rng = canvas.rng
    a, b = canvas.px(rng.uniform(70, 160, n)), canvas.px(rng.uniform(12, 25, n))
    angles = rng.uniform(0, 180, n)
    centres = canvas.centres(n, central_first=True)
    lining = canvas.px(np.mean(tissue.tumour_nuclei.diameter_um) * 1.25) * 2
    fill_ellipses(canvas.lumen, centres, a + lining * 2.5, b + lining * 2.5, angles)  # open space around
    fill_ellipses(canvas.lumen, centres, a + lining, b + lining, angles, 0)
    fill_ellipses(canvas.epithelium, centres, a + lining, b + lining, angles)
    fill_ellipses(canvas.epithelium, centres, a, b, angles, 0)  # the stromal core
    _ring_nuclei(canvas, centres, a, b, angles, 2, tissue.tumour_nuclei, outward=True)


def draw_mucin(canvas: Canvas, tissue: Tissue) -> None:
    """Mucinous carcinoma: pale mucin lakes with small tumour clusters floating in them."""
    n = canvas.count(tissue.mucin_per_mm2, at_least=1)
    rng = canvas.rng
    lakes = np.repeat(canvas.centres(n, central_first=True), rng.integers(2, 5, n), axis=0)
    lakes += rng.normal(0, canvas.px(70.0), lakes.shape)
    r = canvas.px(rng.uniform(60, 150, len(lakes)))
    fill_ellipses(canvas.mucin, lakes, r * rng.uniform(1, 1.5, len(lakes)), r, rng.uniform(0, 180, len(lakes)))
    clusters = rng.integers(1, 4, len(lakes))
    floating = (
        np.repeat(lakes, clusters, axis=0)
        + rng.normal(0, 1, (clusters.sum(), 2)) * np.repeat(r * 0.4, clusters)[:, None]
    )
    draw_sheets(canvas, tissue, centres=floating)


def draw_fat(canvas: Canvas, tissue: Tissue) -> None:
    """Adipose tissue: packed white fat cells separated by thin septa."""
    rng = canvas.rng
    for centre in canvas.centres(canvas.count(tissue.fat_per_mm2)):
        cell = canvas.px(rng.uniform(25, 45))
        extent = canvas.px(rng.uniform(120, 260))
        steps = int(min(extent / cell, 40))
        grid = np.stack(np.meshgrid(np.arange(-steps, steps + 1), np.arange(-steps, steps + 1)), -1).reshape(-1, 2)
        grid = grid[np.linalg.norm(grid, axis=1) * 2 * cell < extent] * 2 * cell + centre
        grid += rng.normal(0, cell * 0.15, grid.shape)
        fill_ellipses(
            canvas.lumen,
            grid,
            cell * rng.uniform(0.8, 0.95, len(grid)),
            cell * rng.uniform(0.8, 0.95, len(grid)),
            rng.uniform(0, 180, len(grid)),
        )


def draw_stroma_cells(canvas: Canvas, tissue: Tissue) -> None:
    """Fibroblasts (thin, along the fibres) and lymphocytes (small, round, dark) scattered in stroma."""
    n = canvas.count(tissue.fibroblasts_per_mm2)
    canvas.add_nuclei(canvas.centres(n), FIBROBLAST_NUCLEI, np.full(n, canvas.fibre_angle))
    canvas.add_nuclei(canvas.centres(canvas.count(tissue.lymphocytes_per_mm2)), LYMPHOCYTE_NUCLEI)
