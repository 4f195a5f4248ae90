"""BreaKHis v1 (Spanhol et al. 2016): file-name parser, tree reader and the official fold files.

Layout: ``BreaKHis_v1/histology_slides/breast/<benign|malignant>/SOB/<subtype_dir>/
SOB_<B|M>_<code>_<yy>-<slide>/<mag>X/SOB_<B|M>_<code>-<yy>-<slide>-<mag>-<seq>.png``.

**Patient identity.** A patient is (subtype, year, slide): ``patient_id = "DC-14-13412"``. This is what
the official fold files identify: counted this way they hold 82 patients, the number the BreaKHis
authors publish. The slide id ``14-13412`` occurs under both ductal (DC) and lobular (LC) carcinoma;
the official folds treat these as two patients and put them on opposite sides in folds 1, 3 and 5,
so merging them would make the official protocol itself "leak". Slide ids such as 22549AB, 22549CD
and 22549G are distinct patients, as in the official files.

**Scale.** BreaKHis publishes no µm/pixel. :data:`DEFAULT_MICRONS_PER_PIXEL` assumes 0.49 µm/px at
400X and a pixel size inversely proportional to the magnification (0.98 at 200X, 1.96 at 100X, 4.9
at 40X): a common approximation, not a calibrated value. Override it with the reader's
``microns_per_pixel`` argument or a ``histobreast.json`` at the dataset root.
"""

from __future__ import annotations

import csv
import io
import re
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from histobreast.atomic import atomic_write_text
from histobreast.data.imageio import SkipReport, list_images, raise_or_skip, readable_size
from histobreast.data.records import ImageRecord, Scale, read_scale_file
from histobreast.data.splits import Split, fold_name
from histobreast.errors import DatasetError, SplitLeakageError
from histobreast.textfiles import read_user_text

BREAKHIS_CLASSES = ("benign", "malignant")
BREAKHIS_SUBTYPES = ("A", "F", "PT", "TA", "DC", "LC", "MC", "PC")
SUBTYPE_DIRS = {
    "A": "adenosis",
    "F": "fibroadenoma",
    "PT": "phyllodes_tumor",
    "TA": "tubular_adenoma",
    "DC": "ductal_carcinoma",
    "LC": "lobular_carcinoma",
    "MC": "mucinous_carcinoma",
    "PC": "papillary_carcinoma",
}
_CLASS_LETTER = {"A": "B", "F": "B", "PT": "B", "TA": "B", "DC": "M", "LC": "M", "MC": "M", "PC": "M"}
_LABEL = {"B": "benign", "M": "malignant"}
MAGNIFICATIONS = (40, 100, 200, 400)
NATIVE_SIZE = (700, 460)  # (width, height); a few real images are 700x456
#: Assumed µm/pixel at 400X; other magnifications scale as 400 / magnification (see module doc).
MICRONS_PER_PIXEL_AT_400X = 0.49
DEFAULT_MICRONS_PER_PIXEL = {mag: round(MICRONS_PER_PIXEL_AT_400X * 400 / mag, 4) for mag in MAGNIFICATIONS}
TREE_PREFIX = PurePosixPath("BreaKHis_v1/histology_slides/breast")

_NAME = re.compile(
    r"^(?P<procedure>[A-Z]+)_(?P<tumor_class>[BM])_(?P<subtype>[A-Z]+)-(?P<year>\d{2})-(?P<slide>\d+[A-Z]*)"
    r"-(?P<magnification>\d+)-(?P<sequence>\d{3})\.png$"
)


@dataclass(frozen=True)
class BreakhisName:
    """The fields of a BreaKHis file name, e.g. ``SOB_B_A-14-22549AB-40-001.png``."""

    procedure: str
    tumor_class: str
    subtype: str
    year: str
    slide: str
    magnification: int
    sequence: int

    @property
    def label(self) -> str:
        """``"benign"`` or ``"malignant"``."""
        return _LABEL[self.tumor_class]

    @property
    def patient_id(self) -> str:
        """``<subtype>-<year>-<slide>``, e.g. ``DC-14-13412`` (see the module doc for why)."""
        return f"{self.subtype}-{self.year}-{self.slide}"

    @property
    def filename(self) -> str:
        """The file name this parses from (parse and format are inverses)."""
        return (
            f"{self.procedure}_{self.tumor_class}_{self.subtype}-{self.year}-{self.slide}"
            f"-{self.magnification}-{self.sequence:03d}.png"
        )

    @property
    def relpath(self) -> PurePosixPath:
        """Where the official tree keeps this file, relative to the folder holding ``BreaKHis_v1``."""
        patient_dir = f"{self.procedure}_{self.tumor_class}_{self.subtype}_{self.year}-{self.slide}"
        return (
            TREE_PREFIX
            / self.label
            / self.procedure
            / SUBTYPE_DIRS[self.subtype]
            / patient_dir
            / f"{self.magnification}X"
            / self.filename
        )


