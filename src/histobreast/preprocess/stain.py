"""Stain normalisation of H&E images: Reinhard colour transfer (System A) and Macenko.

Both normalisers are fitted to a reference image (or loaded from a target JSON written by
``save``), then map any uint8 RGB image onto the reference's colours. Reinhard's LAB statistics are
taken over tissue pixels only, unlike torchstain's and TIAToolbox's, which use every pixel;
``ReinhardNormalizer(pixels="all")`` matches those libraries (see the class for why and how much). When an image has too
little tissue, or its stain estimate is degenerate, it is returned unchanged: ``normalize``
reports that in :class:`NormalizationResult`, and calling the normaliser directly emits a
:class:`StainFallbackWarning`. Fitting a target on such an image is an error instead.

References: E. Reinhard et al., "Color transfer between images", IEEE CG&A 21(5), 2001 (cited by
Zhu et al. 2019 for System A); M. Macenko et al., "A method for normalizing histology slides for
quantitative analysis", ISBI 2009 (Io = 240, beta = 0.15, alpha = 1 and the reference stain
matrix below are that method's standard values, as in torchstain and staintools).
"""

from __future__ import annotations

import warnings
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import cv2
import numpy as np

from histobreast.atomic import atomic_write_json
from histobreast.config import read_json
from histobreast.errors import CheckpointError, ConfigError, HistobreastError

# Background is near-white: LAB lightness L* >= 80 (of 100) is not tissue (the 0.8 luminosity
# threshold of staintools). Used for Reinhard statistics and for both normalisers' tissue check.
BACKGROUND_LIGHTNESS = 80.0
# An image whose tissue covers less than this fraction of its pixels is left unchanged.
MIN_TISSUE_FRACTION = 0.05
# ... and so is one with fewer tissue pixels than this (too few for stable statistics).
MIN_TISSUE_PIXELS = 100
# Pixels Reinhard's LAB statistics are taken over: tissue only (ours) or every pixel (torchstain, TIAToolbox).
REINHARD_PIXELS = ("tissue", "all")
_FORMAT_VERSION = 1

N = TypeVar("N", bound="StainNormalizer")


class StainError(HistobreastError):
    """A stain target cannot be fitted (reference without enough tissue) or a normaliser is not fitted."""


class StainFallbackWarning(UserWarning):
    """An image was returned unchanged because its stain could not be estimated."""


@dataclass(frozen=True)
class NormalizationResult:
    """A normalised image, or the input unchanged with ``fallback_reason`` saying why."""

    image: np.ndarray
    fallback_reason: str | None = None

    @property
    def fell_back(self) -> bool:
        """True when the image was returned unchanged."""
        return self.fallback_reason is not None


def _check_rgb(image: np.ndarray) -> None:
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ConfigError(f"stain normalisation expects an (H, W, 3) uint8 RGB image, got {image.shape} {image.dtype}")


def rgb_to_lab(image: np.ndarray) -> np.ndarray:
    """uint8 RGB -> float32 CIE LAB (L* in [0, 100], a*, b* about [-127, 127])."""
    return cv2.cvtColor(image.astype(np.float32) / 255.0, cv2.COLOR_RGB2LAB)


def lab_to_rgb(lab: np.ndarray) -> np.ndarray:
    """float32 CIE LAB -> uint8 RGB (rounded, saturated to [0, 255])."""
    rgb = cv2.cvtColor(lab.astype(np.float32), cv2.COLOR_LAB2RGB)
    return cv2.multiply(rgb, (255.0, 255.0, 255.0, 0.0), dtype=cv2.CV_8U)  # cv2 rounds and saturates


def tissue_mask(image: np.ndarray, max_lightness: float = BACKGROUND_LIGHTNESS) -> np.ndarray:
    """Boolean ``(H, W)`` mask of tissue: pixels darker than ``max_lightness`` L* (not near-white background)."""
    _check_rgb(image)
    return rgb_to_lab(image)[..., 0] < max_lightness


def _too_little_tissue(mask: np.ndarray) -> str | None:
    count = int(mask.sum())
    if count < MIN_TISSUE_PIXELS or count < MIN_TISSUE_FRACTION * mask.size:
        return (
            f"too little tissue: {count} of {mask.size} pixels "
            f"(need {MIN_TISSUE_FRACTION:.0%} and at least {MIN_TISSUE_PIXELS})"
        )
    return None


