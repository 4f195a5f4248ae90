"""BACH / ICIAR 2018 microscopy (Aresta et al. 2019): tree reader, ground truth, pseudo-patients.

Layout: ``ICIAR2018_BACH_Challenge/Photos/<Class>/<n|b|is|iv>NNN.<ext>`` with ``<ext>`` any of
.tif/.tiff/.png/.jpg/.jpeg and images of any size, plus ``Photos/microscopy_ground_truth.csv``
(``n001.tif,Normal``, no header) when present. The CSV is matched by image number, not extension, and
may list images that are absent (the real copies are 268 of the 400); a folder/CSV disagreement is an
error naming the CSV line and the file.

**Pseudo-patients.** BACH publishes no patient ids, but one patient's images were numbered
consecutively. ``patient_id`` is therefore a block of ``block_size`` consecutive numbers within a
class: with the default 10, ``n001`` .. ``n010`` are ``"Normal:001-010"``. Splits group by it, so
neighbouring images never land on two sides.

**Scale.** In order: the ``microns_per_pixel`` argument; else a ``histobreast.json``
(``{"microns_per_pixel": x}``) in the ``Photos`` folder or one of its two parents (the synthetic
generator writes one for reduced-size images); else it is inferred from the image width, assuming
every file shows BACH's whole 2048x1536 field at 0.42 µm/px: ``0.42 * 2048 / width`` (native
2048-wide TIFFs keep 0.42; our real 1024x768 copies get 0.84). Inference needs all images to share
one width; a tree of mixed widths without an explicit scale is an error, not a guess.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Iterable
from pathlib import Path

from histobreast.data.imageio import SkipReport, is_image_file, list_images, raise_or_skip, readable_size
from histobreast.data.records import SCALE_FILE, ImageRecord, read_scale_file
from histobreast.errors import DatasetError
from histobreast.textfiles import read_user_text

BACH_CLASSES = ("Normal", "Benign", "InSitu", "Invasive")
BACH_PREFIXES = {"Normal": "n", "Benign": "b", "InSitu": "is", "Invasive": "iv"}
#: System A's binary BACH task (Zhu et al. 2019): normal+benign vs in situ+invasive.
BACH_BINARY = {"Normal": "non-carcinoma", "Benign": "non-carcinoma", "InSitu": "carcinoma", "Invasive": "carcinoma"}
BACH_BINARY_CLASSES = ("non-carcinoma", "carcinoma")
BACH_MICRONS_PER_PIXEL = 0.42
NATIVE_SIZE = (2048, 1536)  # (width, height)
DEFAULT_BLOCK_SIZE = 10
GROUND_TRUTH_CSV = "microscopy_ground_truth.csv"
DATASET_DIR = "ICIAR2018_BACH_Challenge"

_CLASS_OF_PREFIX = {prefix: label for label, prefix in BACH_PREFIXES.items()}
_NAME = re.compile(r"^(?P<prefix>n|b|is|iv)(?P<number>\d+)\.(?:tif|tiff|png|jpg|jpeg)$", re.IGNORECASE)


def bach_patient_id(label: str, number: int, block_size: int = DEFAULT_BLOCK_SIZE) -> str:
    """Pseudo-patient of image ``number`` of class ``label``: e.g. ``("Normal", 7) -> "Normal:001-010"``."""
    if block_size < 1:
        raise DatasetError(f"block_size must be >= 1, got {block_size}")
    start = (number - 1) // block_size * block_size + 1
    return f"{label}:{start:03d}-{start + block_size - 1:03d}"


def bach_filename(label: str, number: int, suffix: str = ".tif") -> str:
    """The BACH file name of image ``number`` of ``label``: ``("InSitu", 7) -> "is007.tif"``."""
    return f"{BACH_PREFIXES[label]}{number:03d}{suffix}"


def find_photos_dir(root: str | Path) -> Path:
    """The ``Photos`` folder of a BACH tree given its root, ``ICIAR2018_BACH_Challenge`` or ``Photos`` itself."""
    root = Path(root)
    for candidate in (root, root / "Photos", root / DATASET_DIR / "Photos"):
        if candidate.is_dir() and any((candidate / label).is_dir() for label in BACH_CLASSES):
            return candidate
    raise DatasetError(
        f"{root}: no BACH Photos folder with class folders {BACH_CLASSES} found "
        f"(looked in ., Photos/ and {DATASET_DIR}/Photos/)"
    )


def read_ground_truth(path: str | Path) -> dict[tuple[str, int], tuple[str, int]]:
    """Read ``microscopy_ground_truth.csv``: ``(prefix, number) -> (label, line number)``.

    Malformed lines, unknown labels and names whose prefix contradicts their label raise
    :class:`DatasetError` naming the file and line.
    """
    path = Path(path)
    out: dict[tuple[str, int], tuple[str, int]] = {}
    with io.StringIO(read_user_text(path), newline="") as fh:
        for line_no, row in enumerate(csv.reader(fh), start=1):
            if not row or not "".join(row).strip():
                continue
            match = _NAME.match(row[0].strip()) if len(row) == 2 else None
            label = row[1].strip() if len(row) == 2 else ""
            if match is None or label not in BACH_CLASSES:
                raise DatasetError(
                    f"{path}:{line_no}: expected '<n|b|is|iv>NNN.tif,<{'|'.join(BACH_CLASSES)}>', got {row}"
                )
            prefix = match["prefix"].lower()
            if _CLASS_OF_PREFIX[prefix] != label:
                raise DatasetError(
                    f"{path}:{line_no}: {row[0]} is labelled {label}, but its prefix means {_CLASS_OF_PREFIX[prefix]}"
                )
            out[(prefix, int(match["number"]))] = (label, line_no)
    return out


def resolve_bach_scale(photos: Path, microns_per_pixel: float | None, widths: Iterable[int] = ()) -> float:
    """µm/pixel of a BACH tree: the argument, else ``histobreast.json`` near ``photos``, else inferred
    from the images' common width as ``0.42 * 2048 / width`` (see the module doc).

    Mixed ``widths`` without an explicit scale raise :class:`DatasetError`; no widths give 0.42.
    """
    if microns_per_pixel is not None:
        return float(microns_per_pixel)
    for directory in (photos, photos.parent, photos.parent.parent):
        scale = read_scale_file(directory)
        if isinstance(scale, dict):
            raise DatasetError(f"{directory / SCALE_FILE}: BACH needs one microns_per_pixel, not one per magnification")
        if scale is not None:
            return scale
    distinct = sorted(set(widths))
    if len(distinct) > 1:
        raise DatasetError(
            f"{photos}: images have different widths {distinct}, so the scale cannot be inferred "
            f"from BACH's {NATIVE_SIZE[0]}-pixel field: pass microns_per_pixel (CLI --mpp) or "
            f'write {SCALE_FILE} with {{"microns_per_pixel": ...}}'
        )
    if not distinct:
        return BACH_MICRONS_PER_PIXEL
    return round(BACH_MICRONS_PER_PIXEL * NATIVE_SIZE[0] / distinct[0], 4)


def read_bach(
    root: str | Path,
    microns_per_pixel: float | None = None,
    *,
    block_size: int = DEFAULT_BLOCK_SIZE,
    skip: SkipReport | None = None,
    verify: bool = True,
) -> list[ImageRecord]:
    """Read BACH microscopy images into records, in class order then image number.

    ``microns_per_pixel=None`` means ``histobreast.json`` if present, else inferred from the common
    image width (0.42 µm/px at 2048 px wide, 0.84 at 1024; see the module doc).
    A badly named file, a prefix that contradicts its folder, a duplicate image number, a CSV
    disagreement, an image missing from the CSV or (with ``verify``) an unreadable header raises, or is
    recorded in ``skip`` when one is given. Hidden files and non-image files are not images and are
    ignored; folders other than the four classes are reported.
    """
    photos = find_photos_dir(root)
    ground_truth_path = photos / GROUND_TRUTH_CSV
    ground_truth = read_ground_truth(ground_truth_path) if ground_truth_path.is_file() else None
    for entry in sorted(photos.iterdir()):
        if entry.name.startswith(".") or entry.name in BACH_CLASSES:
            continue
        if entry.is_dir() or is_image_file(entry):
            raise_or_skip(DatasetError(f"{entry}: not inside one of the class folders {BACH_CLASSES}"), entry, skip)
    # Headers are read when verifying, and when the scale may have to be inferred from the widths.
    read_sizes = verify or microns_per_pixel is None
    found: list[tuple[str, int, Path]] = []
    widths: list[int] = []
    for label in BACH_CLASSES:
        folder = photos / label
        if not folder.is_dir():
            continue
        numbered: dict[int, Path] = {}
        for path in list_images(folder):
            number = _check_bach_file(path, label, numbered, ground_truth, ground_truth_path, skip)
            size = readable_size(path, skip) if number is not None and read_sizes else None
            if number is None or (read_sizes and size is None):
                continue
            numbered[number] = path
            if size is not None:
                widths.append(size[0])
        found += [(label, number, path) for number, path in sorted(numbered.items())]
    scale = resolve_bach_scale(photos, microns_per_pixel, widths)
    records = [
        ImageRecord(
            path=path,
            label=label,
            patient_id=bach_patient_id(label, number, block_size),
            microns_per_pixel=scale,
            source="bach",
            index=number,
        )
        for label, number, path in found
    ]
    if not records and skip is None:
        raise DatasetError(f"{photos}: no BACH images found")
    return records


def _check_bach_file(
    path: Path,
    label: str,
    numbered: dict[int, Path],
    ground_truth: dict[tuple[str, int], tuple[str, int]] | None,
    ground_truth_path: Path,
    skip: SkipReport | None,
) -> int | None:
    """The image number of ``path``, or ``None`` after raising/recording its problem."""
    match = _NAME.match(path.name)
    problem = None
    if match is None:
        problem = f"not a BACH image name (expected {BACH_PREFIXES[label]}NNN.<tif|tiff|png|jpg|jpeg>)"
    elif _CLASS_OF_PREFIX[match["prefix"].lower()] != label:
        problem = (
            f"prefix {match['prefix']!r} means {_CLASS_OF_PREFIX[match['prefix'].lower()]}, but the file is in {label}/"
        )
    else:
        number = int(match["number"])
        key = (match["prefix"].lower(), number)
        if number in numbered:
            problem = f"image number {number} is also {numbered[number].name}"
        elif ground_truth is not None and key not in ground_truth:
            problem = f"not listed in {ground_truth_path}"
        elif ground_truth is not None and ground_truth[key][0] != label:
            gt_label, line_no = ground_truth[key]
            problem = f"in folder {label}/ but {ground_truth_path}:{line_no} says {gt_label}"
        else:
            return number
    raise_or_skip(DatasetError(f"{path}: {problem}"), path, skip)
    return None
