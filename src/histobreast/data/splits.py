"""Patient-level splits: train/val/test, contiguous folds (BACH), bagging subsets, split files.

A :class:`Split` assigns image ids to named subsets (``train``/``val``/``test``); a scheme with
several rounds (5 folds, 5 bagging subsets) is a list of splits. Every split is checked for leakage
when it is built or read: one patient (or BACH pseudo-patient block) on two sides is refused, naming
the patient. Splits are written to CSV (``split,image_id,patient_id,subset``) so runs are
reproducible; the official BreaKHis fold files are read in :mod:`histobreast.data.breakhis`.
"""

from __future__ import annotations

import csv
import io
import logging
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from histobreast.atomic import atomic_path
from histobreast.data.records import ImageRecord
from histobreast.errors import DatasetError, SplitLeakageError
from histobreast.textfiles import read_user_text

log = logging.getLogger(__name__)

SPLIT_COLUMNS = ("split", "image_id", "patient_id", "subset")
_SUBSET_ORDER = {"train": 0, "val": 1, "test": 2}
FOLD_PREFIX = "fold"  # a protocol's rounds and their experiment sub-folders: fold1, fold2, ...


def fold_name(number: int) -> str:
    """The name of protocol round ``number`` (1-based), also its experiment sub-folder: ``fold<number>``."""
    return f"{FOLD_PREFIX}{number}"


def fold_number(name: str) -> int | None:
    """The round number of a fold name or folder name (``fold3`` -> 3); None for any other name."""
    digits = name.removeprefix(FOLD_PREFIX)
    return int(digits) if name.startswith(FOLD_PREFIX) and digits.isdigit() else None


@dataclass(frozen=True)
class Split:
    """One partition of images into named subsets, patient-disjoint by construction.

    ``subsets`` maps image id -> subset name; ``patients`` maps the same ids -> patient id (the
    group the leakage check uses). Building a split that puts a patient on two sides raises
    :class:`SplitLeakageError`.
    """

    name: str
    subsets: Mapping[str, str]
    patients: Mapping[str, str]

    def __post_init__(self) -> None:
        if set(self.subsets) != set(self.patients):
            raise DatasetError(f"split {self.name!r}: subsets and patients must cover the same image ids")
        check_no_leakage(self)

    @property
    def subset_names(self) -> list[str]:
        """Subset names present: train, val, test first, then any others sorted."""
        return sorted(set(self.subsets.values()), key=lambda s: (_SUBSET_ORDER.get(s, 3), s))

    def ids(self, subset: str) -> list[str]:
        """Image ids assigned to ``subset`` (sorted)."""
        return sorted(i for i, s in self.subsets.items() if s == subset)

    def select(self, records: Iterable[ImageRecord], subset: str) -> list[ImageRecord]:
        """The records assigned to ``subset``, in their given order.

        Raises :class:`DatasetError` if a record's patient differs from the split's (the split was
        made with another patient definition, e.g. another BACH block size).
        """
        if subset not in set(self.subsets.values()):
            raise DatasetError(f"split {self.name!r} has no subset {subset!r} (has {self.subset_names})")
        out = []
        for record in records:
            if self.subsets.get(record.image_id) != subset:
                continue
            if self.patients[record.image_id] != record.patient_id:
                raise DatasetError(
                    f"{record.path}: patient {record.patient_id!r} differs from split {self.name!r}, which "
                    f"has {self.patients[record.image_id]!r} (was the split made with other reader options?)"
                )
            out.append(record)
        return out

    def unassigned(self, records: Iterable[ImageRecord]) -> list[ImageRecord]:
        """Records the split does not mention (report them: nothing is dropped silently)."""
        return [r for r in records if r.image_id not in self.subsets]

    def restrict(self, image_ids: Iterable[str]) -> Split:
        """The same split limited to ``image_ids`` (ids it does not mention are ignored)."""
        keep = [i for i in image_ids if i in self.subsets]
        return Split(self.name, {i: self.subsets[i] for i in keep}, {i: self.patients[i] for i in keep})

    def counts(self) -> dict[str, tuple[int, int]]:
        """``subset -> (images, patients)``."""
        images = Counter(self.subsets.values())
        patients = {s: len({self.patients[i] for i in self.ids(s)}) for s in images}
        return {s: (images[s], patients[s]) for s in self.subset_names}


