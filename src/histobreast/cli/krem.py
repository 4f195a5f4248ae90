"""``histobreast krem``: draw KREM's nuclei and nested key windows over an image, to check them by eye."""

from __future__ import annotations

from enum import Enum
from pathlib import Path

import numpy as np
import typer
from PIL import Image
from rich.console import Console
from rich.table import Table

from histobreast.atomic import atomic_path
from histobreast.cli.options import check_scale
from histobreast.data.imageio import read_rgb
from histobreast.data.readers import dataset_record
from histobreast.errors import ConfigError
from histobreast.outputs import refuse_output_over_inputs
from histobreast.preprocess.krem import KremParams, crop_key_region, detect_nuclei, draw_overlay, regions_from_centroids
from histobreast.preprocess.views import SIX_VIEWS, apply_view


class Threshold(str, Enum):
    """KREM grey-level thresholds."""

    two_pass_mean = "two_pass_mean"
    mean = "mean"


class Perimeter(str, Enum):
    """KREM perimeter definitions."""

    two_sided = "two_sided"
    inner = "inner"


def _image_format(path: Path) -> str:
    """The Pillow format that ``path``'s suffix names (.png, .jpg, .tif, ...)."""
    image_format = Image.registered_extensions().get(path.suffix.lower())
    if image_format is None:
        raise ConfigError(f"{path}: unknown image suffix {path.suffix!r}; name the file .png, .jpg or .tif")
    return image_format


def _save_image(path: Path, image: np.ndarray) -> None:
    """Write ``image`` in the format its suffix names, atomically."""
    with atomic_path(path) as tmp:
        Image.fromarray(image).save(tmp, format=_image_format(path))


def krem(
    image_path: Path = typer.Argument(..., metavar="IMAGE", help="H&E image (tif, png, jpg, ...)."),
    mpp: float | None = typer.Option(
        None,
        "--mpp",
        callback=check_scale,
        help="Microns per pixel of IMAGE (BACH originals 0.42, the 1024x768 copies 0.84); KREM's sizes scale "
        "with it. Default: the scale the reader of IMAGE's dataset tree gives it.",
    ),
    data: Path | None = typer.Option(
        None,
        "--data",
        help="Dataset IMAGE belongs to, whose reader gives its scale (default: the BACH, BreaKHis or "
        "histobreast.json tree found above IMAGE).",
    ),
    out: Path = typer.Option(
        ..., "--out", "-o", help="Overlay image to write; its suffix names the format (.png, .jpg, .tif)."
    ),
    top_k: int = typer.Option(1, "--top-k", min=1, help="Level-1 windows to keep (training uses 12)."),
    view: str = typer.Option("raw", "--view", help=f"View to search: {', '.join(SIX_VIEWS)}."),
    threshold: Threshold = typer.Option(
        Threshold.two_pass_mean, "--threshold", help="two_pass_mean (default) or mean (the paper's literal rule)."
    ),
    perimeter: Perimeter = typer.Option(
        Perimeter.two_sided, "--perimeter", help="two_sided (default) or inner boundary-pixel count."
    ),
    crops: Path | None = typer.Option(
        None, "--crops", help="Also write the densest region's crops (resized to 224) as PNGs into this folder."
    ),
) -> None:
    """Detect nuclei in IMAGE and draw them (green) with the nested key windows (blue, orange, yellow).

    Further top-k level-1 windows are drawn thin. A table lists every window and its nuclei count.
    """
    _image_format(out)  # an unusable --out fails before the work
    refuse_output_over_inputs(out, [image_path], "--out", folder=False)
    params = KremParams(threshold=threshold.value, perimeter=perimeter.value)
    console = Console(soft_wrap=True)
    if mpp is None:
        record, root = dataset_record(image_path, data)
        mpp = record.microns_per_pixel
        console.print(f"scale: {mpp:g} µm/px, from the {record.source} reader of {root}", highlight=False)
    elif data is not None:
        raise ConfigError("give --mpp or --data, not both: --data only supplies IMAGE's scale")
    image = apply_view(read_rgb(image_path), view)
    nuclei = detect_nuclei(image, mpp, params)
    regions = regions_from_centroids(nuclei.centroids, (image.shape[1], image.shape[0]), mpp, params, top_k)
    _save_image(out, draw_overlay(image, nuclei, regions))
    table = Table(title=f"{image_path.name} ({view}): {len(nuclei)} nuclei at {mpp} µm/px")
    for column in ("region", "level", "x", "y", "w", "h", "nuclei"):
        table.add_column(column, justify="right")
    for r, region in enumerate(regions, start=1):
        for level, (box, count) in enumerate(zip(region.boxes, region.counts), start=1):
            table.add_row(str(r), str(level), *map(str, box), str(count))
    console.print(table)
    if crops is not None and regions:
        for level, crop in enumerate(crop_key_region(image, regions[0], params.output_size), start=1):
            _save_image(crops / f"{image_path.stem}_{view}_level{level}.png", crop)
        console.print(f"wrote {len(regions[0].boxes)} crops to {crops}")
    console.print(f"wrote {out}")


def register(app: typer.Typer) -> None:
    """Add the ``krem`` command."""
    app.command("krem")(krem)
