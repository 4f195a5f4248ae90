"""``histobreast slide inspect|predict|sample``: whole-slide images (parsing and printing only)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Optional

import typer

from histobreast.cli.options import check_finite, check_scale, seed_option
from histobreast.errors import ConfigError

slide_app = typer.Typer(
    help="Whole-slide images: inspect, predict tile by tile, sample training crops.", no_args_is_help=True
)


@slide_app.command("inspect")
def inspect(
    slides: list[Path] = typer.Argument(..., help="Slide files (SVS, NDPI, TIFF, MRXS, DICOM, ...)."),
    mpp: Optional[float] = typer.Option(
        None, "--mpp", callback=check_scale, help="µm/px of slides whose file has no scale."
    ),
    masks: Optional[Path] = typer.Option(None, "--masks", help="Folder to write each slide's tissue mask PNG into."),
) -> None:
    """A table per slide (format, levels, sizes, µm/px, objective, associated images, tissue) and its problems."""
    from histobreast.slides.inspect import inspect_slide

    failed = 0
    for path in slides:
        report = inspect_slide(path, mpp, masks)
        typer.echo(report.text())
        failed += report.refused
    if failed:
        raise typer.Exit(1)


@slide_app.command("predict")
def predict(
    slides: list[Path] = typer.Argument(..., help="Slide files."),
    model: Path = typer.Option(
        ..., "--model", help="Model folder, ensemble folder, or exported folder (export.json: run by onnxruntime)."
    ),
    out: Path = typer.Option(..., "--out", help="Output folder: one sub-folder per slide."),
    tile_um: Optional[str] = typer.Option(
        None, "--tile-um", help="Tile field of view in µm, WIDTHxHEIGHT (default: the model's training images')."
    ),
    overlap: float = typer.Option(
        0.0, "--overlap", callback=check_finite, help="Share of a tile the next one overlaps, 0 to 0.9."
    ),
    min_tissue: float = typer.Option(
        0.5, "--min-tissue", callback=check_finite, help="Least tissue share of a kept tile."
    ),
    mpp: Optional[float] = typer.Option(
        None, "--mpp", callback=check_scale, help="µm/px of slides whose file has no scale."
    ),
    model_mpp: Optional[float] = typer.Option(
        None, "--model-mpp", callback=check_scale, help="The model's training scale, if model.json lacks it."
    ),
    batch_size: int = typer.Option(32, "--batch-size", help="Tiles per batch (the unit a killed run resumes at)."),
    workers: int = typer.Option(0, "--workers", help="Tile-reading processes (0: read in this one)."),
    shard: Optional[str] = typer.Option(
        None, "--shard", help="K/N: this job's share of the slides (default: torchrun's rank)."
    ),
    device: str = typer.Option("cpu", "--device", help="cpu, cuda or cuda:N (model folders; exports run on the CPU)."),
    threads: Optional[int] = typer.Option(
        None, "--threads", min=1, help="Exported folders: onnxruntime's intra-op threads (default: all cores)."
    ),
    review: Optional[Path] = typer.Option(
        None, "--review", help="Also write a case review here: a card per slide, least certain first."
    ),
    explain: int = typer.Option(
        0, "--explain", help="Class activation maps of each slide's N most suspicious tiles, in OUT/<slide>/explained."
    ),
    method: str = typer.Option("gradcam", "--method", help="Map method for --explain (as `histobreast explain`)."),
) -> None:
    """Apply a model to every tissue tile: tiles.csv, heatmaps, QuPath GeoJSON and a summary per slide."""
    from histobreast.pipelines.slide_predict import (
        SlidePredictOptions,
        check_options,
        describe_summary,
        parse_pair,
        parse_shard,
        predict_slides,
    )
    from histobreast.runtime.folder import is_exported_folder

    if explain < 0:
        raise ConfigError(f"--explain: the number of tiles to explain must be at least 0, got {explain}")
    exported = is_exported_folder(model)
    if explain and exported:
        raise ConfigError(f"--explain: {model} is an exported folder; the maps need the model folder (PyTorch)")
    if not exported:
        from histobreast.explain.cam import check_method  # PyTorch (grad-cam): not for an export's run

        check_method(method)
    logging.basicConfig(level=logging.WARNING)
    options = SlidePredictOptions(
        tile_um=parse_pair(tile_um, "--tile-um") if tile_um else None,
        overlap=overlap,
        min_tissue=min_tissue,
        mpp=mpp,
        batch_size=batch_size,
    )
    check_options(options)
    if exported:  # an ONNX export: the torch-free runtime applies it
        from histobreast.runtime.slides import load_exported_tile_model

        tile_model: Any = load_exported_tile_model(model, model_mpp, threads)
    else:
        from histobreast.pipelines.slide_model import load_tile_model

        tile_model = load_tile_model(model, device, model_mpp)
    summaries = predict_slides(
        slides,
        tile_model,
        out,
        options,
        shard=parse_shard(shard),
        workers=workers,
        say=typer.echo,
    )
    for summary in summaries:
        typer.echo(describe_summary(summary, out))
    if explain and summaries:
        from histobreast.explain.slides import explain_slide_tiles

        for summary in summaries:
            manifest = explain_slide_tiles(summary, out, tile_model, explain, method=method, device=device)
            if manifest is not None:
                typer.echo(
                    f"{Path(summary['slide']['path']).stem}: {method} maps of its top tiles -> {manifest.parent}"
                )
    if review is not None and summaries:
        from histobreast.pipelines.slide_review import write_slide_review

        written = write_slide_review(summaries, out, review, model)
        typer.echo(f"review: {written['html']}" if written else "review: no slide has a tissue tile")


@slide_app.command("sample")
def sample(
    slides: list[Path] = typer.Argument(
        ..., help="Slide files; each needs an annotation file beside it or in --annotations."
    ),
    out: Path = typer.Option(..., "--out", help="New folder dataset to write (class folders, patients.csv)."),
    annotations: Optional[Path] = typer.Option(
        None, "--annotations", help="Folder of <slide name>.xml|.geojson files (default: beside each slide)."
    ),
    crop: str = typer.Option("768x512", "--crop", help="Crop WIDTHxHEIGHT in level-0 pixels (paper A: 768x512)."),
    per_class: int = typer.Option(20, "--per-class", help="Crops per annotation class and slide."),
    normal: int = typer.Option(20, "--normal", help="Crops of unannotated tissue (class Normal) per slide."),
    out_mpp: Optional[float] = typer.Option(
        None, "--out-mpp", callback=check_scale, help="Resample crops to this µm/px."
    ),
    mpp: Optional[float] = typer.Option(
        None, "--mpp", callback=check_scale, help="µm/px of slides whose file has no scale."
    ),
    label_map: Optional[list[str]] = typer.Option(
        None,
        "--map",
        help="NAME=CLASS (repeatable); default paper A's: Normal, Benign -> non-carcinoma; In situ, Invasive -> carcinoma.",
    ),
    seed: int = seed_option("Seed of the crops' positions."),
) -> None:
    """Paper A's BACH WSI protocol: crops from annotated regions and unannotated tissue, as a dataset `train` reads."""
    from histobreast.pipelines.slide_predict import parse_pair
    from histobreast.pipelines.slide_sample import BACH_WSI_MAP, SampleOptions, sample_slides
    from histobreast.slides.annotations import ANNOTATION_SUFFIXES

    mapping = dict(BACH_WSI_MAP)
    if label_map:
        mapping = {}
        for item in label_map:
            name, sep, cls = item.partition("=")
            if not sep or not name.strip() or not cls.strip():
                raise ConfigError(f"--map: expected NAME=CLASS, got {item!r}")
            mapping[name.strip()] = cls.strip()
    pairs = []
    for slide in slides:
        folder = annotations or slide.parent
        found = [folder / f"{slide.stem}{s}" for s in ANNOTATION_SUFFIXES if (folder / f"{slide.stem}{s}").is_file()]
        if not found:
            raise ConfigError(f"{slide}: no annotation file {slide.stem}.xml/.geojson in {folder}")
        pairs.append((slide, found[0]))
    w, h = parse_pair(crop, "--crop")
    options = SampleOptions(
        crop_px=(int(w), int(h)), per_region_class=per_class, normal=normal, out_mpp=out_mpp, mpp=mpp, seed=seed
    )
    sample_slides(pairs, out, mapping, options, say=typer.echo)
    typer.echo(
        f"wrote {out} (train on it: histobreast train --config configs/zhu2019/bach_wsi_binary_cpu.yaml --data {out})"
    )


def register(app: typer.Typer) -> None:
    """Add the ``slide`` command group."""
    app.add_typer(slide_app, name="slide")
