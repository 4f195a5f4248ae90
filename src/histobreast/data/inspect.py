"""Dataset summaries: images per class / subtype / magnification / patient, image sizes, µm/pixel,
and every problem found (the engine of ``histobreast data inspect``, usable from Python).

:func:`summarise` turns records (plus the files a reader left out in skip mode) into a
:class:`DatasetSummary`; :func:`inspect_dataset` reads a tree in skip mode, decodes every image and
summarises it, so one run lists all problems instead of stopping at the first;
:func:`print_summary` renders the summary as rich tables.

Problems are ``error`` (a file that cannot be used: unreadable, truncated, misnamed, contradicting
its folder or label file; readers raise on these unless told to skip) or ``warning`` (the data are
usable but deserve a look: mixed image sizes, a patient under two labels, a class with one patient,
images the official fold files do not list).
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from histobreast.data.bach import DEFAULT_BLOCK_SIZE
from histobreast.data.breakhis import BREAKHIS_SUBTYPES, find_fold_files, read_breakhis_folds, unlisted_images
from histobreast.data.imageio import SkipReport, image_size
from histobreast.data.readers import check_images, class_names, detect_kind, read_dataset
from histobreast.data.records import ImageRecord
from histobreast.errors import DatasetError, ImageReadError

#: How many file names a warning about many files quotes before "and N more".
_QUOTED = 5


@dataclass(frozen=True)
class Problem:
    """One problem: ``severity`` ``"error"`` (file cannot be used) or ``"warning"``, with the file if any."""

    severity: str
    message: str
    path: Path | None = None

    def __str__(self) -> str:
        return f"{self.severity}: {self.path}: {self.message}" if self.path else f"{self.severity}: {self.message}"


@dataclass(frozen=True)
class GroupCount:
    """Images and patients of one class (and subtype), in total and per magnification."""

    label: str
    subtype: str | None
    images: int
    patients: int
    per_magnification: dict[int, int] = field(default_factory=dict)


@dataclass
class DatasetSummary:
    """What ``histobreast data inspect`` reports about one dataset.

    ``groups`` has one row per class, or per (class, subtype) when records have subtypes;
    ``sizes`` counts images per ``(width, height)``; ``microns_per_pixel`` maps each magnification
    (``None`` when there is none) to its µm/pixel values; ``notes`` are informative lines (fold
    files found, label-file coverage).
    """

    kind: str
    root: Path | None
    images: int
    patients: int
    classes: list[str]
    groups: list[GroupCount]
    magnifications: list[int]
    sizes: dict[tuple[int, int], int]
    microns_per_pixel: dict[int | None, list[float]]
    problems: list[Problem] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def errors(self) -> list[Problem]:
        """Problems that make files unusable."""
        return [p for p in self.problems if p.severity == "error"]

    @property
    def warnings(self) -> list[Problem]:
        """Problems worth a look that leave the data usable."""
        return [p for p in self.problems if p.severity == "warning"]

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able form (sizes as ``"WxH"``, paths as strings)."""
        return {
            "kind": self.kind,
            "root": str(self.root) if self.root else None,
            "images": self.images,
            "patients": self.patients,
            "classes": self.classes,
            "groups": [
                {
                    "label": g.label,
                    "subtype": g.subtype,
                    "images": g.images,
                    "patients": g.patients,
                    "per_magnification": {str(m): n for m, n in g.per_magnification.items()},
                }
                for g in self.groups
            ],
            "magnifications": self.magnifications,
            "sizes": {f"{w}x{h}": n for (w, h), n in self.sizes.items()},
            "microns_per_pixel": {str(m) if m is not None else "all": v for m, v in self.microns_per_pixel.items()},
            "problems": [
                {"severity": p.severity, "path": str(p.path) if p.path else None, "message": p.message}
                for p in self.problems
            ],
            "notes": self.notes,
        }


def _quote(paths: Sequence[Path]) -> str:
    names = ", ".join(p.name for p in paths[:_QUOTED])
    return names + (f" and {len(paths) - _QUOTED} more" if len(paths) > _QUOTED else "")


def _groups(records: Sequence[ImageRecord], classes: list[str], magnifications: list[int]) -> list[GroupCount]:
    by_group: dict[tuple[str, str | None], list[ImageRecord]] = defaultdict(list)
    for record in records:
        by_group[(record.label, record.subtype)].append(record)
    subtype_order = {s: i for i, s in enumerate(BREAKHIS_SUBTYPES)}

    def order(key: tuple[str, str | None]) -> tuple[int, int, str]:
        label, subtype = key
        return classes.index(label), subtype_order.get(subtype or "", len(subtype_order)), subtype or ""

    return [
        GroupCount(
            label,
            subtype,
            len(recs),
            len({r.patient_id for r in recs}),
            {m: sum(r.magnification == m for r in recs) for m in magnifications},
        )
        for (label, subtype), recs in sorted(by_group.items(), key=lambda item: order(item[0]))
    ]


