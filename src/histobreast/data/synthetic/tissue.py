"""Synthetic H&E: the stains, the nuclei of each cell type, each class's tissue architecture,
and a patient's staining style (the parameters that :mod:`.render` draws).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np

# Optical densities of unit stain, RGB order: the reference H&E stain matrix of Macenko et al. (2009)
# as used by common stain-normalisation code; it gives the lilac-pink of real H&E better than the
# older Ruifrok & Johnston vectors.
HAEMATOXYLIN_OD = np.array([0.5626, 0.7201, 0.4062], dtype=np.float32)
EOSIN_OD = np.array([0.2159, 0.8012, 0.5581], dtype=np.float32)
H_SCALE = 1.6  # haematoxylin concentration stored as 255 in the nuclei map


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
