"""Cost and accuracy of SEP channel pruning: O = 0.5 against O = 0.

Two sections of BENCHMARKS.md:

- ``compress``: parameters, MACs, checkpoint size and CPU latency (and GPU throughput when CUDA is
  present) of the untrained full-size network: the backbone alone (one 224 px image) and the hybrid
  model on one image (global 224 px + 15 patches of 224 px, paper A's inference unit). Which
  channels go does not change the costs, so importances from one random batch are enough.
- ``compression``: the whole workflow side by side on synthetic data: a full-width hybrid trained
  by the zhu2019 pipeline (small CPU schedule) on a synthetic BreaKHis 40X tree, then pruned to
  O = 0.5 and, as the like-for-like reference, to O = 0 (both retrained with the same schedule),
  and tested on the fold's test images: MACs, parameters, CPU latency ratio (target >= 1.6x) and
  accuracy change (target within 1 point).

The deployable network is measured (no auxiliary heads). Latencies of the ratios are measured in
alternating rounds (median of the rounds' medians), so that load from other processes on a shared
machine hits both alike; torch uses one thread (the machine is shared).

    python -m benchmarks.bench_compress [--ratios 0 0.5] [--rounds 5] [--repeats 5] [--skip-costs] [--skip-training]

Writes the ``compress`` and ``compression`` sections of BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from benchmarks.common import benchmark_parser, machine_info, today, write_section
from histobreast.compress.importance import compute_channel_importance
from histobreast.compress.profile import (
    checkpoint_size_bytes,
    count_macs,
    count_parameters,
    measure_latency,
    measure_throughput,
)
from histobreast.compress.prune import per_loop_fraction, prune_channels
from histobreast.models.googlenet_sep import GoogLeNetSEP
from histobreast.models.hybrid import HybridCNN
from histobreast.models.weights import save_weights

SIZE = 224
PATCHES = 15  # the 5x3 grid of paper A's local branch
DEMO_CONFIG = Path(__file__).resolve().parents[1] / "configs" / "demo" / "zhu2019_synthetic.yaml"


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = benchmark_parser(__doc__)
    parser.add_argument(
        "--ratios", type=float, nargs="+", default=[0.0, 0.5], help="pruning ratios O (first = baseline)"
    )
    parser.add_argument("--rounds", type=int, default=5, help="alternating timing rounds")
    parser.add_argument("--repeats", type=int, default=5, help="timed passes per round")
    parser.add_argument(
        "--internal",
        action="store_true",
        help="also measure each non-zero O with the internal convs pruned (`prune.internal`)",
    )
    parser.add_argument("--skip-costs", action="store_true", help="leave out the untrained 224 px cost table")
    parser.add_argument("--skip-training", action="store_true", help="leave out the trained synthetic comparison")
    parser.add_argument("--input-size", type=int, default=112, help="trained comparison: global input and patch size")
    parser.add_argument(
        "--iterations", type=int, default=60, help="trained comparison: steps per branch (base and retraining)"
    )
    parser.add_argument("--images", type=int, default=6, help="trained comparison: synthetic images per patient")
    parser.add_argument("--work", type=Path, default=None, help="keep the synthetic tree and models here")
    parser.add_argument(
        "--bach-study",
        type=Path,
        nargs="*",
        default=[],
        help="measured `prune report` study folders on real BACH (one per fold) for `compression_bach`",
    )
    parser.add_argument(
        "--bach-ensemble",
        type=Path,
        nargs="*",
        default=[],
        help="`ensemble evaluate` output folders on the same BACH folds for `compression_bach`",
    )
    return parser.parse_args(argv)


def alternating_latency(
    models: Mapping[Any, nn.Module], inputs: Sequence[torch.Tensor], rounds: int, repeats: int
) -> dict[Any, float]:
    """Median over ``rounds`` of each model's median latency (ms), the models timed in turn each round."""
    times: dict[Any, list[float]] = {key: [] for key in models}
    for _ in range(rounds):
        for key, model in models.items():
            times[key].append(measure_latency(model, tuple(inputs), repeats, warmup=1))
    return {key: statistics.median(values) for key, values in times.items()}


