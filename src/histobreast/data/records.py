"""``ImageRecord``: one image and everything known about it, independent of any dataset layout.

Every reader returns a list of records; every later stage (splits, datasets, metrics, reports)
works on records only, so a new dataset needs a reader and nothing else.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from histobreast.atomic import atomic_path, atomic_write_json
from histobreast.config import read_json
from histobreast.errors import DatasetError
from histobreast.textfiles import read_user_text

#: Scales a microscope image can have, in µm/px: 1 nm/px is beyond any light microscope, 1 mm/px a slide thumbnail.
PLAUSIBLE_SCALE = (1e-3, 1e3)


def scale_problem(microns_per_pixel: float) -> str | None:
    """What is wrong with a physical scale (µm/px), or None: it must be a finite number in :data:`PLAUSIBLE_SCALE`."""
    low, high = PLAUSIBLE_SCALE
    if not isinstance(microns_per_pixel, (int, float)) or not math.isfinite(microns_per_pixel):
        return f"must be a finite number, got {microns_per_pixel!r}"
    if not low <= microns_per_pixel <= high:
        return f"must be between {low:g} and {high:g} µm/px (a microscope image's scale), got {microns_per_pixel:g}"
    return None


# Label of images whose class is unknown (prediction rows get label index -1).
UNLABELLED = "unlabelled"


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
        problem = scale_problem(self.microns_per_pixel)
        if problem:
            raise DatasetError(f"{self.path}: microns_per_pixel {problem}")

    @property
    def image_id(self) -> str:
        """File name without extension: the id used in prediction files and reports."""
        return self.path.stem


def unlabelled(paths: Iterable[Path], microns_per_pixel: float, source: str = "predict") -> list[ImageRecord]:
    """Records of images to predict: no label, each its own patient, all at ``microns_per_pixel``."""
    return [
        ImageRecord(path=p, label=UNLABELLED, patient_id=p.stem, microns_per_pixel=microns_per_pixel, source=source)
        for p in paths
    ]


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
    with io.StringIO(read_user_text(path), newline="") as fh:
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
            except (ValueError, TypeError, DatasetError) as err:
                raise DatasetError(f"{path}:{line_no}: {err}") from err
    return out


def relabel(
    records: Iterable[ImageRecord], mapping: Mapping[str, str] | Callable[[ImageRecord], str]
) -> list[ImageRecord]:
    """New records whose label is ``mapping[label]`` (or ``mapping(record)``); the old label is kept.

    The first original label is stored in ``extra["original_label"]``, so chained relabelling still
    remembers it. A label missing from ``mapping`` raises :class:`DatasetError` naming it and a file.
    Example: ``relabel(records, BACH_BINARY)`` for System A's carcinoma vs non-carcinoma task, or
    ``relabel(records, lambda r: r.subtype)`` for BreaKHis's 8-subtype task.
    """
    out = []
    for record in records:
        if callable(mapping):
            new_label = mapping(record)
        elif record.label in mapping:
            new_label = mapping[record.label]
        else:
            raise DatasetError(
                f"{record.path}: label {record.label!r} is not in the relabel mapping (known: {sorted(mapping)})"
            )
        extra = {"original_label": record.label, **record.extra}
        out.append(dataclasses.replace(record, label=new_label, extra=extra))
    return out


#: Name of the optional scale file at a dataset root: ``{"microns_per_pixel": 0.84}``, or for
#: BreaKHis one value per magnification ``{"microns_per_pixel": {"40": 9.8, "100": 3.92, ...}}``.
SCALE_FILE = "histobreast.json"

Scale = float | dict[int, float]


def _positive(value: object, path: Path) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        raise DatasetError(f"{path}: microns_per_pixel values must be positive numbers, got {value!r}")
    return float(value)


def read_scale_file(directory: str | Path) -> Scale | None:
    """The ``microns_per_pixel`` stored in ``directory/histobreast.json``, or ``None`` if there is no file.

    Returns a float, or a dict magnification -> float. A malformed file raises :class:`DatasetError`.
    """
    path = Path(directory) / SCALE_FILE
    if not path.is_file():
        return None
    data = read_json(path, "dataset scale", error=DatasetError)
    if "microns_per_pixel" not in data:
        raise DatasetError(f"{path}: expected an object with the key 'microns_per_pixel'")
    value = data["microns_per_pixel"]
    if isinstance(value, dict):
        try:
            return {int(mag): _positive(mpp, path) for mag, mpp in value.items()}
        except ValueError as err:
            raise DatasetError(f"{path}: magnification keys must be integers ({err})") from err
    return _positive(value, path)


def write_scale_file(directory: str | Path, microns_per_pixel: float | Mapping[int, float]) -> Path:
    """Write ``directory/histobreast.json`` atomically (see :data:`SCALE_FILE`)."""
    path = Path(directory) / SCALE_FILE
    if isinstance(microns_per_pixel, Mapping):
        value: object = {str(mag): _positive(mpp, path) for mag, mpp in sorted(microns_per_pixel.items())}
    else:
        value = _positive(microns_per_pixel, path)
    return atomic_write_json(path, {"microns_per_pixel": value})