def _size_problems(sizes: dict[Path, tuple[int, int]]) -> list[Problem]:
    """One warning when images differ in size; when most share one size, it names the other files."""
    by_size: dict[tuple[int, int], list[Path]] = defaultdict(list)
    for path, size in sizes.items():
        by_size[size].append(path)
    if len(by_size) < 2:
        return []
    ranked = sorted(by_size.items(), key=lambda item: (-len(item[1]), item[0]))
    (common_w, common_h), common = ranked[0]
    if 2 * len(common) <= len(sizes):  # no dominant size: the sizes' range says enough
        widths, heights = [w for w, _ in by_size], [h for _, h in by_size]
        return [
            Problem(
                "warning",
                f"images differ in size: {len(by_size)} sizes, widths {min(widths)}-"
                f"{max(widths)}, heights {min(heights)}-{max(heights)}",
            )
        ]
    others = "; ".join(f"{w}x{h} ({len(paths)}): {_quote(paths)}" for (w, h), paths in ranked[1:])
    return [Problem("warning", f"images differ in size: {len(common)} are {common_w}x{common_h}, others {others}")]


def _label_problems(records: Sequence[ImageRecord]) -> list[Problem]:
    """Warnings for a patient under several labels and for a class held by a single patient."""
    labels_of: dict[str, set[str]] = defaultdict(set)
    patients_of: dict[str, set[str]] = defaultdict(set)
    for record in records:
        labels_of[record.patient_id].add(record.label)
        patients_of[record.label].add(record.patient_id)
    problems = [
        Problem("warning", f"patient {patient!r} has images of several classes: {sorted(labels)}")
        for patient, labels in sorted(labels_of.items())
        if len(labels) > 1
    ]
    if len(patients_of) == 1:
        problems.append(
            Problem("error", f"only class {next(iter(patients_of))!r} has images; a classifier needs at least two")
        )
    single = [
        f"{label} ({next(iter(patients))})" for label, patients in sorted(patients_of.items()) if len(patients) == 1
    ]
    if single:
        problems.append(
            Problem(
                "warning",
                f"single-patient class(es), which a patient-level split cannot put on both sides: {', '.join(single)}",
            )
        )
    return problems


def summarise(
    records: Sequence[ImageRecord],
    skip_report: SkipReport | None = None,
    *,
    kind: str | None = None,
    root: str | Path | None = None,
) -> DatasetSummary:
    """Summarise ``records``; the files in ``skip_report`` become ``error`` problems.

    Reads each image's header for its size (a header that cannot be read is an error problem too).
    ``kind`` defaults to the records' common ``source``.
    """
    records = list(records)
    problems = [Problem("error", entry.reason, entry.path) for entry in (skip_report or [])]
    sizes: dict[Path, tuple[int, int]] = {}
    for record in records:
        try:
            sizes[record.path] = image_size(record.path)
        except ImageReadError as err:
            problems.append(Problem("error", err.reason, err.path))
    problems += _size_problems(sizes)
    problems += _label_problems(records)
    magnifications = sorted({r.magnification for r in records if r.magnification is not None})
    classes = [c for c in class_names(records) if any(r.label == c for r in records)]
    scales: dict[int | None, set[float]] = defaultdict(set)
    for record in records:
        scales[record.magnification].add(record.microns_per_pixel)
    sources = sorted({r.source for r in records})
    return DatasetSummary(
        kind=kind or (sources[0] if len(sources) == 1 else "mixed" if sources else "empty"),
        root=Path(root) if root is not None else None,
        images=len(records),
        patients=len({r.patient_id for r in records}),
        classes=classes,
        groups=_groups(records, classes, magnifications),
        magnifications=magnifications,
        sizes=dict(sorted(Counter(sizes.values()).items(), key=lambda item: (-item[1], item[0]))),
        microns_per_pixel={m: sorted(v) for m, v in sorted(scales.items(), key=lambda item: item[0] or 0)},
        problems=problems,
    )


def _fold_notes(root: Path, records: Sequence[ImageRecord]) -> tuple[list[str], list[Problem]]:
    """Check a BreaKHis tree's official fold files, when present beside it, against its images."""
    if not find_fold_files(root):
        return [], []
    try:
        folds = read_breakhis_folds(root)
    except DatasetError as err:
        return [], [Problem("error", f"fold files: {err}")]
    missing = unlisted_images(folds, records)
    unlisted = sorted({path for paths in missing.values() for path in paths})
    note = f"official fold files: {len(folds)} folds of {len(folds[0].subsets)} images; " + (
        f"{len(records) - len(unlisted)} of {len(records)} images here are listed in every fold"
        if unlisted
        else f"all {len(records)} images here are listed in every fold"
    )
    problems = [
        Problem("warning", f"{len(paths)} image(s) not in {fold} of the official fold files: {_quote(paths)}")
        for fold, paths in missing.items()
    ]
    return [note], problems