class StainNormalizer(ABC):
    """Common interface: ``fit(reference)``, ``normalize(image)``, ``__call__``, ``save``/``load`` (JSON)."""

    method: ClassVar[str]

    @abstractmethod
    def fit(self: N, image: np.ndarray) -> N:
        """Take the target colours from a reference ``image``; raises :class:`StainError` without enough tissue."""

    @abstractmethod
    def normalize(self, image: np.ndarray) -> NormalizationResult:
        """Map ``image`` onto the target colours, or return it unchanged with the reason."""

    @abstractmethod
    def to_dict(self) -> dict[str, Any]:
        """The fitted target and settings as plain JSON values (``method`` included)."""

    @classmethod
    @abstractmethod
    def from_dict(cls: type[N], data: dict[str, Any], source: str = "target") -> N:
        """Rebuild from :meth:`to_dict` output; errors name ``source`` and the bad key."""

    def __call__(self, image: np.ndarray) -> np.ndarray:
        """Normalised uint8 RGB image; on fallback the input, with a :class:`StainFallbackWarning`."""
        result = self.normalize(image)
        if result.fell_back:
            warnings.warn(
                f"{self.method} stain normalisation skipped: {result.fallback_reason}",
                StainFallbackWarning,
                stacklevel=2,
            )
        return result.image

    def save(self, path: str | Path) -> Path:
        """Write the target as JSON (atomically)."""
        return atomic_write_json(path, self.to_dict())

    @classmethod
    def load(cls: type[N], path: str | Path) -> N:
        """Read a target JSON written by :meth:`save`; errors name the file and the key."""
        data = read_json(path, "stain target")
        if data.get("method") != cls.method:
            raise ConfigError(f"{path}: 'method' is {data.get('method')!r}, expected {cls.method!r}")
        return cls.from_dict(data, source=str(path))


def _array(data: dict[str, Any], key: str, shape: tuple[int, ...], source: str) -> np.ndarray:
    try:
        value = np.asarray(data[key], dtype=np.float64)
    except KeyError:
        raise ConfigError(f"{source}: missing key {key!r}") from None
    except (TypeError, ValueError):
        raise ConfigError(f"{source}: {key!r} must be numbers") from None
    if value.shape != shape or not np.all(np.isfinite(value)):
        raise ConfigError(f"{source}: {key!r} must be finite numbers of shape {list(shape)}, got {data[key]!r}")
    return value


class ReinhardNormalizer(StainNormalizer):
    """Reinhard colour transfer: match the LAB mean and standard deviation of an image to a target's.

    ``pixels="tissue"`` (default) takes both sets of statistics over tissue only (L* <
    ``BACKGROUND_LIGHTNESS``), so the amount of white background does not shift the colours: with
    all pixels, an image with much glass gets its tissue darkened to bring its mean to the target's.
    This departs from torchstain's and TIAToolbox's Reinhard, which use every pixel; on real BACH
    images the two differ by about 10 grey levels per RGB value on average (docs/preprocess.md).
    ``pixels="all"`` uses every pixel, as those libraries do. Either way the per-channel affine map
    is applied to every pixel (no seams at the tissue border), and an image with too little tissue
    is returned unchanged.
    """

    method = "reinhard"

    def __init__(
        self, target_mean: np.ndarray | None = None, target_std: np.ndarray | None = None, pixels: str = "tissue"
    ) -> None:
        if pixels not in REINHARD_PIXELS:
            raise ConfigError(f"Reinhard pixels must be one of {', '.join(REINHARD_PIXELS)}, got {pixels!r}")
        self.target_mean = None if target_mean is None else np.asarray(target_mean, dtype=np.float64)
        self.target_std = None if target_std is None else np.asarray(target_std, dtype=np.float64)
        self.pixels = pixels

    def _stats(self, lab: np.ndarray) -> tuple[np.ndarray, np.ndarray] | str:
        """LAB mean and std over the pixels ``self.pixels`` names, or why the image cannot be used."""
        mask = lab[..., 0] < BACKGROUND_LIGHTNESS
        reason = _too_little_tissue(mask)
        if reason:
            return reason
        mean, std = (
            v.ravel() for v in cv2.meanStdDev(lab, mask=mask.view(np.uint8) if self.pixels == "tissue" else None)
        )
        if np.any(std < 1e-3):
            return f"flat colour on {self.pixels} pixels (LAB std {np.round(std, 4).tolist()})"
        return mean, std

    def fit(self, image: np.ndarray) -> ReinhardNormalizer:
        _check_rgb(image)
        stats = self._stats(rgb_to_lab(image))
        if isinstance(stats, str):
            raise StainError(f"cannot fit a Reinhard target: {stats}")
        self.target_mean, self.target_std = stats
        return self

    def normalize(self, image: np.ndarray) -> NormalizationResult:
        _check_rgb(image)
        if self.target_mean is None or self.target_std is None:
            raise StainError("ReinhardNormalizer is not fitted: call fit(reference) or load(target.json)")
        lab = rgb_to_lab(image)
        stats = self._stats(lab)
        if isinstance(stats, str):
            return NormalizationResult(image.copy(), stats)
        mean, std = stats
        gain = self.target_std / std
        offset = self.target_mean - mean * gain
        # Per-channel affine map lab * gain + offset as one 3x4 matrix (cv2.transform is ~10x numpy here).
        return NormalizationResult(lab_to_rgb(cv2.transform(lab, np.hstack([np.diag(gain), offset[:, None]]))))

    def to_dict(self) -> dict[str, Any]:
        if self.target_mean is None or self.target_std is None:
            raise StainError("ReinhardNormalizer is not fitted: nothing to save")
        return {
            "method": self.method,
            "format": _FORMAT_VERSION,
            "background_lightness": BACKGROUND_LIGHTNESS,
            "pixels": self.pixels,
            "lab_mean": self.target_mean.tolist(),
            "lab_std": self.target_std.tolist(),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "target") -> ReinhardNormalizer:
        std = _array(data, "lab_std", (3,), source)
        if np.any(std <= 0):
            raise ConfigError(f"{source}: 'lab_std' must be positive, got {std.tolist()}")
        pixels = data.get("pixels", "tissue")  # targets written before the option are tissue-only
        if pixels not in REINHARD_PIXELS:
            raise ConfigError(f"{source}: 'pixels' must be one of {', '.join(REINHARD_PIXELS)}, got {pixels!r}")
        return cls(_array(data, "lab_mean", (3,), source), std, pixels=pixels)


