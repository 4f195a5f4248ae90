"""``histobreast export`` and ``histobreast quantize``: model folders -> ONNX folders for the torch-free runtime."""

from __future__ import annotations

from pathlib import Path

import typer

from histobreast.errors import ConfigError


def export(
    model: Path = typer.Argument(..., help="Model folder (model.json) or ensemble folder (ensemble.json)."),
    format: str = typer.Option("onnx", "--format", help="Export format (onnx)."),
    out: Path = typer.Option(..., "--out", help="New folder to write: one .onnx per network + export.json."),
    tolerance: float = typer.Option(
        1e-4, "--tolerance", min=0.0, help="Largest |ONNX - PyTorch| probability accepted by the parity check."
    ),
) -> None:
    """Export every network of a model or ensemble to ONNX, checked for parity with PyTorch.

    Example: histobreast export runs/zhu_bach/fold1/model --format onnx --out exported/fold1
    """
    from histobreast.export.folder import export_onnx
    from histobreast.runtime.folder import read_exported

    if format != "onnx":
        raise ConfigError(f"--format: {format!r} is not supported; use onnx")
    written = export_onnx(model, out, tolerance)
    exported = read_exported(written)
    folders = [exported] if not hasattr(exported, "members") else list(exported.members.values())  # type: ignore[union-attr]
    for folder in folders:
        parity = folder.description["parity"]["max_abs_difference"]
        typer.echo(f"{folder.path}: " + ", ".join(f"{name} (max |diff| {diff:.1e})" for name, diff in parity.items()))
    typer.echo(f"exported -> {written}")


def quantize(
    exported: Path = typer.Argument(..., help="Exported folder (export.json) from `histobreast export`."),
    calibration: list[Path] = typer.Option(
        ..., "--calibration", help="Training images or folders to calibrate on (repeatable)."
    ),
    out: Path = typer.Option(..., "--out", help="New folder to write the INT8 (QDQ) networks into."),
    max_images: int = typer.Option(64, "--max-images", min=1, help="Calibration images used at most (spread evenly)."),
    fp32: list[str] = typer.Option(
        [], "--fp32", help="A network to leave in FP32 (repeatable), e.g. global: System A's one-per-image branch."
    ),
) -> None:
    """Static INT8 quantisation (QDQ, per-channel weights) with onnxruntime, calibrated on training images.

    Example: histobreast quantize exported/fold1 --calibration data/bach/train --out exported/fold1-int8
    """
    from histobreast.export.quantize import quantize_exported

    typer.echo(f"quantized -> {quantize_exported(exported, calibration, out, max_images, fp32)}")


def register(app: typer.Typer) -> None:
    """Add the ``export`` and ``quantize`` commands."""
    app.command("export")(export)
    app.command("quantize")(quantize)
