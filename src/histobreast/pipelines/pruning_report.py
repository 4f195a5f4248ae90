"""Paper A's compression study: prune one trained model to several ratios and loop counts, measure.

:func:`run_sweep` trains (or takes) a base model on one fold of an experiment and prunes it with
:func:`~histobreast.pipelines.pruning.prune_model_folder` at every ``prune.report_ratios`` O in one
loop (Fig. 12, Table 7), at ``prune.report_loop_ratio`` with every ``prune.report_loops`` R (Fig. 10)
and, for each ``prune.report_dns_sensitivities`` c, with Dynamic Network Surgery alone and after
channel pruning at ``prune.ratio`` (Fig. 13). Every pruned network is retrained the same way,
O = 0 included, so each row differs from the O = 0 row only by the pruning. ``sweep.json`` lists
the model folders; :func:`compression_report` measures each one (parameters without the
training-only auxiliary heads, MACs of one image, weights file size, CPU latency of one image,
GPU throughput when CUDA is present, accuracy on the fold's test images) and writes tables, the
paper's plots and a report.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from histobreast.atomic import atomic_write_json
from histobreast.compress.profile import (
    checkpoint_size_bytes,
    count_macs,
    count_nonzero_parameters,
    count_parameters,
    measure_latency,
    measure_throughput,
)
from histobreast.compress.prune import per_loop_fraction
from histobreast.config import read_json, save_config
from histobreast.data.records import ImageRecord, read_records_csv, write_records_csv
from histobreast.errors import CheckpointError, ConfigError
from histobreast.metrics import evaluate_predictions
from histobreast.models.googlenet_sep import GoogLeNetSEP
from histobreast.models.hybrid import HybridCNN
from histobreast.pipelines.config import ExperimentConfig, PruneOptions
from histobreast.pipelines.encoder_provenance import checked_fold_config
from histobreast.pipelines.package import WEIGHTS_FILE, LoadedModel, load_model_folder
from histobreast.pipelines.pruning import SPARSE_WEIGHTS, prune_model_folder, prune_options
from histobreast.report.compression import (
    plot_accuracy_vs_remaining_weights,
    plot_loops_at_ratio,
    plot_pruning_ratio_curves,
)

log = logging.getLogger(__name__)

SWEEP_JSON = "sweep.json"
TEST_RECORDS = "test_records.csv"
GPU_BATCH = 64


@dataclass
class SweepEntry:
    """One pruned model of the study: which figure it belongs to and how it was made."""

    study: str  # "ratio" (Fig. 12 / Table 7), "loops" (Fig. 10) or "dns" (Fig. 13)
    ratio: float
    loops: int
    folder: str  # relative to the sweep folder
    dns_sensitivity: float | None = None


def sweep_entries(options: PruneOptions) -> list[SweepEntry]:
    """The models of the study, each pruned configuration once (R = 1 at the loop ratio is shared)."""
    entries = [SweepEntry("ratio", o, 1, f"ratio{o:g}") for o in options.report_ratios]
    for loops in options.report_loops:
        entries.append(
            SweepEntry("loops", options.report_loop_ratio, loops, f"ratio{options.report_loop_ratio:g}_loops{loops}")
        )
    for c in options.report_dns_sensitivities:
        entries.append(SweepEntry("dns", 0.0, 1, f"dns{c:g}", c))
        entries.append(SweepEntry("dns", options.ratio, 1, f"ratio{options.ratio:g}_dns{c:g}", c))
    return entries


def run_sweep(
    cfg: ExperimentConfig,
    out_dir: str | Path,
    train_records: Sequence[ImageRecord],
    val_records: Sequence[ImageRecord],
    test_records: Sequence[ImageRecord],
    classes: Sequence[str],
    *,
    base: str | Path | None = None,
    options: PruneOptions | None = None,
    resume: bool = False,
    description: str = "",
    fold: int | None = None,
) -> Path:
    """Train the base model of ``cfg``'s pipeline (unless ``base`` is given), prune it for every
    entry of :func:`sweep_entries` (``out_dir/<entry>``) and write ``sweep.json``. With ``resume``
    finished models are kept and interrupted ones continue. ``description`` (e.g. the fold and its
    image counts) heads the report. A base trained here refuses start weights pre-trained on a test
    image (``fold``: the protocol's fold of the records, for a ``{fold}`` weights path)."""
    from histobreast.pipelines import get_pipeline

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if base is None:
        cfg = checked_fold_config(cfg, fold, test_records, out_dir)
    options = options or prune_options(cfg)
    save_config(cfg, out_dir / "config.yaml")
    write_records_csv(test_records, out_dir / TEST_RECORDS)
    if base is None:
        base = get_pipeline(cfg.pipeline).train_fold(
            cfg, train_records, val_records, classes, out_dir / "base", resume=resume
        )
    entries = sweep_entries(options)
    for entry in entries:
        folder = out_dir / entry.folder
        if resume and (folder / "model.json").is_file():
            continue
        entry_options = dataclasses.replace(
            options,
            ratio=entry.ratio,
            loops=entry.loops,
            dns=entry.dns_sensitivity is not None,
            dns_sensitivity=entry.dns_sensitivity or 0.0,
        )
        log.info("compression study: %s", entry.folder)
        prune_model_folder(base, folder, train_records, val_records, options=entry_options, resume=resume)
    description = description or f"{len(train_records)} training, {len(test_records)} test images"
    base = Path(base).resolve()
    # inside the study (its own base/model) the path is relative, so the study folder can be moved
    stored_base = base.relative_to(out_dir.resolve()) if base.is_relative_to(out_dir.resolve()) else base
    atomic_write_json(
        out_dir / SWEEP_JSON,
        {
            "base": str(stored_base),
            "classes": list(classes),
            "description": description,
            "entries": [dataclasses.asdict(e) for e in entries],
        },
    )
    return out_dir


def example_inputs(loaded: LoadedModel, batch: int = 1) -> tuple[torch.Tensor, ...]:
    """Random inputs of ``batch`` images in the model's own input format (hybrid: global + patches)."""
    pre = loaded.cfg.preprocess
    image = torch.randn(batch, 3, pre.input_size, pre.input_size)
    if isinstance(loaded.model, HybridCNN):
        columns, rows = pre.patches.grid
        return image, torch.randn(batch, columns * rows, 3, pre.patches.size, pre.patches.size)
    return (image,)


def _training_only(model: nn.Module) -> list[str]:
    # GoogLeNet's auxiliary heads are dropped at inference (paper A counts the deployed network).
    prefixes = []
    for name, module in model.named_modules():
        if isinstance(module, GoogLeNetSEP):
            prefixes += [f"{name}.{head}" if name else head for head in ("aux1", "aux2")]
    return prefixes


def model_costs(loaded: LoadedModel, *, latency_repeats: int = 5) -> dict[str, Any]:
    """Parameters, non-zero parameters, MACs and CPU latency of one image, weights file size
    (the compact sparse file when DNS wrote one) and, with CUDA, bf16 throughput at batch 64."""
    model = loaded.model.cpu().eval()
    exclude = _training_only(model)
    inputs = example_inputs(loaded)
    sparse = loaded.path / SPARSE_WEIGHTS
    costs: dict[str, Any] = {
        "params": count_parameters(model, exclude=exclude),
        "nonzero_params": count_nonzero_parameters(model, exclude=exclude),
        "macs": count_macs(model, inputs),
        "size_bytes": checkpoint_size_bytes(sparse if sparse.is_file() else loaded.path / WEIGHTS_FILE),
        "latency_ms": measure_latency(model, inputs, repeats=latency_repeats, warmup=1),
    }
    if torch.cuda.is_available():
        gpu = model.cuda()
        with torch.autocast("cuda", dtype=torch.bfloat16):
            costs["throughput"] = measure_throughput(gpu, tuple(t.cuda() for t in example_inputs(loaded, GPU_BATCH)))
        model.cpu()
    return costs


def image_accuracy(loaded: LoadedModel, records: Sequence[ImageRecord]) -> float:
    """Image-level accuracy of the model's headline method on ``records``."""
    from histobreast.pipelines import get_pipeline

    predictions = next(iter(get_pipeline(loaded.pipeline).predict_records(loaded, records, device="cpu").values()))
    return evaluate_predictions(predictions)["metrics"]["image_level_accuracy"]


def read_sweep(sweep_dir: str | Path) -> tuple[dict[str, Any], list[SweepEntry]]:
    """``sweep.json`` of a study folder and its entries."""
    path = Path(sweep_dir) / SWEEP_JSON
    if not path.is_file():
        raise ConfigError(
            f"{sweep_dir}: not a compression study folder (no {SWEEP_JSON}; run `histobreast prune report --config`)"
        )
    info = read_json(path, "compression study", error=CheckpointError)
    try:
        return info, [SweepEntry(**entry) for entry in info["entries"]]
    except (KeyError, TypeError) as err:
        raise CheckpointError(f"{path}: malformed compression study file ({err})") from err


def measure_sweep(
    sweep_dir: str | Path, test_records: Sequence[ImageRecord] | None = None, latency_repeats: int = 5
) -> list[dict[str, Any]]:
    """One row per study model (and the unpruned, un-retrained base as ``study: "base"``)."""
    sweep_dir = Path(sweep_dir)
    info, entries = read_sweep(sweep_dir)
    records = list(test_records) if test_records is not None else read_records_csv(sweep_dir / TEST_RECORDS)
    base_folder = sweep_dir / info["base"]  # relative to the study, or absolute (a --base outside it)
    base = load_model_folder(base_folder)
    base_params = count_parameters(base.model, exclude=_training_only(base.model))
    rows = []
    for entry, folder in [(SweepEntry("base", 0.0, 0, info["base"]), base_folder)] + [
        (e, sweep_dir / e.folder) for e in entries
    ]:
        loaded = load_model_folder(folder)
        row = {
            **dataclasses.asdict(entry),
            **model_costs(loaded, latency_repeats=latency_repeats),
            "accuracy": image_accuracy(loaded, records) if records else float("nan"),
        }
        row["remaining_weights"] = row["nonzero_params"] / base_params
        rows.append(row)
        log.info("measured %s: %s", entry.folder, {k: row[k] for k in ("params", "macs", "latency_ms", "accuracy")})
    return rows


def _table_row(row: dict[str, Any]) -> dict[str, Any]:
    keys = ("ratio", "loops", "params", "macs", "size_bytes", "latency_ms", "throughput", "accuracy")
    return {k: row[k] for k in keys if k in row}


def compression_report(
    sweep_dir: str | Path,
    out_dir: str | Path | None = None,
    test_records: Sequence[ImageRecord] | None = None,
    latency_repeats: int = 5,
) -> dict[str, Any]:
    """Measure a study folder and write ``report/`` (report.md/html, metrics.json, Figs. 10, 12, 13)."""
    from histobreast.report import Report, RunInfo, compression_table

    sweep_dir = Path(sweep_dir)
    out_dir = Path(out_dir) if out_dir is not None else sweep_dir / "report"
    info, _ = read_sweep(sweep_dir)
    rows = measure_sweep(sweep_dir, test_records, latency_repeats)
    by_study = {study: [r for r in rows if r["study"] == study] for study in ("base", "ratio", "loops", "dns")}
    report = Report(
        out_dir,
        "Channel pruning and DNS (paper A, Table 7 and Figs. 10-13)",
        RunInfo(
            info.get("description", "the study's test images"),
            "see sweep.json",
            f"base {info['base']}",
            str(sweep_dir / "config.yaml"),
        ),
    )
    report.add_text(
        "Every pruned network was retrained with the same schedule (O = 0 too); the row with R = 0 is "
        "the base model before pruning and retraining. Latency: one image on the CPU (hybrid: global image + "
        "its grid patches), median of timed passes."
    )
    ratio_rows = sorted(by_study["ratio"], key=lambda r: r["ratio"])
    if ratio_rows:
        report.add_table(
            compression_table(
                [_table_row(r) for r in by_study["base"] + ratio_rows],
                "Cost and accuracy against the pruning ratio O (Table 7, Fig. 12)",
            )
        )
        report.add_figure(
            plot_pruning_ratio_curves(
                [r["ratio"] for r in ratio_rows],
                [r["accuracy"] for r in ratio_rows],
                [r["macs"] for r in ratio_rows],
                [r["params"] for r in ratio_rows],
                report.figure_path("fig12_pruning_ratio.png"),
            ),
            "Fig. 12: accuracy, MACs and parameters against the pruning ratio O.",
        )
    loop_rows = sorted(by_study["loops"], key=lambda r: r["loops"])
    if loop_rows:
        target = loop_rows[0]["ratio"]
        report.add_table(
            compression_table([_table_row(r) for r in loop_rows], f"Loops R at target ratio O = {target:g} (Fig. 10)")
        )
        report.add_figure(
            plot_loops_at_ratio(
                [r["loops"] for r in loop_rows],
                [r["accuracy"] for r in loop_rows],
                [per_loop_fraction(target, r["loops"]) for r in loop_rows],
                report.figure_path("fig10_loops.png"),
                target,
            ),
            f"Fig. 10: accuracy and per-loop fraction X against R at O = {target:g}.",
        )
    if by_study["dns"]:
        series: dict[str, tuple[list[float], list[float]]] = {}
        for row in by_study["dns"]:
            name = "DNS alone" if row["ratio"] == 0 else f"channel pruning O = {row['ratio']:g} + DNS"
            series.setdefault(name, ([], []))
            series[name][0].append(row["remaining_weights"])
            series[name][1].append(row["accuracy"])
        report.add_figure(
            plot_accuracy_vs_remaining_weights(series, report.figure_path("fig13_dns.png")),
            "Fig. 13: accuracy against the fraction of weights left (DNS alone and after channel pruning).",
        )
    report.add_metrics("rows", rows)
    report.write()
    return {"rows": rows, "report": str(out_dir)}