# Macenko's standard reference: H and E optical-density vectors (columns) and their 99th-percentile
# concentrations, used when a MacenkoNormalizer is not fitted to a reference of one's own.
MACENKO_REFERENCE_STAINS = np.array([[0.5626, 0.2159], [0.7201, 0.8012], [0.4062, 0.5581]])
MACENKO_REFERENCE_MAX_CONCENTRATIONS = np.array([1.9705, 1.0308])
# Two estimated stain vectors closer than this angle are one stain, not H and E: degenerate.
_MIN_STAIN_ANGLE_DEG = 5.0


class MacenkoNormalizer(StainNormalizer):
    """Macenko normalisation: estimate H and E vectors in optical density (OD) space, rescale concentrations.

    ``io`` is the transmitted-light intensity, ``beta`` the OD that a pixel must reach in every
    channel to enter the stain estimate, ``alpha`` the angle percentile that picks the extreme stain
    directions. Whether an image has enough tissue at all is decided as for Reinhard (L* < 80).
    Unfitted, it targets Macenko's standard reference stains.
    """

    method = "macenko"

    def __init__(
        self,
        stain_matrix: np.ndarray = MACENKO_REFERENCE_STAINS,
        max_concentrations: np.ndarray = MACENKO_REFERENCE_MAX_CONCENTRATIONS,
        io: float = 240.0,
        alpha: float = 1.0,
        beta: float = 0.15,
    ) -> None:
        self.stain_matrix = np.asarray(stain_matrix, dtype=np.float64)
        self.max_concentrations = np.asarray(max_concentrations, dtype=np.float64)
        self.io, self.alpha, self.beta = float(io), float(alpha), float(beta)

    def _estimate(self, image: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray] | str:
        """``(stain_matrix (3, 2), concentrations (H*W, 2), max_concentrations (2,))`` or a failure reason."""
        reason = _too_little_tissue(tissue_mask(image))  # the same tissue test as Reinhard's
        if reason:
            return reason
        od_of_intensity = (-np.log((np.arange(256) + 1.0) / self.io)).astype(np.float32)
        od = od_of_intensity[image.reshape(-1, 3)]  # (H*W, 3) optical density, via a 256-entry table
        # Stained pixels (Macenko): OD >= beta in every channel, i.e. every channel <= io * exp(-beta) - 1.
        brightest = float(np.floor(self.io * np.exp(-self.beta) - 1.0))
        stained = cv2.inRange(image, (0, 0, 0), (brightest,) * 3).reshape(-1).view(bool)
        if stained.sum() < MIN_TISSUE_PIXELS:
            return f"too few stained pixels: {stained.sum()} with optical density >= {self.beta} in every channel"
        od_tissue = od[stained]
        _, eigvecs = np.linalg.eigh(np.cov(od_tissue, rowvar=False))
        plane = eigvecs[:, 1:3] * np.where(eigvecs[:, 1:3].sum(axis=0) < 0, -1.0, 1.0)  # point into +OD
        plane = np.ascontiguousarray(plane, dtype=np.float32)
        projected = od_tissue @ plane
        angles = np.arctan2(projected[:, 1], projected[:, 0])
        low, high = np.percentile(angles, [self.alpha, 100.0 - self.alpha])
        v_low = plane @ np.array([np.cos(low), np.sin(low)])
        v_high = plane @ np.array([np.cos(high), np.sin(high)])
        # Haematoxylin absorbs more red light: the vector with the larger red OD goes first.
        stains = np.stack([v_low, v_high] if v_low[0] > v_high[0] else [v_high, v_low], axis=1)
        stains /= np.linalg.norm(stains, axis=0, keepdims=True)
        angle = np.degrees(np.arccos(np.clip(stains[:, 0] @ stains[:, 1], -1.0, 1.0)))
        if not np.all(np.isfinite(stains)) or angle < _MIN_STAIN_ANGLE_DEG or np.any(stains < -0.05):
            return f"degenerate stain estimate (H/E vectors {np.round(stains.T, 3).tolist()}, {angle:.1f} deg apart)"
        concentrations = od @ np.linalg.pinv(stains).T.astype(np.float32)
        max_conc = np.percentile(concentrations, 99, axis=0)
        if np.any(max_conc <= 1e-6):
            return f"degenerate stain estimate (99th-percentile concentrations {np.round(max_conc, 4).tolist()})"
        return stains, concentrations, max_conc

    def fit(self, image: np.ndarray) -> MacenkoNormalizer:
        _check_rgb(image)
        estimate = self._estimate(image)
        if isinstance(estimate, str):
            raise StainError(f"cannot fit a Macenko target: {estimate}")
        self.stain_matrix, _, self.max_concentrations = estimate
        return self

    def normalize(self, image: np.ndarray) -> NormalizationResult:
        _check_rgb(image)
        estimate = self._estimate(image)
        if isinstance(estimate, str):
            return NormalizationResult(image.copy(), estimate)
        _, concentrations, max_conc = estimate
        concentrations *= (self.max_concentrations / max_conc).astype(np.float32)
        rgb = np.exp(-(concentrations @ self.stain_matrix.T.astype(np.float32))).reshape(image.shape)
        return NormalizationResult(cv2.multiply(rgb, (self.io,) * 3 + (0.0,), dtype=cv2.CV_8U))  # rounds, saturates

    def to_dict(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "format": _FORMAT_VERSION,
            "io": self.io,
            "alpha": self.alpha,
            "beta": self.beta,
            "stain_matrix": self.stain_matrix.tolist(),
            "max_concentrations": self.max_concentrations.tolist(),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "target") -> MacenkoNormalizer:
        settings = {}
        for key, default in (("io", 240.0), ("alpha", 1.0), ("beta", 0.15)):
            value = data.get(key, default)
            if not isinstance(value, (int, float)) or not value > 0:
                raise ConfigError(f"{source}: {key!r} must be a positive number, got {value!r}")
            settings[key] = float(value)
        return cls(
            _array(data, "stain_matrix", (3, 2), source), _array(data, "max_concentrations", (2,), source), **settings
        )


