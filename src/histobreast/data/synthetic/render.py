"""Synthetic H&E: one image rendered in optical density (Beer-Lambert) from a tissue and a style."""

from __future__ import annotations

import cv2
import numpy as np

from histobreast.data.synthetic.structures import (
    Canvas,
    draw_ducts,
    draw_fat,
    draw_fronds,
    draw_glands,
    draw_mucin,
    draw_sheets,
    draw_single_files,
    draw_stroma_cells,
    fill_ellipses,
    fill_tumour,
)
from histobreast.data.synthetic.tissue import CHROMATIN_CLUMP_UM, H_SCALE, TISSUES, Style, Tissue
from histobreast.errors import DatasetError


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


def _nuclei_map(canvas: Canvas) -> np.ndarray:
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
        fill_ellipses(
            shapes, drawn[:, :2], drawn[:, 2], drawn[:, 3], drawn[:, 4], np.clip(drawn[:, 5] / H_SCALE * 255, 0, 255)
        )
        layer = cv2.GaussianBlur(shapes, (0, 0), 0.6).astype(np.float32) * (H_SCALE / 255)
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
        conc += np.minimum(cv2.GaussianBlur(splat, (0, 0), 0.7), H_SCALE)
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
    canvas = Canvas(width, height, microns_per_pixel, rng, style)
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
    draw_fat(canvas, tissue)
    if tissue.mucin_per_mm2:
        draw_mucin(canvas, tissue)
    if tissue.fronds_per_mm2:
        draw_fronds(canvas, tissue)
    draw_glands(canvas, tissue, defining == "glands")
    draw_ducts(canvas, tissue, defining == "ducts")
    draw_sheets(canvas, tissue, defining=defining == "sheets")
    fill_tumour(canvas, tissue)
    draw_single_files(canvas, tissue)
    draw_stroma_cells(canvas, tissue)

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
