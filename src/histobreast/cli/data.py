"""``histobreast data``: synthesise dataset trees, inspect a dataset, write patient-level splits."""

from __future__ import annotations

from enum import Enum
from pathlib import Path

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from histobreast.cli.options import check_finite, check_scale, seed_option
from histobreast.errors import ConfigError, DatasetError

data_app = typer.Typer(
    help="Datasets: synthesise BreaKHis/BACH-shaped trees, inspect a dataset, write patient-level splits.",
    no_args_is_help=True,
)


class SynthKind(str, Enum):
    """Layouts the synthetic generator writes."""

    breakhis = "breakhis"
    bach = "bach"


class Kind(str, Enum):
    """Dataset layouts the readers understand."""

    auto = "auto"
    breakhis = "breakhis"
    bach = "bach"
    folder = "folder"


class Scheme(str, Enum):
    """Split schemes (see docs/data.md)."""

    official = "official"
    contiguous = "contiguous"
    patient = "patient"
    bagging = "bagging"


def _parse_size(text: str) -> tuple[int, int]:
    """``"700x460"`` -> ``(700, 460)``."""
    try:
        width, height = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise typer.BadParameter(f"expected WIDTHxHEIGHT such as 700x460, got {text!r}") from None
    if width < 1 or height < 1:
        raise typer.BadParameter(f"width and height must be positive, got {text!r}")
    return width, height