def split_from_records(name: str, assignment: Mapping[str, Iterable[ImageRecord]]) -> Split:
    """Build a :class:`Split` from ``subset -> records``; a record in two subsets is an error."""
    subsets: dict[str, str] = {}
    patients: dict[str, str] = {}
    for subset, records in assignment.items():
        for record in records:
            if record.image_id in subsets:
                raise DatasetError(
                    f"{record.path}: image {record.image_id!r} is in both "
                    f"{subsets[record.image_id]!r} and {subset!r} of split {name!r}"
                )
            subsets[record.image_id] = subset
            patients[record.image_id] = record.patient_id
    return Split(name, subsets, patients)


def check_no_leakage(split: Split | Mapping[str, Iterable[ImageRecord]], name: str = "split") -> None:
    """Refuse a split that puts one patient on two sides, naming every such patient.

    Accepts a :class:`Split` or ``subset -> records`` (for subsets built by hand).
    Raises :class:`SplitLeakageError`.
    """
    sides: dict[str, set[str]] = defaultdict(set)
    if isinstance(split, Split):
        name = split.name
        for image_id, subset in split.subsets.items():
            sides[split.patients[image_id]].add(subset)
    else:
        for subset, records in split.items():
            for record in records:
                sides[record.patient_id].add(subset)
    leaks = {p: s for p, s in sides.items() if len(s) > 1}
    if leaks:
        shown = ", ".join(f"{p} ({' + '.join(sorted(s))})" for p, s in sorted(leaks.items())[:10])
        more = f" and {len(leaks) - 10} more" if len(leaks) > 10 else ""
        raise SplitLeakageError(f"{name}: {len(leaks)} patient(s) on more than one side: {shown}{more}")


def _unique_ids(records: Sequence[ImageRecord]) -> None:
    seen: dict[str, Path] = {}
    for record in records:
        if record.image_id in seen:
            raise DatasetError(
                f"{record.path}: image id {record.image_id!r} is also used by "
                f"{seen[record.image_id]}; split files key images by id, so ids must be unique"
            )
        seen[record.image_id] = record.path


def _patients_by_label(records: Sequence[ImageRecord]) -> dict[str, list[tuple[str, list[ImageRecord]]]]:
    """``label -> [(patient, its records)]`` sorted by patient; a patient's label is its most common one."""
    by_patient: dict[str, list[ImageRecord]] = defaultdict(list)
    for record in records:
        by_patient[record.patient_id].append(record)
    out: dict[str, list[tuple[str, list[ImageRecord]]]] = defaultdict(list)
    for patient in sorted(by_patient):
        labels = Counter(r.label for r in by_patient[patient])
        label = min(labels, key=lambda lab: (-labels[lab], lab))
        out[label].append((patient, by_patient[patient]))
    return dict(sorted(out.items()))


def patient_split(
    records: Sequence[ImageRecord], fractions: Mapping[str, float] | None = None, seed: int = 0, name: str = "patient"
) -> Split:
    """Patient-level split stratified by label: ``fractions`` of each class's images per subset.

    Per class, patients are shuffled (seeded) and walked in order; a patient goes to the subset whose
    share of the cumulative image count contains the patient's midpoint. Default fractions:
    train 0.7, val 0.15, test 0.15. Raises :class:`DatasetError` if a subset would be empty.
    """
    fractions = dict(fractions or {"train": 0.7, "val": 0.15, "test": 0.15})
    if not fractions or any(f <= 0 for f in fractions.values()) or abs(sum(fractions.values()) - 1) > 1e-6:
        raise DatasetError(f"split fractions must be positive and sum to 1, got {fractions}")
    records = list(records)
    _unique_ids(records)
    rng = np.random.default_rng(seed)
    names = list(fractions)
    edges = np.cumsum([fractions[s] for s in names])
    assignment: dict[str, list[ImageRecord]] = {s: [] for s in names}
    for patients in _patients_by_label(records).values():
        order = rng.permutation(len(patients))
        total = sum(len(recs) for _, recs in patients)
        done = 0
        for position in order:
            _, recs = patients[position]
            midpoint = (done + len(recs) / 2) / total
            subset = names[min(int(np.searchsorted(edges, midpoint)), len(names) - 1)]
            assignment[subset].extend(recs)
            done += len(recs)
    empty = [s for s, recs in assignment.items() if not recs]
    if empty:
        raise DatasetError(
            f"split {name!r}: subset(s) {empty} would be empty: "
            f"{len({r.patient_id for r in records})} patients are too few for {fractions}"
        )
    return split_from_records(name, assignment)


def _stratified_group_parts(records: Sequence[ImageRecord], k: int, seed: int) -> list[list[ImageRecord]]:
    """k patient-disjoint parts, stratified by label (scikit-learn's StratifiedGroupKFold)."""
    from sklearn.model_selection import StratifiedGroupKFold

    n_patients = len({r.patient_id for r in records})
    if n_patients < k:
        raise DatasetError(f"{k} patient-disjoint parts need at least {k} patients, found {n_patients}")
    folds = StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=seed)
    labels = [r.label for r in records]
    groups = [r.patient_id for r in records]
    return [[records[i] for i in held] for _, held in folds.split(np.zeros(len(records)), labels, groups)]