def parse_breakhis_name(name: str) -> BreakhisName:
    """Parse a BreaKHis file name (a bare name or a path); a malformed one raises :class:`DatasetError`."""
    filename = PurePosixPath(str(name).replace("\\", "/")).name
    match = _NAME.match(filename)
    if match is None:
        raise DatasetError(
            f"{name}: not a BreaKHis file name (expected SOB_<B|M>_<subtype>-<yy>-<slide>-<40|100|200|400>-<nnn>.png)"
        )
    fields = match.groupdict()
    subtype, magnification = fields["subtype"], int(fields["magnification"])
    if subtype not in _CLASS_LETTER:
        raise DatasetError(f"{name}: unknown BreaKHis subtype {subtype!r} (expected one of {BREAKHIS_SUBTYPES})")
    if _CLASS_LETTER[subtype] != fields["tumor_class"]:
        raise DatasetError(
            f"{name}: subtype {subtype} is {_LABEL[_CLASS_LETTER[subtype]]}, "
            f"but the name says class {fields['tumor_class']}"
        )
    if magnification not in MAGNIFICATIONS or fields["magnification"] != str(magnification):
        raise DatasetError(f"{name}: magnification {fields['magnification']} is not one of {MAGNIFICATIONS}")
    return BreakhisName(
        fields["procedure"],
        fields["tumor_class"],
        subtype,
        fields["year"],
        fields["slide"],
        magnification,
        int(fields["sequence"]),
    )


def _tree_mismatch(path: Path, parsed: BreakhisName) -> str | None:
    """The first folder of ``path`` that contradicts its file name, if any (only folders that are present)."""
    mag_dir, patient_dir = path.parent.name, path.parent.parent.name
    if re.fullmatch(r"\d+X", mag_dir) and mag_dir != f"{parsed.magnification}X":
        return f"folder {mag_dir} disagrees with the magnification {parsed.magnification} in the name"
    expected_patient = parsed.relpath.parts[-3]
    if patient_dir.startswith(f"{parsed.procedure}_") and patient_dir != expected_patient:
        return f"folder {patient_dir} disagrees with the name (expected {expected_patient})"
    for other_label in BREAKHIS_CLASSES:
        if other_label != parsed.label and other_label in path.parts:
            return f"file of class {parsed.label} is under a {other_label!r} folder"
    return None


def resolve_breakhis_scale(
    microns_per_pixel: float | Mapping[int, float] | None, scale_dirs: Iterable[Path] = ()
) -> dict[int, float]:
    """µm/pixel per magnification: the argument, else the first ``histobreast.json`` found, else the defaults.

    A single number applies to every magnification.
    """
    scale: Scale | Mapping[int, float] | None = microns_per_pixel
    for directory in scale_dirs:
        if scale is not None:
            break
        scale = read_scale_file(directory)
    if scale is None:
        return dict(DEFAULT_MICRONS_PER_PIXEL)
    if isinstance(scale, Mapping):
        return {int(m): float(v) for m, v in scale.items()}
    return {m: float(scale) for m in MAGNIFICATIONS}