def _parse_ints(text: str, option: str) -> list[int]:
    try:
        return [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise ConfigError(f"{option}: expected comma-separated integers, got {text!r}") from None


def _reader_options(kind: str, mpp: float | None, block_size: int | None) -> dict[str, object]:
    options: dict[str, object] = {}
    if mpp is not None:
        options["microns_per_pixel"] = mpp
    if block_size is not None:
        if kind not in ("bach", "auto"):
            raise ConfigError("--block-size applies to BACH trees only")
        options["block_size"] = block_size
    return options


MPP_HELP = (
    "µm/pixel of the images (overrides histobreast.json and the reader's default; BreaKHis: one value "
    "for every magnification)."
)
BLOCK_HELP = "BACH pseudo-patient size: consecutive image numbers per group (default 10)."


@data_app.command("synth")
def synth(
    out: Path = typer.Argument(..., help="Folder to write the tree into (created if missing)."),
    kind: SynthKind = typer.Option(..., "--kind", help="Layout: breakhis (tree + mkfold/dsfold*.txt) or bach."),
    size: str | None = typer.Option(
        None,
        "--size",
        help="Image WIDTHxHEIGHT (default: BreaKHis 700x460, BACH 512x384). "
        "The field of view stays the dataset's, so smaller images mean more µm/pixel.",
    ),
    patients_per_subtype: int = typer.Option(2, "--patients-per-subtype", help="BreaKHis: patients per subtype."),
    images_per_magnification: int = typer.Option(
        3, "--images-per-magnification", help="BreaKHis: images per patient and magnification."
    ),
    magnifications: str = typer.Option("40,100,200,400", "--magnifications", help="BreaKHis magnifications."),
    from_folds: Path | None = typer.Option(
        None,
        "--from-folds",
        help="BreaKHis: official fold files (folder with "
        "dsfold*.txt or a Folds.csv): write every image they list (7,909, 82 "
        "patients) and copy the folds. Use a small --size.",
    ),
    folds: int = typer.Option(5, "--folds", help="BreaKHis without --from-folds: random 70/30 patient folds."),
    per_class: int = typer.Option(20, "--per-class", help="BACH: images per class."),
    image_format: str = typer.Option("tif", "--format", help="BACH: tif, tiff, png, jpg or jpeg."),
    seed: int = seed_option("Every pixel is a function of the seed and the file name."),
) -> None:
    """Write a synthetic H&E dataset in the real BreaKHis or BACH layout.

    Example: histobreast data synth data/synth-breakhis --kind breakhis --size 350x230
    """
    from histobreast.data.synthetic import synth_bach, synth_breakhis

    console = Console(soft_wrap=True)
    options: dict[str, object] = {"size": _parse_size(size)} if size else {}
    if kind is SynthKind.bach and from_folds is not None:
        raise ConfigError("--from-folds applies to --kind breakhis only")
    with Progress(
        TextColumn("synthesising"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=console,
        transient=True,
        disable=not console.is_terminal,
    ) as bar:
        task = bar.add_task("synth", total=None)
        options["progress"] = lambda done, total: bar.update(task, completed=done, total=total)
        if kind is SynthKind.breakhis:
            records = synth_breakhis(
                out,
                patients_per_subtype=patients_per_subtype,
                images_per_magnification=images_per_magnification,
                magnifications=_parse_ints(magnifications, "--magnifications"),
                from_folds=from_folds,
                folds=folds,
                seed=seed,
                **options,
            )
        else:
            records = synth_bach(out, per_class=per_class, image_format=image_format, seed=seed, **options)
    if kind is SynthKind.breakhis:
        mags = sorted({r.magnification for r in records})
        console.print(
            f"wrote {len(records)} synthetic BreaKHis images ({len({r.patient_id for r in records})} "
            f"patients, magnifications {', '.join(f'{m}X' for m in mags)}) and mkfold/ fold files "
            f"to {out}",
            highlight=False,
        )
    else:
        console.print(
            f"wrote {len(records)} synthetic BACH images ({per_class} per class, "
            f"{records[0].microns_per_pixel:g} µm/px) to {out}",
            highlight=False,
        )
    console.print(f"next: histobreast data inspect {out}", highlight=False)


@data_app.command("inspect")
def inspect(
    path: Path = typer.Argument(..., help="Dataset root (BreaKHis tree, BACH tree or class-per-folder tree)."),
    kind: Kind = typer.Option(Kind.auto, "--kind", help="Layout; auto detects BreaKHis and BACH trees."),
    skip_bad: bool = typer.Option(
        False, "--skip-bad", help="Files that cannot be used are listed but do not make the command fail."
    ),
    decode: bool = typer.Option(
        True, "--decode/--headers-only", help="Decode every image (finds truncated files) or read headers only (fast)."
    ),
    mpp: float | None = typer.Option(None, "--mpp", callback=check_scale, help=MPP_HELP),
    block_size: int | None = typer.Option(None, "--block-size", help=BLOCK_HELP),
    json_out: Path | None = typer.Option(None, "--json", help="Also write the summary as JSON to this file."),
) -> None:
    """Count images per class / subtype / magnification / patient, and list every problem found.

    Also shows image sizes and µm/pixel. Exits 1 if a file cannot be used (unless --skip-bad) or the
    tree cannot be read at all.

    Example: histobreast data inspect ../shared/data/breakhis
    """
    from histobreast.atomic import atomic_write_json
    from histobreast.data.inspect import inspect_dataset, print_summary

    summary = inspect_dataset(path, kind.value, decode=decode, **_reader_options(kind.value, mpp, block_size))
    print_summary(summary, Console(soft_wrap=True))
    if json_out is not None:
        atomic_write_json(json_out, summary.to_dict())
    if summary.errors and not skip_bad:
        raise DatasetError(
            f"{path}: {len(summary.errors)} file(s) cannot be used (listed above); fix them, "
            "or pass --skip-bad to leave them out"
        )


@data_app.command("split")
def split(
    path: Path = typer.Argument(..., help="Dataset root."),
    scheme: Scheme = typer.Option(
        ...,
        "--scheme",
        help="official: BreaKHis fold files; contiguous: k folds of "
        "contiguous image numbers (BACH); patient: one train/val/test split; bagging: "
        "k disjoint subsets, model j validates on subset j.",
    ),
    out: Path = typer.Option(..., "-o", "--out", help="Split file to write (CSV: split,image_id,patient_id,subset)."),
    k: int = typer.Option(5, "--k", help="Folds or bagging subsets."),
    kind: Kind = typer.Option(Kind.auto, "--kind", help="Layout; auto detects BreaKHis and BACH trees."),
    folds: Path | None = typer.Option(None, "--folds", help="official: fold files (default: PATH or PATH/mkfold)."),
    val_fraction: float = typer.Option(
        0.15, "--val", callback=check_finite, help="patient: fraction of images for validation."
    ),
    test_fraction: float = typer.Option(
        0.15, "--test", callback=check_finite, help="patient: fraction of images for test (0: none)."
    ),
    seed: int = seed_option("Seed of the patient and bagging schemes."),
    mpp: float | None = typer.Option(None, "--mpp", callback=check_scale, help=MPP_HELP),
    block_size: int | None = typer.Option(None, "--block-size", help=BLOCK_HELP),
) -> None:
    """Write patient-disjoint splits of a dataset to a CSV file.

    The file is written atomically; a split that would put one patient on two sides is refused,
    naming the patient.

    Example: histobreast data split ../shared/data/bach --scheme contiguous --k 5 --out splits.csv
    """
    from histobreast.data.readers import make_splits, read_dataset
    from histobreast.data.splits import write_splits_csv

    records = read_dataset(path, kind.value, **_reader_options(kind.value, mpp, block_size))
    fractions = {"train": 1.0 - val_fraction - test_fraction, "val": val_fraction, "test": test_fraction}
    splits = make_splits(
        records,
        scheme.value,
        k=k,
        seed=seed,
        fractions={s: f for s, f in fractions.items() if f > 0},
        folds_source=folds if folds is not None else path,
    )
    write_splits_csv(splits, out)
    table = Table(title=f"{scheme.value} splits of {len(records)} images -> {out}", title_justify="left")
    table.add_column("split")
    for column in ("subset", "images", "patients"):
        table.add_column(column, justify="right" if column != "subset" else "left")
    for item in splits:
        for subset, (images, patients) in item.counts().items():
            table.add_row(item.name, subset, str(images), str(patients))
    Console(soft_wrap=True).print(table)


def register(app: typer.Typer) -> None:
    """Add the ``data`` command group."""
    app.add_typer(data_app, name="data")