NORMALIZERS: dict[str, type[StainNormalizer]] = {"reinhard": ReinhardNormalizer, "macenko": MacenkoNormalizer}


def create_normalizer(method: str, pixels: str = "tissue") -> StainNormalizer:
    """An unfitted normaliser by name (``"reinhard"`` or ``"macenko"``); ``pixels`` is Reinhard's (see its class)."""
    if method not in NORMALIZERS:
        raise ConfigError(f"unknown stain method {method!r}; expected one of {', '.join(NORMALIZERS)}")
    if method == "reinhard":
        return ReinhardNormalizer(pixels=pixels)
    if pixels != "tissue":
        raise ConfigError(f"pixels {pixels!r} applies to the reinhard method only, not {method}")
    return NORMALIZERS[method]()


def load_normalizer(path: str | Path) -> StainNormalizer:
    """Read any target JSON written by ``save``; its ``method`` key picks the class."""
    data = read_json(path, "stain target")
    method = data.get("method")
    if method not in NORMALIZERS:
        raise ConfigError(f"{path}: 'method' must be one of {', '.join(NORMALIZERS)}, got {method!r}")
    return NORMALIZERS[method].from_dict(data, source=str(path))


def fitted_stain(info: Mapping[str, Any], source: str = "model.json") -> StainNormalizer | None:
    """The stain normaliser a model stored in ``preprocess.stain.fitted`` (None when off); ``info`` is
    its model.json (``source`` names it in errors)."""
    fitted = info.get("preprocess", {}).get("stain", {}).get("fitted")
    if not fitted:
        return None
    method = fitted.get("method")
    if method not in NORMALIZERS:
        raise CheckpointError(f"{source}: preprocess.stain.fitted.method {method!r} is unknown")
    return NORMALIZERS[method].from_dict(fitted, source=f"{source}: preprocess.stain.fitted")