def read_breakhis(
    root: str | Path,
    *,
    magnifications: Iterable[int] | None = None,
    microns_per_pixel: float | Mapping[int, float] | None = None,
    skip: SkipReport | None = None,
    verify: bool = True,
) -> list[ImageRecord]:
    """Read every BreaKHis PNG below ``root`` into records (sorted by path).

    Each name is parsed; a malformed name, a folder that contradicts the name, a non-PNG image, a
    duplicate file name or (with ``verify``) an unreadable image header raises, or is recorded in
    ``skip`` when one is given. Other files (fold lists, notes) are not images and are ignored.
    ``magnifications`` keeps only those magnifications. ``microns_per_pixel`` (a number, or one per
    magnification) overrides ``histobreast.json`` at ``root`` and the defaults.
    """
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"{root}: BreaKHis folder not found")
    wanted = set(magnifications) if magnifications is not None else set(MAGNIFICATIONS)
    unknown = wanted - set(MAGNIFICATIONS)
    if unknown:
        raise DatasetError(f"unknown BreaKHis magnification(s) {sorted(unknown)}; expected {MAGNIFICATIONS}")
    scale_dirs = [root] + ([root.parent] if root.name == TREE_PREFIX.parts[0] else [])
    scale = resolve_breakhis_scale(microns_per_pixel, scale_dirs)
    records: list[ImageRecord] = []
    first_seen: dict[str, Path] = {}
    for path in list_images(root):
        try:
            parsed = parse_breakhis_name(str(path))
        except DatasetError as err:
            raise_or_skip(err, path, skip)
            continue
        if parsed.magnification not in scale:
            raise DatasetError(f"{path}: microns_per_pixel gives no value for magnification {parsed.magnification}")
        problem = _tree_mismatch(path, parsed)
        if problem is None and path.name in first_seen:
            problem = f"duplicate of {first_seen[path.name]}"
        if problem is not None:
            raise_or_skip(DatasetError(f"{path}: {problem}"), path, skip)
            continue
        first_seen[path.name] = path
        if parsed.magnification not in wanted or (verify and readable_size(path, skip) is None):
            continue
        records.append(
            ImageRecord(
                path=path,
                label=parsed.label,
                patient_id=parsed.patient_id,
                microns_per_pixel=scale[parsed.magnification],
                source="breakhis",
                subtype=parsed.subtype,
                magnification=parsed.magnification,
                index=parsed.sequence,
            )
        )
    if not records and skip is None:
        raise DatasetError(f"{root}: no BreaKHis images found")
    return records


def _fold_split(name: str, rows: Iterable[tuple[str, str, int, str]], where: str) -> Split:
    """Build one fold from ``(location, filename, magnification, group)`` rows, checking each."""
    subsets: dict[str, str] = {}
    patients: dict[str, str] = {}
    for location, filename, magnification, group in rows:
        try:
            parsed = parse_breakhis_name(filename)
        except DatasetError as err:
            raise DatasetError(f"{location}: {err}") from err
        if parsed.magnification != magnification:
            raise DatasetError(f"{location}: magnification {magnification} disagrees with {filename}")
        if group not in ("train", "test"):
            raise DatasetError(f"{location}: group must be 'train' or 'test', got {group!r}")
        image_id = filename[: -len(".png")]
        if image_id in subsets:
            raise DatasetError(f"{location}: {filename} is listed twice in {name}")
        subsets[image_id] = group
        patients[image_id] = parsed.patient_id
    if not subsets:
        raise DatasetError(f"{where}: no images listed")
    try:
        return Split(name, subsets, patients)
    except SplitLeakageError as err:
        raise SplitLeakageError(f"{where}: {err}") from err


def _read_dsfold(path: Path) -> Split:
    """One official ``dsfoldN.txt``: lines ``filename|magnification|fold|train|test``."""
    rows = []
    fold_numbers = set()
    for line_no, line in enumerate(read_user_text(path).splitlines(), start=1):
        if not line.strip():
            continue
        fields = line.strip().split("|")
        if len(fields) != 4 or not fields[1].isdigit() or not fields[2].isdigit():
            raise DatasetError(f"{path}:{line_no}: expected 'filename|magnification|fold|train or test', got {line!r}")
        fold_numbers.add(int(fields[2]))
        rows.append((f"{path}:{line_no}", fields[0], int(fields[1]), fields[3]))
    if len(fold_numbers) > 1:
        raise DatasetError(f"{path}: one fold file must hold one fold, found folds {sorted(fold_numbers)}")
    return _fold_split(fold_name(fold_numbers.pop() if fold_numbers else 0), rows, str(path))


def _read_kaggle_folds(path: Path) -> list[Split]:
    """Kaggle ``Folds.csv``: columns ``fold,mag,grp,filename`` (filename a path under BreaKHis_v1/)."""
    rows: dict[int, list[tuple[str, str, int, str]]] = defaultdict(list)
    with io.StringIO(read_user_text(path), newline="") as fh:
        reader = csv.DictReader(fh)
        missing = {"fold", "mag", "grp", "filename"} - set(reader.fieldnames or [])
        if missing:
            raise DatasetError(f"{path}: missing columns {sorted(missing)} (expected fold,mag,grp,filename)")
        for line_no, row in enumerate(reader, start=2):
            if None in row or None in row.values():  # csv.DictReader's marks of a long or short row
                raise DatasetError(f"{path}:{line_no}: expected 4 values (fold,mag,grp,filename), got {row}")
            if not row["fold"].isdigit() or not row["mag"].isdigit():
                raise DatasetError(f"{path}:{line_no}: fold and mag must be integers, got {row}")
            rows[int(row["fold"])].append(
                (f"{path}:{line_no}", PurePosixPath(row["filename"]).name, int(row["mag"]), row["grp"])
            )
    return [_fold_split(fold_name(fold), rows[fold], str(path)) for fold in sorted(rows)]


