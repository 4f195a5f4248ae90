"""Synthetic dataset trees in the real BreaKHis and BACH layouts, every image a pure function of
(seed, patient, file name).
"""

from __future__ import annotations

import shutil
import zlib
from collections.abc import Callable, Iterable, Sequence
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
from histobreast.data.splits import fold_name, fold_number, patient_split
from histobreast.data.synthetic.render import render_he
from histobreast.data.synthetic.tissue import Style
from histobreast.errors import DatasetError
from histobreast.seeding import derive_seed

Progress = Callable[[int, int], None]  # (images done, images in total)


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
            fold = fold_number(split.name) or 0
            write_dsfold(split.restrict(written), out_dir / "mkfold" / f"dsfold{fold}.txt", fold)
    else:
        for fold in range(1, folds + 1):
            split = patient_split(
                records, {"train": 0.7, "test": 0.3}, seed=derive_seed(seed, fold), name=fold_name(fold)
            )
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
