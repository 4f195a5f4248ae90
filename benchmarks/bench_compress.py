"""Cost of SEP channel pruning: O = 0.5 against O = 0 on an untrained GoogLeNetSEP.

Parameters, MACs, checkpoint size and CPU latency (and GPU throughput when CUDA is present) of
the backbone alone (one 224 px image) and of the hybrid model on one image (global 224 px +
15 patches of 224 px, paper A's inference unit). Which channels go does not change the costs, so
an untrained network with importances from one random batch is enough; accuracy is measured by
the pruning pipeline on real data, not here. The deployable network is measured (no auxiliary
heads). Latencies of the two ratios are measured in alternating rounds (median of the rounds'
medians), so that load from other processes on a shared machine hits both alike.

    python -m benchmarks.bench_compress [--ratios 0 0.5] [--rounds 5] [--repeats 5]

Writes the ``compress`` section of BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path

import torch

from benchmarks.common import machine_info, today, write_section
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


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ratios", type=float, nargs="+", default=[0.0, 0.5], help="pruning ratios O (first = baseline)")
    parser.add_argument("--rounds", type=int, default=5, help="alternating timing rounds")
    parser.add_argument("--repeats", type=int, default=5, help="timed passes per round")
    parser.add_argument("--no-write", action="store_true", help="print the table, leave BENCHMARKS.md alone")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> str:
    """Measure every ratio, print the Markdown section and (unless --no-write) save it."""
    args = _parse(argv)
    torch.manual_seed(0)
    base = GoogLeNetSEP(num_classes=2, aux_logits=False).eval()
    importance = compute_channel_importance(base, [torch.randn(4, 3, SIZE, SIZE)])
    backbones = {ratio: prune_channels(base, importance, per_loop_fraction(ratio, 1)).eval() for ratio in args.ratios}
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
                "backbone_ms": [],
                "hybrid_ms": [],
            }
    for _ in range(args.rounds):
        for ratio in args.ratios:
            rows[ratio]["backbone_ms"].append(measure_latency(backbones[ratio], image, args.repeats, warmup=1))
            rows[ratio]["hybrid_ms"].append(measure_latency(hybrids[ratio], (image, patches), args.repeats, warmup=1))

    gpu = {}
    if torch.cuda.is_available():
        batch = torch.randn(256, 3, SIZE, SIZE, device="cuda").to(memory_format=torch.channels_last)
        for ratio, model in backbones.items():
            gpu_model = model.cuda().to(memory_format=torch.channels_last)
            with torch.autocast("cuda", dtype=torch.bfloat16):
                gpu[ratio] = measure_throughput(gpu_model, batch, repeats=20, warmup=5)

    baseline = args.ratios[0]
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
    hybrid_base = statistics.median(rows[baseline]["hybrid_ms"])
    for ratio in args.ratios:
        row = rows[ratio]
        backbone_ms, hybrid_ms = statistics.median(row["backbone_ms"]), statistics.median(row["hybrid_ms"])
        cells = [
            f"{ratio:g}",
            f"{row['params'] / 1e6:.2f} M",
            f"{row['macs'] / 1e9:.3f}",
            f"{row['hybrid_macs'] / 1e9:.2f}",
            f"{row['size'] / 2**20:.1f} MiB",
            f"{backbone_ms:.1f}",
            f"{hybrid_ms:.0f}",
            f"{hybrid_base / hybrid_ms:.2f}x",
        ] + ([f"{gpu[ratio]:.0f}"] if gpu else [])
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "Accuracy at each ratio comes from the pruning pipeline on real data (see the System A sections)."]
    markdown = "\n".join(lines)
    print(markdown)
    if not args.no_write:
        write_section("compress", markdown)
    return markdown


if __name__ == "__main__":
    main()