def inspect_dataset(
    root: str | Path, kind: str = "auto", *, decode: bool = True, **reader_options: Any
) -> DatasetSummary:
    """Read the dataset at ``root`` in skip mode, check every image, and summarise it.

    ``decode`` fully decodes each image (finds truncated files; slower) instead of reading headers
    only. Every file a reader or the check leaves out is an ``error`` problem of the summary; a tree
    that cannot be read at all (no such folder, no images, no scale) raises :class:`DatasetError`.
    ``reader_options`` go to the reader (e.g. ``microns_per_pixel``).
    """
    root = Path(root)
    kind = detect_kind(root) if kind == "auto" else kind
    skip = SkipReport()
    records = read_dataset(root, kind, skip=skip, **reader_options)
    records = check_images(records, skip, decode=decode)
    if not records:
        raise DatasetError(
            f"{root}: no usable {kind} images found" + (f" ({len(skip)} file(s) left out)" if skip else "")
        )
    summary = summarise(records, skip, kind=kind, root=root)
    if kind == "breakhis":
        summary.notes.append(
            "patients: subtype + slide id, as the official fold files count them "
            "(slide 14-13412 under DC and LC is two patients)"
        )
        notes, problems = _fold_notes(root, records)
        summary.notes += notes
        summary.problems += problems
    elif kind == "bach":
        block = reader_options.get("block_size", DEFAULT_BLOCK_SIZE)
        summary.notes.append(
            f"patients: pseudo-patients, blocks of {block} consecutive image numbers per class "
            "(BACH publishes no patient ids)"
        )
    return summary


def _scale_text(summary: DatasetSummary) -> str:
    parts = []
    for mag, values in summary.microns_per_pixel.items():
        shown = "/".join(f"{v:g}" for v in values)
        parts.append(f"{shown} ({mag}X)" if mag is not None else shown)
    return ", ".join(parts)


def _count(n: int, one: str, many: str) -> str:
    return f"{n} {one if n == 1 else many}"


def _shown_path(path: Path | None, root: Path | None) -> str:
    """``path`` relative to the dataset root when it lies below it (shorter tables), else as given."""
    if path is None:
        return ""
    if root is not None and path.is_relative_to(root):
        return path.relative_to(root).as_posix()
    return str(path)


def print_summary(summary: DatasetSummary, console: Console | None = None) -> None:
    """Print ``summary`` as rich tables: counts per class/subtype/magnification, sizes, problems."""
    console = console or Console(soft_wrap=True)
    kind_name = {"breakhis": "BreaKHis", "bach": "BACH", "folder": "folder"}.get(summary.kind, summary.kind)
    where = f" {summary.root}" if summary.root else ""
    subtypes = {g.subtype for g in summary.groups} - {None}
    console.print(
        f"[bold]{kind_name} dataset{where}[/]: {summary.images} images, {summary.patients} patients, "
        f"{_count(len(summary.classes), 'class', 'classes')}"
        + (f", {len(subtypes)} subtypes" if subtypes else "")
        + (f", {len(summary.magnifications)} magnifications" if summary.magnifications else ""),
        highlight=False,
    )

    table = Table(title="Images per class", title_justify="left", show_footer=True)
    table.add_column("class", footer="total")
    if subtypes:
        table.add_column("subtype")
    table.add_column("images", justify="right", footer=str(summary.images))
    table.add_column("patients", justify="right", footer=str(summary.patients))
    for mag in summary.magnifications:
        total = sum(g.per_magnification.get(mag, 0) for g in summary.groups)
        table.add_column(f"{mag}X", justify="right", footer=str(total))
    for group in summary.groups:
        row = [group.label] + ([group.subtype or ""] if subtypes else [])
        row += [str(group.images), str(group.patients)]
        row += [str(group.per_magnification.get(m, 0)) for m in summary.magnifications]
        table.add_row(*row)
    console.print(table)

    sizes = Table(title="Image sizes", title_justify="left")
    sizes.add_column("width x height")
    sizes.add_column("images", justify="right")
    for (width, height), count in summary.sizes.items():
        sizes.add_row(f"{width}x{height}", str(count))
    console.print(sizes)
    console.print(f"µm/pixel: {_scale_text(summary)}", highlight=False)
    for note in summary.notes:
        console.print(note, highlight=False)

    if not summary.problems:
        console.print("[green]No problems found.[/]")
        return
    where = f" (files relative to {summary.root})" if summary.root else ""
    problems = Table(
        title=f"Problems: {len(summary.errors)} error(s), {len(summary.warnings)} warning(s){where}",
        title_justify="left",
    )
    problems.add_column("severity")
    problems.add_column("file", overflow="fold")
    problems.add_column("problem", overflow="fold")
    for problem in summary.problems:
        colour = "red" if problem.severity == "error" else "yellow"
        problems.add_row(f"[{colour}]{problem.severity}[/]", _shown_path(problem.path, summary.root), problem.message)
    console.print(problems)