def variants(args: argparse.Namespace) -> list[tuple[str, float, bool]]:
    """``(label, O, internal)`` of every network compared: each ratio, then (``--internal``) each
    non-zero ratio with the internal convs pruned too."""
    plain = [(f"{ratio:g}", ratio, False) for ratio in args.ratios]
    return plain + [(f"{ratio:g} + internal", ratio, True) for ratio in args.ratios if args.internal and ratio > 0]


def cost_section(args: argparse.Namespace) -> str:
    """The ``compress`` section: costs of the untrained full-size network against O."""
    torch.manual_seed(0)
    base = GoogLeNetSEP(num_classes=2, aux_logits=False).eval()
    importance = compute_channel_importance(base, [torch.randn(4, 3, SIZE, SIZE)])
    backbones = {
        label: prune_channels(base, importance, per_loop_fraction(ratio, 1), internal=internal).eval()
        for label, ratio, internal in variants(args)
    }
    image = torch.randn(1, 3, SIZE, SIZE)
    patches = torch.randn(1, PATCHES, 3, SIZE, SIZE)
    hybrids = {ratio: HybridCNN(model, model).eval() for ratio, model in backbones.items()}

    rows = {}
    with tempfile.TemporaryDirectory() as folder:
        for ratio, model in backbones.items():
            path = save_weights(model, Path(folder) / f"o{ratio}.safetensors")
            rows[ratio] = {
                "params": count_parameters(model),
                "macs": count_macs(model, image),
                "hybrid_macs": count_macs(hybrids[ratio], (image, patches)),
                "size": checkpoint_size_bytes(path),
            }
    backbone_ms = alternating_latency(backbones, [image], args.rounds, args.repeats)
    hybrid_ms = alternating_latency(hybrids, [image, patches], args.rounds, args.repeats)

    gpu = {}
    if torch.cuda.is_available():
        batch = torch.randn(256, 3, SIZE, SIZE, device="cuda").to(memory_format=torch.channels_last)
        for ratio, model in backbones.items():
            gpu_model = model.cuda().to(memory_format=torch.channels_last)
            with torch.autocast("cuda", dtype=torch.bfloat16):
                gpu[ratio] = measure_throughput(gpu_model, batch, repeats=20, warmup=5)

    baseline = f"{args.ratios[0]:g}"
    lines = [
        "## SEP channel pruning: cost against the pruning ratio O",
        "",
        f"`python -m benchmarks.bench_compress` on {today()}: {machine_info()}.",
        f"Untrained GoogLeNetSEP without auxiliary heads, {SIZE} px input, one loop (R = 1); CPU latency = "
        f"median over {args.rounds} alternating rounds of the median of {args.repeats} passes, batch 1; "
        f"hybrid = global image + {PATCHES} patches through the same-size branches.",
        "",
        "| O | parameters | GMACs (backbone) | GMACs (hybrid image) | weights file | CPU ms (backbone) "
        "| CPU ms (hybrid image) | CPU speed-up (hybrid)" + (" | GPU img/s (bf16, batch 256)" if gpu else "") + " |",
        "|---|---|---|---|---|---|---|---" + ("|---" if gpu else "") + "|",
    ]
    for ratio in backbones:
        row = rows[ratio]
        cells = [
            ratio,
            f"{row['params'] / 1e6:.2f} M",
            f"{row['macs'] / 1e9:.3f}",
            f"{row['hybrid_macs'] / 1e9:.2f}",
            f"{row['size'] / 2**20:.1f} MiB",
            f"{backbone_ms[ratio]:.1f}",
            f"{hybrid_ms[ratio]:.0f}",
            f"{hybrid_ms[baseline] / hybrid_ms[ratio]:.2f}x",
        ] + ([f"{gpu[ratio]:.0f}"] if gpu else [])
        lines.append("| " + " | ".join(cells) + " |")
    lines += [
        "",
        "`+ internal`: the stem's conv2_reduce/conv2 and every Inception reduce conv lose the same fraction "
        "(ranked by |BatchNorm gamma|; `prune.internal`, beyond the paper)."
        if args.internal
        else "",
        "The trained comparison on synthetic data (accuracy included) is the `compression` section.",
    ]
    return "\n".join(lines)


