"""``ImageRecord``: one image and everything known about it, independent of any dataset layout.

Every reader returns a list of records; every later stage (splits, datasets, metrics, reports)
works on records only, so a new dataset needs a reader and nothing else.
"""

from __future__ import annotations

import csv
import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

from histobreast.atomic import atomic_path
from histobreast.errors import DatasetError


@dataclass(frozen=True)
class ImageRecord:
    """One image: where it is, its label, and the patient (or neighbour group) it belongs to.

    ``patient_id`` is what patient-level metrics and leakage checks group by. Datasets without
    patient ids (BACH) use a pseudo-patient: a block of contiguous image numbers.
    ``index`` is the image's number within its class/patient sequence where the dataset has one
    (BACH ``b041`` -> 41, BreaKHis sequence ``-001`` -> 1), else ``None``.
    """

    path: Path
    label: str
    patient_id: str
    microns_per_pixel: float
    source: str
    subtype: str | None = None
    magnification: int | None = None
    index: int | None = None
    extra: dict[str, str] = field(default_factory=dict, compare=False, hash=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "path", Path(self.path))
        if not self.label:
            raise DatasetError(f"{self.path}: record has an empty label")
        if self.microns_per_pixel <= 0:
            raise DatasetError(f"{self.path}: microns_per_pixel must be > 0, got {self.microns_per_pixel}")

    @property
    def image_id(self) -> str:
        """File name without extension: the id used in prediction files and reports."""
        return self.path.stem


_FIELDS = [f.name for f in dataclasses.fields(ImageRecord) if f.name != "extra"]


def write_records_csv(records: Iterable[ImageRecord], path: str | Path) -> Path:
    """Write records to CSV atomically (temp file + rename); ``extra`` keys become columns."""
    records = list(records)
    path = Path(path)
    extra_keys = sorted({k for r in records for k in r.extra})
    with atomic_path(path) as tmp, tmp.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(_FIELDS + [f"extra.{k}" for k in extra_keys])
        for r in records:
            row = ["" if getattr(r, f) is None else str(getattr(r, f)) for f in _FIELDS]
            writer.writerow(row + [r.extra.get(k, "") for k in extra_keys])
    return path


def read_records_csv(path: str | Path) -> list[ImageRecord]:
    """Read records written by :func:`write_records_csv`; errors name the file and line."""
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"{path}: records file not found")
    out: list[ImageRecord] = []
    with path.open(newline="") as fh:
        reader = csv.DictReader(fh)
        missing = {"path", "label", "patient_id", "microns_per_pixel", "source"} - set(reader.fieldnames or [])
        if missing:
            raise DatasetError(f"{path}: missing columns {sorted(missing)}")
        for line_no, row in enumerate(reader, start=2):
            try:
                out.append(
                    ImageRecord(
                        path=Path(row["path"]),
                        label=row["label"],
                        patient_id=row["patient_id"],
                        microns_per_pixel=float(row["microns_per_pixel"]),
                        source=row["source"],
                        subtype=row.get("subtype") or None,
                        magnification=int(row["magnification"]) if row.get("magnification") else None,
                        index=int(row["index"]) if row.get("index") else None,
                        extra={k[6:]: v for k, v in row.items() if k.startswith("extra.") and v},
                    )
                )
            except (ValueError, DatasetError) as err:
                raise DatasetError(f"{path}:{line_no}: {err}") from err
    return out