def _balanced_cuts(
    sizes: Sequence[int], k: int, others: np.ndarray | None = None, overall_target: float = 0.0
) -> list[int]:
    """Cut ``sizes`` (in order) into k non-empty consecutive groups; returns the k+1 boundaries.

    Dynamic programme minimising, per group g, ``(sum_g - sum/k)^2`` plus, when ``others`` (the
    sizes other classes already put in each fold) is given, ``(others[g] + sum_g - overall_target)^2``,
    so folds are balanced within the class and overall.
    """
    m = len(sizes)
    prefix = np.concatenate([[0], np.cumsum(sizes)]).astype(np.float64)
    target = prefix[-1] / k
    cost = np.full((k + 1, m + 1), np.inf)
    back = np.zeros((k + 1, m + 1), dtype=np.int64)
    cost[0, 0] = 0.0
    for g in range(1, k + 1):
        for j in range(g, m - (k - g) + 1):
            starts = np.arange(g - 1, j)
            group = prefix[j] - prefix[starts]
            totals = cost[g - 1, starts] + (group - target) ** 2
            if others is not None:
                totals = totals + (others[g - 1] + group - overall_target) ** 2
            best = int(np.argmin(totals))
            cost[g, j], back[g, j] = totals[best], starts[best]
    cuts = [m]
    for g in range(k, 0, -1):
        cuts.append(int(back[g, cuts[-1]]))
    return cuts[::-1]


