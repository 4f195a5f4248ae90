"""Generic class-per-folder datasets for users' own images: ``root/<class>/**/<image>``.

Classes are the sub-folders of ``root`` (sorted); images may sit at any depth inside them and be of
any supported format and size. Image ids (file names without extension) must be unique, since
predictions and split files key images by id.

**Patients.** An optional CSV (``patients_csv``, or ``root/patients.csv`` when present) with columns
``image`` (path relative to ``root``, or the bare file name) and ``patient`` gives each image its
patient; an optional ``label`` column is checked against the folder. Without it every image is its
own patient, so splits cannot keep a patient's images together: give the CSV whenever several images
come from one patient.

**Scale.** ``microns_per_pixel`` is required, from the argument or ``root/histobreast.json``:
pipelines work in physical units, and a guessed scale would silently change what they see.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

from histobreast.data.imageio import SkipReport, is_image_file, list_images, raise_or_skip, readable_size
from histobreast.data.records import SCALE_FILE, ImageRecord, read_scale_file
from histobreast.errors import DatasetError
from histobreast.textfiles import read_user_text

PATIENTS_CSV = "patients.csv"


def read_patients_csv(path: str | Path) -> dict[str, tuple[str, str | None, int]]:
    """``image -> (patient, label or None, line number)`` from a CSV with columns ``image,patient[,label]``."""
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"{path}: patients CSV not found")
    out: dict[str, tuple[str, str | None, int]] = {}
    with io.StringIO(read_user_text(path), newline="") as fh:
        reader = csv.DictReader(fh)
        missing = {"image", "patient"} - set(reader.fieldnames or [])
        if missing:
            raise DatasetError(f"{path}: missing columns {sorted(missing)} (expected image,patient[,label])")
        for line_no, row in enumerate(reader, start=2):
            image, patient = (row["image"] or "").strip().replace("\\", "/"), (row["patient"] or "").strip()
            if not image or not patient:
                raise DatasetError(f"{path}:{line_no}: empty image or patient")
            if image in out:
                raise DatasetError(f"{path}:{line_no}: image {image!r} is listed twice")
            out[image] = (patient, (row.get("label") or "").strip() or None, line_no)
    return out


def read_folder(
    root: str | Path,
    microns_per_pixel: float | None = None,
    *,
    patients_csv: str | Path | None = None,
    skip: SkipReport | None = None,
    verify: bool = True,
) -> list[ImageRecord]:
    """Read a class-per-folder tree into records (class order sorted, then path).

    An image outside a class folder, a duplicate image id, an image the patients CSV does not list,
    a CSV label that contradicts the folder, or (with ``verify``) an unreadable header raises, or is
    recorded in ``skip`` when one is given. Hidden and non-image files are ignored.
    """
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"{root}: folder not found")
    scale = microns_per_pixel if microns_per_pixel is not None else read_scale_file(root)
    if scale is None:
        raise DatasetError(
            f"{root}: image scale unknown: pass microns_per_pixel (CLI --mpp) or write "
            f'{SCALE_FILE} with {{"microns_per_pixel": ...}} at the dataset root'
        )
    if isinstance(scale, dict):
        raise DatasetError(
            f"{root / SCALE_FILE}: a folder dataset needs one microns_per_pixel, not one per magnification"
        )
    if patients_csv is None and (root / PATIENTS_CSV).is_file():
        patients_csv = root / PATIENTS_CSV
    patients = read_patients_csv(patients_csv) if patients_csv is not None else None
    for entry in sorted(root.iterdir()):
        if entry.is_file() and is_image_file(entry):
            raise_or_skip(DatasetError(f"{entry}: image is not inside a class folder"), entry, skip)
    records: list[ImageRecord] = []
    first_seen: dict[str, Path] = {}
    for class_dir in sorted(d for d in root.iterdir() if d.is_dir() and not d.name.startswith(".")):
        for path in list_images(class_dir):
            problem = None
            patient = path.stem
            if path.stem in first_seen:
                problem = f"image id {path.stem!r} is also used by {first_seen[path.stem]}"
            elif patients is not None:
                entry = patients.get(path.relative_to(root).as_posix()) or patients.get(path.name)
                if entry is None:
                    problem = f"not listed in {patients_csv}"
                elif entry[1] is not None and entry[1] != class_dir.name:
                    problem = f"in folder {class_dir.name}/ but {patients_csv}:{entry[2]} says {entry[1]}"
                else:
                    patient = entry[0]
            if problem is not None:
                raise_or_skip(DatasetError(f"{path}: {problem}"), path, skip)
                continue
            first_seen[path.stem] = path
            if verify and readable_size(path, skip) is None:
                continue
            records.append(
                ImageRecord(
                    path=path, label=class_dir.name, patient_id=patient, microns_per_pixel=float(scale), source="folder"
                )
            )
    if not records and skip is None:
        raise DatasetError(f"{root}: no images found in class folders")
    return records