def training_section(args: argparse.Namespace, work: Path) -> str:
    """The ``compression`` section: train, prune to O = 0.5 and O = 0 (both retrained), test, time."""
    from histobreast.data.protocol import read_fold
    from histobreast.data.synthetic import synth_breakhis
    from histobreast.pipelines.config import PruneOptions, load_config
    from histobreast.pipelines.package import load_model_folder
    from histobreast.pipelines.pruning_report import example_inputs, measure_sweep, run_sweep

    root = work / "synthetic_breakhis"
    if not root.is_dir():
        synth_breakhis(
            root, patients_per_subtype=3, images_per_magnification=args.images, magnifications=(40,), size=(350, 230)
        )
    size = args.input_size
    cfg = load_config(
        DEMO_CONFIG,
        [
            "name=compression_bench",
            f"data.root={root}",
            "model.kwargs={fusion_weight: 0.6}",  # GoogLeNet's full widths (the demo uses a quarter)
            f"preprocess.input_size={size}",
            f"preprocess.patches={{grid: [5, 3], size: {size}, per_image: 4}}",
            f"train.iterations={args.iterations}",
        ],
    )
    fold, classes = read_fold(cfg.data, cfg.seed, 1)
    train, test = fold.training, fold.test
    options = PruneOptions(report_ratios=list(args.ratios), report_loops=[], retrain_iterations=args.iterations)
    study = run_sweep(cfg, work / "study", train, [], test, classes, options=options, resume=True)
    measured = measure_sweep(study, latency_repeats=1)
    rows = {f"{row['ratio']:g}": row for row in measured if row["study"] == "ratio"}
    base_row = next(row for row in measured if row["study"] == "base")
    folders = {f"{ratio:g}": study / f"ratio{ratio:g}" for ratio in args.ratios}
    internal_ratios = [ratio for _, ratio, internal in variants(args) if internal]
    if internal_ratios:  # the same trained base, pruned deeper
        deeper = run_sweep(
            cfg,
            work / "study_internal",
            train,
            [],
            test,
            classes,
            base=study / "base" / "model",
            options=dataclasses.replace(options, report_ratios=internal_ratios, internal=True),
            resume=True,
        )
        for row in measure_sweep(deeper, latency_repeats=1):
            if row["study"] == "ratio":
                rows[f"{row['ratio']:g} + internal"] = row
                folders[f"{row['ratio']:g} + internal"] = deeper / f"ratio{row['ratio']:g}"
    loaded = {label: load_model_folder(folder) for label, folder in folders.items()}
    base = f"{args.ratios[0]:g}"
    inputs = example_inputs(loaded[base])
    latency = alternating_latency({r: m.model for r, m in loaded.items()}, inputs, args.rounds, args.repeats)
    lines = [
        "## SEP channel pruning on synthetic data: O = 0.5 against O = 0, trained",
        "",
        f"`python -m benchmarks.bench_compress` on {today()}: {machine_info()}.",
        f"Synthetic BreaKHis 40X tree ({len(fold.training) + len(fold.test)} images at 350x230, {len(train)} training / {len(test)} test "
        f"images of fold 1), full-width hybrid GoogLeNet-SEP at {size} px (global image + 5x3 patches of {size} px), "
        f"trained from scratch by the zhu2019 pipeline for {args.iterations} iterations of batch 8 per branch "
        f"(configs/demo/zhu2019_synthetic.yaml otherwise). Each O is pruned from that model in one loop and both "
        f"branches retrained for {args.iterations} iterations (O = 0: retrained without pruning, the like-for-like "
        f"reference). CPU latency: one image (global + 15 patches), median of {args.rounds} alternating rounds of "
        f"{args.repeats} passes; GMACs of one image; parameters without the auxiliary heads.",
        "",
        "| model | parameters | GMACs / image | weights file (aux heads incl.) | CPU ms / image | speed-up vs O = 0 "
        "| test accuracy | change vs O = 0 (points) |",
        "|---|---|---|---|---|---|---|---|",
        f"| trained base (before retraining) | {base_row['params'] / 1e6:.2f} M | {base_row['macs'] / 1e9:.2f} "
        f"| {base_row['size_bytes'] / 2**20:.1f} MiB | | | {base_row['accuracy']:.3f} | |",
    ]
    for label, row in rows.items():
        change = 100 * (row["accuracy"] - rows[base]["accuracy"])
        lines.append(
            f"| O = {label} | {row['params'] / 1e6:.2f} M | {row['macs'] / 1e9:.2f} "
            f"| {row['size_bytes'] / 2**20:.1f} MiB | {latency[label]:.0f} | {latency[base] / latency[label]:.2f}x "
            f"| {row['accuracy']:.3f} | {change:+.1f} |"
        )
    lines.append("")
    for label in list(rows)[1:]:
        speedup = latency[base] / latency[label]
        change = 100 * (rows[label]["accuracy"] - rows[base]["accuracy"])
        lines.append(
            f"Targets at O = {label}: CPU speed-up >= 1.6x: {'met' if speedup >= 1.6 else 'NOT met'} "
            f"({speedup:.2f}x; MACs fall {rows[base]['macs'] / rows[label]['macs']:.2f}x); accuracy within 1 point "
            f"of O = 0: {'met' if abs(change) <= 1.0 else 'NOT met'} ({change:+.1f} points on {len(test)} test "
            f"images, one image = {100 / len(test):.1f} points)."
        )
    if all(row["accuracy"] == 1.0 for row in rows.values()):
        lines.append(
            "Every model classifies every synthetic test image correctly: the synthetic task is too easy to "
            "show an accuracy cost of pruning; the BACH numbers of the System A section are the real test."
        )
    lines.append(
        "As in the paper, plain O prunes only the outputs of the Inception modules (the SEP-followed layers), so "
        "MACs fall less than parameters: the stem and the 1x1 reduce convs keep their widths. `+ internal` "
        "prunes those too (`prune.internal`, ranked by |BatchNorm gamma|; beyond the paper)."
    )
    return "\n".join(lines)