def _contiguous_parts(
    records: Sequence[ImageRecord], k: int, allow_short_classes: bool = False
) -> list[list[ImageRecord]]:
    """Per class, k consecutive image-number ranges of near-equal size; blocks are never split.

    Each class is first cut on its own; then a few rounds of coordinate descent re-cut each class
    given the others, so the fold totals are balanced too (deterministic). A class with fewer than
    k blocks is an error, unless ``allow_short_classes``: then each of its b blocks goes to its own
    part, spread evenly over the k (parts 0, k/b, 2k/b, ...), and the other parts hold none of it;
    the s-th such class starts at part s, so several of them do not all fill the first parts.
    """
    by_label: dict[str, list[ImageRecord]] = defaultdict(list)
    for record in records:
        if record.index is None:
            raise DatasetError(f"{record.path}: contiguous folds need image numbers (ImageRecord.index)")
        by_label[record.label].append(record)
    blocks = {
        label: _number_blocks(label, recs, 1 if allow_short_classes else k) for label, recs in sorted(by_label.items())
    }
    short = {label: label_blocks for label, label_blocks in blocks.items() if len(label_blocks) < k}
    blocks = {label: label_blocks for label, label_blocks in blocks.items() if label not in short}
    sizes = {label: [len(b) for b in label_blocks] for label, label_blocks in blocks.items()}
    cuts = {label: _balanced_cuts(sizes[label], k) for label in blocks}
    overall_target = len(records) / k

    def fold_sizes(label: str) -> np.ndarray:
        prefix = np.concatenate([[0], np.cumsum(sizes[label])])
        return np.diff(prefix[cuts[label]])

    for _ in range(3):
        for label in blocks:
            others = sum((fold_sizes(other) for other in blocks if other != label), np.zeros(k))
            cuts[label] = _balanced_cuts(sizes[label], k, others, overall_target)
    parts: list[list[ImageRecord]] = [[] for _ in range(k)]
    for label, label_blocks in blocks.items():
        for fold in range(k):
            for block in label_blocks[cuts[label][fold] : cuts[label][fold + 1]]:
                parts[fold].extend(block)
    for offset, (label, label_blocks) in enumerate(short.items()):
        log.warning(
            "class %r has %d patient blocks, fewer than %d parts: %d part(s) hold none of its images",
            label,
            len(label_blocks),
            k,
            k - len(label_blocks),
        )
        for i, block in enumerate(label_blocks):
            parts[(i * k // len(label_blocks) + offset) % k].extend(block)
    return parts


def _number_blocks(label: str, records: list[ImageRecord], k: int) -> list[list[ImageRecord]]:
    """A class's records sorted by number and grouped into runs of one patient; checks there are >= k."""
    records = sorted(records, key=lambda r: (r.index, r.image_id))
    blocks: list[list[ImageRecord]] = []
    for record in records:
        if blocks and blocks[-1][0].patient_id == record.patient_id:
            blocks[-1].append(record)
        else:
            blocks.append([record])
    seen: set[str] = set()
    for block in blocks:
        if block[0].patient_id in seen:
            raise DatasetError(
                f"{block[0].path}: patient {block[0].patient_id!r} of class {label!r} is not a "
                "contiguous range of image numbers, so contiguous folds would split it"
            )
        seen.add(block[0].patient_id)
    if len(blocks) < k:
        raise DatasetError(
            f"class {label!r} has {len(blocks)} patient blocks, fewer than {k} folds: "
            "use fewer folds or a smaller block size"
        )
    return blocks


def _check_parts(k: int, what: str) -> None:
    """Refuse k < 2: one part held out leaves nothing to train on (and k <= 0 cannot be cut)."""
    if k < 2:
        raise DatasetError(f"{what} need k >= 2, got k = {k}")


def _rounds(parts: list[list[ImageRecord]], held_out: str, prefix: str) -> list[Split]:
    """Split j holds part j out as ``held_out`` and the other parts as ``train``."""
    return [
        split_from_records(
            f"{prefix}{j + 1}",
            {"train": [r for i, part in enumerate(parts) if i != j for r in part], held_out: parts[j]},
        )
        for j in range(len(parts))
    ]


def contiguous_folds(records: Sequence[ImageRecord], k: int = 5) -> list[Split]:
    """k-fold cross-validation for BACH: fold j is a contiguous range of image numbers per class.

    Per class, images are sorted by number and cut into k consecutive ranges of near-equal size
    that never split a pseudo-patient block, so neighbouring images stay together. Fold j (named
    ``fold{j}``) has subsets ``train`` and ``test``.
    """
    _check_parts(k, "contiguous folds")
    records = list(records)
    _unique_ids(records)
    return _rounds(_contiguous_parts(records, k), "test", FOLD_PREFIX)


def bagging_splits(records: Sequence[ImageRecord], k: int = 5, seed: int = 0, contiguous: bool = False) -> list[Split]:
    """k non-overlapping patient-disjoint subsets of a training set, for System A's bagging.

    Split j (``bag{j}``) validates on subset j and trains on the other k-1. Subsets are stratified
    by label; ``contiguous=True`` (BACH) makes each a contiguous number range per class instead of a
    seeded random pick of patients. A class with fewer patient blocks than k (a small class in one
    cross-validation fold) is not an error here: its blocks are spread over as many subsets, and the
    members validated on the others train on all of its images (a warning says so).
    """
    _check_parts(k, "bagging subsets")
    records = list(records)
    _unique_ids(records)
    parts = (
        _contiguous_parts(records, k, allow_short_classes=True)
        if contiguous
        else _stratified_group_parts(records, k, seed)
    )
    return _rounds(parts, "val", "bag")


def write_splits_csv(splits: Iterable[Split], path: str | Path) -> Path:
    """Write splits to CSV atomically, one row per image and split: ``split,image_id,patient_id,subset``."""
    path = Path(path)
    with atomic_path(path) as tmp, tmp.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(SPLIT_COLUMNS)
        for split in splits:
            for image_id, subset in split.subsets.items():
                writer.writerow([split.name, image_id, split.patients[image_id], subset])
    return path


def read_splits_csv(path: str | Path) -> list[Split]:
    """Read a split file written by :func:`write_splits_csv`; each split is checked for leakage.

    Errors name the file (and line): missing columns, an image listed twice in one split, a patient
    on two sides.
    """
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"{path}: split file not found")
    subsets: dict[str, dict[str, str]] = {}
    patients: dict[str, dict[str, str]] = {}
    with io.StringIO(read_user_text(path), newline="") as fh:
        reader = csv.DictReader(fh)
        missing = set(SPLIT_COLUMNS) - set(reader.fieldnames or [])
        if missing:
            raise DatasetError(f"{path}: missing columns {sorted(missing)} (expected {list(SPLIT_COLUMNS)})")
        for line_no, row in enumerate(reader, start=2):
            name, image_id = row["split"], row["image_id"]
            if not all(row[c] for c in SPLIT_COLUMNS):
                raise DatasetError(f"{path}:{line_no}: empty field in {row}")
            if image_id in subsets.setdefault(name, {}):
                raise DatasetError(f"{path}:{line_no}: image {image_id!r} is listed twice in split {name!r}")
            subsets[name][image_id] = row["subset"]
            patients.setdefault(name, {})[image_id] = row["patient_id"]
    try:
        return [Split(name, subsets[name], patients[name]) for name in subsets]
    except SplitLeakageError as err:
        raise SplitLeakageError(f"{path}: {err}") from err