def find_fold_files(folder: str | Path) -> list[Path]:
    """The fold files of ``folder`` or its ``mkfold/``: ``dsfold*.txt`` in fold order, else ``[Folds.csv]``, else ``[]``."""
    for candidate in (Path(folder), Path(folder) / "mkfold"):
        fold_files = sorted(candidate.glob("dsfold*.txt"), key=lambda p: (len(p.name), p.name))
        if fold_files:
            return fold_files
        if (candidate / "Folds.csv").is_file():
            return [candidate / "Folds.csv"]
    return []


def read_breakhis_folds(source: str | Path) -> list[Split]:
    """Read the official folds: a folder holding ``dsfold1..5.txt`` (or ``mkfold/`` or ``Folds.csv``),
    one ``dsfoldN.txt``, or a Kaggle ``Folds.csv``. Returns one :class:`Split` per fold (``fold1`` ...),
    subsets ``train``/``test``, each checked for patient leakage.
    """
    source = Path(source)
    fold_files = [source] if source.is_file() else find_fold_files(source)
    if not fold_files:
        raise DatasetError(f"{source}: no BreaKHis fold files (dsfold*.txt or Folds.csv) found here or in mkfold/")
    if fold_files[0].suffix.lower() == ".csv":
        return _read_kaggle_folds(fold_files[0])
    return [_read_dsfold(p) for p in fold_files]


def unlisted_images(folds: Sequence[Split], records: Sequence[ImageRecord]) -> dict[str, list[Path]]:
    """Per fold (every one, not only the first), the images of ``records`` that its list lacks."""
    missing = {fold.name: [r.path for r in records if r.image_id not in fold.subsets] for fold in folds}
    return {name: paths for name, paths in missing.items() if paths}


def official_folds(records: Sequence[ImageRecord], source: str | Path) -> list[Split]:
    """The official folds restricted to ``records`` (e.g. a subset of the tree).

    An image the fold files do not list raises :class:`DatasetError` naming it: the official
    protocol has no place for it, and nothing is dropped silently.
    """
    folds = read_breakhis_folds(source)
    for fold, unlisted in unlisted_images(folds, records).items():
        more = f" and {len(unlisted) - 1} more" if len(unlisted) > 1 else ""
        raise DatasetError(f"{unlisted[0]}{more}: not listed in {fold} of the official fold files at {source}")
    ids = [r.image_id for r in records]
    return [fold.restrict(ids) for fold in folds]


def split_by_magnification(split: Split) -> dict[int, Split]:
    """The official protocol reports per magnification: one split per magnification present."""
    by_mag: dict[int, list[str]] = defaultdict(list)
    for image_id in split.subsets:
        by_mag[parse_breakhis_name(image_id + ".png").magnification].append(image_id)
    return {mag: split.restrict(ids) for mag, ids in sorted(by_mag.items())}


def write_dsfold(split: Split, path: str | Path, fold: int) -> Path:
    """Write one fold in the official ``dsfoldN.txt`` form (``filename|mag|fold|train``), atomically."""
    lines = [
        f"{image_id}.png|{parse_breakhis_name(image_id + '.png').magnification}|{fold}|{group}"
        for image_id, group in split.subsets.items()
    ]
    return atomic_write_text(path, "\n".join(lines) + "\n")


def write_kaggle_folds(splits: Iterable[Split], path: str | Path) -> Path:
    """Write folds in the Kaggle ``Folds.csv`` form (``fold,mag,grp,filename``), atomically."""
    lines = ["fold,mag,grp,filename"]
    for fold, split in enumerate(splits, start=1):
        for image_id, group in split.subsets.items():
            parsed = parse_breakhis_name(image_id + ".png")
            lines.append(f"{fold},{parsed.magnification},{group},{parsed.relpath}")
    return atomic_write_text(path, "\n".join(lines) + "\n")
