"""``histobreast stain``: fit a stain-normalisation target on a reference image, apply it to images."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Optional

import typer
from PIL import Image
from rich.console import Console
from rich.progress import track

from histobreast.atomic import atomic_path
from histobreast.data.imageio import is_image_file, list_images, read_rgb
from histobreast.errors import ConfigError
from histobreast.preprocess.stain import ReinhardNormalizer, StainError, create_normalizer, load_normalizer

stain_app = typer.Typer(
    help="Stain normalisation of H&E images (Reinhard colour transfer, Macenko): fit a target, apply it.",
    no_args_is_help=True,
)


class Method(str, Enum):
    """Stain normalisation methods."""

    reinhard = "reinhard"
    macenko = "macenko"


class Pixels(str, Enum):
    """Pixels Reinhard's LAB statistics are taken over."""

    tissue = "tissue"
    all = "all"


@stain_app.command("fit")
def fit(
    reference: Path = typer.Argument(..., help="Reference H&E image whose colours become the target."),
    out: Path = typer.Option(..., "--out", "-o", "--output", help="Target JSON file to write."),
    method: Method = typer.Option(
        Method.reinhard, "--method", help="reinhard: LAB mean/std (System A); macenko: H&E stain vectors."
    ),
    pixels: Pixels = typer.Option(
        Pixels.tissue,
        "--pixels",
        help="reinhard: LAB statistics over tissue pixels (default) or all pixels (as torchstain and "
        "TIAToolbox); stored in the target, so `stain apply` measures each image the same way.",
    ),
) -> None:
    """Fit a stain target on REFERENCE and write it as JSON (for `histobreast stain apply`)."""
    normalizer = create_normalizer(method.value, pixels.value)
    try:
        normalizer.fit(read_rgb(reference))
    except StainError as err:
        raise StainError(f"{reference}: {err}") from None
    normalizer.save(out)
    over = f" ({pixels.value} pixels)" if method is Method.reinhard else ""
    Console(soft_wrap=True).print(f"wrote {method.value}{over} target fitted on {reference} to {out}")


def _collect(inputs: list[Path], out: Path) -> list[tuple[Path, Path]]:
    """(source, destination) pairs: a file goes to out/<stem>.png, a folder's images keep their relative paths."""
    pairs: list[tuple[Path, Path]] = []
    for item in inputs:
        if item.is_dir():
            found = list_images(item)
            if not found:
                raise ConfigError(f"{item}: folder holds no images")
            pairs += [(p, out / p.relative_to(item).with_suffix(".png")) for p in found]
        elif item.is_file() and is_image_file(item):
            pairs.append((item, out / f"{item.stem}.png"))
        else:
            raise ConfigError(f"{item}: not an image file or folder")
    targets: dict[Path, Path] = {}
    for source, dest in pairs:
        if dest.resolve() == source.resolve():
            raise ConfigError(f"{source}: output would overwrite the input; choose another --out")
        if targets.setdefault(dest, source) != source:
            raise ConfigError(f"{source} and {targets[dest]} would both be written to {dest}")
    return [(source, dest) for dest, source in targets.items()]  # an image given twice is normalised once


@stain_app.command("apply")
def apply(
    target: Path = typer.Argument(..., help="Target JSON written by `histobreast stain fit`."),
    inputs: list[Path] = typer.Argument(..., help="Images and/or folders (searched recursively)."),
    out: Path = typer.Option(..., "--out", "-o", help="Output folder; images are written as PNG."),
    pixels: Optional[Pixels] = typer.Option(
        None,
        "--pixels",
        help="reinhard: check that TARGET was fitted over these pixels (tissue or all); "
        "the target's own setting is used either way, since mixing the two would shift colours.",
    ),
) -> None:
    """Normalise images to TARGET; images with too little tissue are copied unchanged and listed."""
    normalizer = load_normalizer(target)
    fitted_over = normalizer.pixels if isinstance(normalizer, ReinhardNormalizer) else None
    if pixels is not None and fitted_over != pixels.value:
        how = f"fitted on {fitted_over} pixels" if fitted_over else f"a {normalizer.method} target"
        raise ConfigError(f"{target}: --pixels {pixels.value}, but the target is {how}; refit with `stain fit`")
    pairs = _collect(inputs, out)
    unchanged: list[tuple[Path, str]] = []
    for source, dest in track(pairs, description="normalising", transient=True):
        result = normalizer.normalize(read_rgb(source))
        if result.fell_back:
            unchanged.append((source, result.fallback_reason or ""))
        with atomic_path(dest) as tmp:
            Image.fromarray(result.image).save(tmp, format="PNG")
    done = len(pairs) - len(unchanged)
    over = f" ({fitted_over} pixels)" if fitted_over else ""
    Console(soft_wrap=True).print(f"{done} of {len(pairs)} images normalised to {target}{over} -> {out}")
    warn = Console(stderr=True, soft_wrap=True)
    for source, reason in unchanged:
        warn.print(f"[yellow]written unchanged:[/] {source}: {reason}", highlight=False)


def register(app: typer.Typer) -> None:
    """Add the ``stain`` command group."""
    app.add_typer(stain_app, name="stain")