def _study_setting(study: Path) -> str:
    """How a `prune report` study was run, from its config.yaml: config name, retraining, internal."""
    import yaml

    cfg = yaml.safe_load((study / "config.yaml").read_text())
    prune = cfg.get("prune", {})
    deeper = "SEP-followed and internal convs" if prune.get("internal") else "SEP-followed layers only (the paper)"
    return (
        f"`{cfg['name']}`: {deeper}; O = 0 and O = {prune.get('ratio', 0.5):g} both retrained "
        f"{prune.get('retrain_iterations')} iterations per branch"
    )


def bach_section(studies: Sequence[Path], ensembles: Sequence[Path]) -> str:
    """The ``compression_bach`` section from runs on the real BACH folds (already measured): the
    O = 0.5 and O = 0 rows of each study (grouped by their config) and each ensemble's gain over
    its best member."""
    import json

    lines = [
        "## SEP channel pruning and bagging on real BACH (binary task, contiguous folds)",
        "",
        f"Tabulated by `python -m benchmarks.bench_compress --bach-study ... --bach-ensemble ...` on {today()} "
        f"from runs on this machine: {machine_info()}. Pruning studies: `histobreast prune report --config CONFIG "
        "--fold k --base runs/bach_binary_cpu/fold<k>/model` (base: the fold's configs/zhu2019/bach_binary_cpu.yaml "
        "model). Ensembles: `histobreast ensemble train --config configs/zhu2019/ensemble_bach_binary_cpu.yaml` (3 "
        "members) or `ensemble5_bach_binary_cpu.yaml` (5 members, the paper's count) `--fold k`, then `histobreast "
        "ensemble evaluate [--rule max|majority]`. Latency: one image (global + 15 "
        "patches at 112 px), CPU, 1 thread, measured in the study while other jobs shared the machine.",
    ]
    groups: dict[str, list[Path]] = {}
    for study in studies:
        groups.setdefault(_study_setting(study), []).append(study)
    for setting, members in groups.items():
        lines += [
            "",
            f"Config {setting}.",
            "",
            "| study | model | parameters | GMACs / image | CPU ms / image "
            "| speed-up vs O = 0 | test accuracy | change vs O = 0 (points) |",
            "|---|---|---|---|---|---|---|---|",
        ]
        changes, speedups = [], []
        for study in members:
            rows = json.loads((study / "report" / "metrics.json").read_text())["results"]["rows"]
            by_ratio = {row["ratio"]: row for row in rows if row["study"] == "ratio"}
            base = next(row for row in rows if row["study"] == "base")
            reference = by_ratio[0.0]
            for name, row in [("base (before retraining)", base)] + [
                (f"O = {o:g}", r) for o, r in sorted(by_ratio.items())
            ]:
                lines.append(
                    f"| {study.name} | {name} | {row['params'] / 1e6:.2f} M | {row['macs'] / 1e9:.2f} "
                    f"| {row['latency_ms']:.0f} | {reference['latency_ms'] / row['latency_ms']:.2f}x "
                    f"| {row['accuracy']:.3f} | {100 * (row['accuracy'] - reference['accuracy']):+.1f} |"
                )
            pruned = by_ratio[max(by_ratio)]
            changes.append(100 * (pruned["accuracy"] - reference["accuracy"]))
            speedups.append(reference["latency_ms"] / pruned["latency_ms"])
        lines += [
            "",
            f"Over {len(members)} fold(s), O = {max(by_ratio):g} against O = 0: accuracy change "
            f"{statistics.mean(changes):+.1f} points on average (per fold: "
            f"{', '.join(f'{c:+.1f}' for c in changes)}; target within 1 point), CPU speed-up "
            f"{statistics.median(speedups):.2f}x median (per fold: {', '.join(f'{x:.2f}' for x in speedups)}; "
            "target >= 1.6x).",
        ]
    if ensembles:
        lines += [
            "",
            "Ensembles: each member trained (bach_binary_cpu.yaml schedule) on k-1 of k contiguous subsets of "
            "the fold's training images and validated on the k-th; all rules vote the same members on the "
            "fold's test images.",
            "",
            "| ensemble | rule | test images | members' accuracy | ensemble accuracy | gain over the best member |",
            "|---|---|---|---|---|---|",
        ]
    totals: dict[tuple[int, str], list[tuple[float, float, float]]] = {}
    for folder in ensembles:
        summary = json.loads((folder / "summary.json").read_text())
        accuracies = list(summary["members"].values())
        members = ", ".join(f"{acc:.3f}" for acc in accuracies)
        lines.append(
            f"| {folder.parent.name if folder.name.startswith('evaluation') else folder.name} | {summary['rule']} "
            f"| {summary['images']} | {members} | {summary['ensemble']:.3f} "
            f"| {100 * summary['gain_over_best_member']:+.1f} points |"
        )
        totals.setdefault((len(accuracies), summary["rule"]), []).append(
            (summary["ensemble"], summary["gain_over_best_member"], summary["ensemble"] - statistics.mean(accuracies))
        )
    for (count, rule), values in totals.items():
        if len(values) > 1:
            accuracy, best, average = (statistics.mean(column) for column in zip(*values))
            lines += [
                "",
                f"{count} members, {rule} rule, {len(values)} folds: ensemble accuracy {accuracy:.3f} on average; "
                f"{100 * best:+.1f} points against the best member, {100 * average:+.1f} against the average member.",
            ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> str:
    """Measure, print the Markdown sections and (unless --no-write) save them."""
    args = _parse(argv)
    torch.set_num_threads(1)
    sections = {}
    if not args.skip_costs:
        sections["compress"] = cost_section(args)
    if not args.skip_training:
        if args.work is not None:
            args.work.mkdir(parents=True, exist_ok=True)
            sections["compression"] = training_section(args, args.work)
        else:
            with tempfile.TemporaryDirectory() as folder:
                sections["compression"] = training_section(args, Path(folder))
    if args.bach_study or args.bach_ensemble:
        sections["compression_bach"] = bach_section(args.bach_study, args.bach_ensemble)
    for name, markdown in sections.items():
        print(markdown, end="\n\n")
        if not args.no_write:
            write_section(name, markdown)
    return "\n\n".join(sections.values())


if __name__ == "__main__":
    main()
