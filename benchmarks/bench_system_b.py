"""System B training speed: samples/s (a sample = the 3 crops of one key region), peak memory, and
the real data loader against the same step on in-memory tensors.

- **Step**: forward, cross-entropy, backward and SGD step of MSMV-PFENet (3 encoders + BiLSTM x 2)
  on in-memory uint8 crops (normalised by the model on its device). CPU: the CPU config (ResNet18
  x 3 on 112 px crops, batch 32) and the paper's ResNet50 x 3 on 224 px crops (small batch 4).
  CUDA: ResNet50 x 3 at 224 px, batch 64 (the paper's) and 256, bf16 autocast + channels_last
  (``--compile``: also torch.compile).
- **Loader**: the same step fed by the real path: a :class:`KeyRegionDataset` (6 views x 12 KREM
  regions per image, images preloaded, uint8 crops) through the engine's seeded loader
  (``--workers`` processes), over real BACH copies when ../shared/data is present (else a synthetic
  1024x768 tree at the same 0.84 µm/px); plus the loader alone. The loader keeps up when the step
  with it is as fast as the in-memory step.
- **Peak memory**: each case runs in a fresh process; CPU: its peak resident memory; CUDA: the
  peak memory allocated by torch.

    python -m benchmarks.bench_system_b [--device auto|cpu|cuda] [--steps 8] [--threads 2]
                                        [--workers N] [--compile] [--no-write]

Writes the ``system_b`` section of BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from benchmarks.common import benchmark_parser

SHARED_DATA = Path(os.environ.get("HISTOBREAST_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))
BACH = SHARED_DATA / "bach"


@dataclass(frozen=True)
class Case:
    """One measured configuration: encoder, crop side, batch, whether the real loader feeds it."""

    name: str
    encoder: str
    size: int
    batch: int
    loader: bool = False


CPU_CASES = (
    Case("cpu_config", "resnet18", 112, 32, loader=True),
    Case("resnet50_224", "resnet50", 224, 4),
)
CUDA_CASES = (
    Case("resnet50_224_b64", "resnet50", 224, 64),
    Case("resnet50_224_b256", "resnet50", 224, 256, loader=True),
)


NOTES = {
    "system_b": (
        "Shared machine: other jobs ran at the same time, so these are medians of single steps. One "
        "torch thread per process: under that load two threads oversubscribed the two cores and a step "
        "took ~20x longer. GPU numbers: `python -m benchmarks.bench_system_b --device cuda [--compile]` "
        "(section `system_b_gpu`); no GPU was available when this was written."
    ),
    "system_b_gpu": "Target (issue 6): >= 1,300 samples/s = 3,900 ResNet50 crops/s on one H100.",
}


def _peak_memory_mib(device) -> float:  # type: ignore[no-untyped-def]
    import torch

    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def _key_region_loader(case: Case, images: int, workers: int, device, folder: Path):  # type: ignore[no-untyped-def]
    """The engine's training loader over a KeyRegionDataset, plus the seconds KREM took to prepare it."""
    from histobreast.data.bach import BACH_CLASSES, read_bach
    from histobreast.data.synthetic import synth_bach
    from histobreast.datasets.key_regions import TRAIN_TOP_K, KeyRegionDataset
    from histobreast.engine.distributed import DistributedContext, build_loader
    from histobreast.preprocess.krem import KremParams

    if BACH.is_dir():
        records, source = read_bach(BACH)[:: max(1, 268 // images)][:images], "real BACH copies (1024x768)"
    else:
        records = synth_bach(folder / "bach", per_class=max(1, images // 4), size=(1024, 768), image_format="png")
        source = "synthetic BACH (1024x768)"
    data = KeyRegionDataset(
        records,
        BACH_CLASSES,
        top_k=TRAIN_TOP_K,
        params=KremParams(output_size=case.size),
        cache_dir=folder / "cache",
        preload=True,
        uint8=True,
    )
    start = time.perf_counter()
    data.prepare()
    prepare_s = time.perf_counter() - start
    loader = build_loader(
        data,
        batch_size=case.batch,
        device=device,
        ctx=DistributedContext(),
        seed=0,
        train=True,
        num_workers=workers,
        prefetch_factor=4,
    )
    return loader, prepare_s, f"{len(records)} {source}, {len(data)} samples"


def _fetching(batches, steps: int):  # type: ignore[no-untyped-def]
    """Yield ``steps`` batches, each fetched only when the timed step asks for it."""
    for _ in range(steps):
        yield next(batches)


def run_case(case: Case, device_name: str, steps: int, workers: int, compile_model: bool) -> dict:
    """Measure one case in this process; returns JSON-able numbers."""
    import torch
    from torch.nn import functional as F

    from histobreast.models import create_model

    device = torch.device(device_name)
    cuda = device.type == "cuda"
    if cuda:
        torch.backends.cudnn.benchmark = True
        torch.set_float32_matmul_precision("high")
    torch.manual_seed(0)
    model = create_model("msmv_pfenet", num_classes=4, encoder=case.encoder).to(device)
    if cuda:
        model = model.to(memory_format=torch.channels_last)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=1e-4)
    forward = torch.compile(model) if compile_model else model
    model.train()

    def step(x, y) -> None:  # type: ignore[no-untyped-def]
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=cuda):
            loss = F.cross_entropy(forward(x), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    def timed(batches) -> float:  # type: ignore[no-untyped-def]
        """Median seconds per step (each step timed alone: robust to a busy shared machine)."""
        times = []
        for x, y in batches:  # with a loader, fetching the batch is part of the step
            if cuda:
                torch.cuda.synchronize()
            start = time.perf_counter()
            step(x, y)
            if cuda:
                torch.cuda.synchronize()
            times.append(time.perf_counter() - start)
        return statistics.median(times)

    x = torch.randint(0, 256, (case.batch, 3, 3, case.size, case.size), dtype=torch.uint8)
    y = torch.randint(0, 4, (case.batch,))
    if cuda:
        x, y = x.pin_memory(), y.pin_memory()
    timed([(x, y)] * (3 if compile_model else 2))  # warm-up (and compilation)
    result = {
        **asdict(case),
        "device": device_name,
        "steps": steps,
        "compile": compile_model,
        "memory_s": timed([(x, y)] * steps),
    }  # seconds per step (median)
    if case.loader:
        with tempfile.TemporaryDirectory() as folder:
            images = max(8, -(-case.batch * (steps + 2) // (6 * 12)))  # enough samples for warm-up + steps
            loader, prepare_s, source = _key_region_loader(case, images, workers, device, Path(folder))
            loader.sampler.set_epoch(0)
            batches = iter(loader)
            timed([next(batches) for _ in range(2)])
            result["loader_s"] = timed(_fetching(batches, steps))
            loader.sampler.set_epoch(1)
            start = time.perf_counter()
            for i, _ in enumerate(loader, start=1):
                if i == steps:
                    break
            result.update(
                loader_only_s=(time.perf_counter() - start) / steps, prepare_s=prepare_s, source=source, workers=workers
            )
    result["peak_mib"] = _peak_memory_mib(device)
    return result


def _in_subprocess(case: Case, args: argparse.Namespace, device: str) -> dict:
    command = [
        sys.executable,
        "-m",
        "benchmarks.bench_system_b",
        "--case",
        case.name,
        "--device",
        device,
        "--steps",
        str(args.steps),
        "--threads",
        str(args.threads),
        "--workers",
        str(args.workers),
    ]
    if args.compile:
        command.append("--compile")
    done = subprocess.run(command, cwd=Path(__file__).resolve().parents[1], capture_output=True, text=True, check=False)
    if done.returncode:
        raise SystemExit(f"case {case.name} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def _rate(result: dict, key: str) -> str:
    return f"{result['batch'] / result[key]:,.1f}" if key in result else "–"


def render(results: list[dict], machine: str, date: str, threads: int) -> str:
    lines = [
        f"System B (MSMV-PFENet) training step, {date}. Machine: {machine}; {threads} torch thread(s) on CPU. "
        "A sample is one key region's 3 crops (coarse -> fine); samples/s = batch / median step time over "
        f"{results[0]['steps']} timed steps (after warm-up). "
        "CUDA runs use bf16 autocast + channels_last. `python -m benchmarks.bench_system_b`.",
        "",
        "| case | device | encoders | crop px | batch | samples/s (in-memory) | samples/s (real loader) "
        "| loader alone samples/s | crops/s (in-memory) | peak memory MiB |",
        "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in results:
        crops = 3 * r["batch"] / r["memory_s"]
        lines.append(
            f"| {r['name']}{' (compiled)' if r['compile'] else ''} | {r['device']} | 3 x {r['encoder']} "
            f"| {r['size']} | {r['batch']} | {_rate(r, 'memory_s')} | {_rate(r, 'loader_s')} "
            f"| {_rate(r, 'loader_only_s')} | {crops:,.0f} | {r['peak_mib']:,.0f} |"
        )
    for r in results:
        if "loader_s" in r:
            lines.append(
                f"\n`{r['name']}`: {r['source']}, KREM for all views took {r['prepare_s']:.1f} s "
                f"(cached afterwards); {r['workers']} loader worker(s); median step "
                f"{r['loader_s'] * 1e3:,.0f} ms with the loader (fetching included) against "
                f"{r['memory_s'] * 1e3:,.0f} ms on in-memory tensors."
            )
    return "\n".join(lines)


def bach_results(run_dirs: list[Path]) -> str:
    """The ``system_b_bach`` section: per-fold patch- and image-level accuracy of finished
    ``histobreast train`` experiment folders (their ``report/metrics.json``), with each run's schedule."""
    from histobreast.pipelines.config import load_config

    lines = [
        "| run | level | " + " | ".join(f"fold {f}" for f in range(1, 6)) + " | mean ± std |",
        "| --- | --- | " + " | ".join("---:" for _ in range(5)) + " | ---: |",
    ]
    notes = []
    for run_dir in run_dirs:
        metrics = json.loads((run_dir / "report" / "metrics.json").read_text())
        for method in [
            m for m in ("patch", "image", "patch_one_region", "image_one_region") if m in metrics["results"]["folds"]
        ]:
            folds = metrics["results"]["folds"][method]
            values = {int(f): e["metrics"]["image_level_accuracy"] for f, e in folds.items()}
            summary = metrics["results"]["summary"][method]["metrics"]["metrics/image_level_accuracy"]
            cells = " | ".join(f"{100 * values[f]:.1f}" if f in values else "–" for f in range(1, 6))
            spread = f" ± {100 * summary['std']:.1f}" if summary.get("std") is not None else ""
            lines.append(f"| {run_dir.name} | {method} | {cells} | {100 * summary['mean']:.1f}{spread} |")
        run = metrics["run"]
        cfg = load_config(run_dir / "config.yaml")
        if cfg.pipeline != "liu2022":  # a baseline beside System B, e.g. runs/resnet18_bach4_cpu
            notes.append(
                f"- `{run_dir.name}`: {cfg.model.name} on whole images ({cfg.name}); "
                f"`{run['command']}` (finished {run['date']}; {run['machine']})"
            )
            continue
        mode = "frozen encoders, only FDNet trained" if cfg.model.frozen_encoders else "joint training"
        pretraining = cfg.model.encoder_pretraining
        if pretraining:
            mode = f"each encoder first pre-trained alone on its scale for {pretraining.get('iterations')} iterations, then {mode}"
        if cfg.model.cross_fit:
            mode += f" on out-of-fold vectors ({cfg.model.cross_fit}-part cross-fitting)"
        length = f"{cfg.train.epochs} epochs" if cfg.train.epochs else f"{cfg.train.iterations} iterations"
        regions = cfg.preprocess.regions
        selection = regions.selection
        if regions.krem.get("top_k_max_iou", 1.0) < 1.0 and selection == "density":
            selection += f" (non-maximum suppression at IoU {regions.krem['top_k_max_iou']:g})"
        selection += f", {regions.top_k_train} per view for training and {regions.top_k_test} for testing"
        if cfg.preprocess.augment.color_jitter:
            mode += f", colour jitter {cfg.preprocess.augment.color_jitter:g}"
        if cfg.preprocess.stain.method != "none":
            mode += f", {cfg.preprocess.stain.method} stain normalisation"
        if cfg.model.kwargs.get("dropout"):
            mode += f", dropout {cfg.model.kwargs['dropout']:g} before the FC"
        notes.append(
            f"- `{run_dir.name}`: 3 x {cfg.model.kwargs.get('encoder', 'resnet50')} on "
            f"{cfg.preprocess.input_size} px crops ({mode}), regions: {selection}, "
            f"{cfg.train.optimizer} lr {cfg.train.lr:g}, batch {cfg.train.batch_size}, {length}; "
            f"`{run['command']}` (finished {run['date']}; {run['machine']})"
        )
    return "\n".join(lines + [""] + notes)


BACH_INTRO = (
    "## System B on real BACH (4 classes, 5 contiguous folds)\n\n"
    "Accuracy (%) of each fold's test images: patch = one result per view (per region when a run tests "
    "several regions per view), image = the majority vote of those results; `_one_region` = only the "
    "first region of each view votes, from the same scores (the paper's protocol: the densest with KREM, "
    "one random draw in the random-region control)."
)
TABLE4_INTRO = (
    "## System B, Table 4 on real BACH (4 classes, 5 contiguous folds)\n\n"
    "Patch = one result per view (the densest region), image = the six views' majority vote. The base "
    "is `configs/liu2022/bach4_frozen.yaml`: random, frozen encoders (ResNet18 unless the row names "
    "another) and a trained discriminator, so the rows compare what untrained architectures pass on "
    "(docs/system_b.md). Regenerate with `histobreast ablate --config "
    "configs/liu2022/ablation_table4.yaml --data ../shared/data/bach --set "
    "preprocess.cache_dir=runs/sysb_real_frozen/cache --out runs/sysb_real_table4` (the file named "
    "below lists the same ten rows)."
)


def table4_results(run_dir: Path) -> str:
    """The ``system_b_table4`` section: the Table 4 layout of a finished ``histobreast ablate`` folder
    (its ``report/metrics.json``), with the command, date and machine it ran on."""
    from histobreast.report.tables import Table

    metrics = json.loads((run_dir / "report" / "metrics.json").read_text())
    run = metrics["run"]
    table = Table.from_dict(metrics["tables"][0])
    return (
        f"{table.to_markdown()}\n`{run_dir.name}`: {run['dataset']}, {run['split']}; `{run['command']}` "
        f"(finished {run['date']}; {run['machine']})"
    )


def main(argv: list[str] | None = None) -> int:
    parser = benchmark_parser(__doc__)
    parser.add_argument("--device", default="auto", help="auto (CUDA when available), cpu or cuda")
    parser.add_argument("--steps", type=int, default=8, help="timed steps per case (after warm-up)")
    parser.add_argument("--threads", type=int, default=2, help="torch threads on CPU")
    parser.add_argument("--workers", type=int, default=None, help="loader workers (default: 0 on CPU, 12 on CUDA)")
    parser.add_argument("--compile", action="store_true", help="torch.compile the model (CUDA)")
    parser.add_argument("--case", help=argparse.SUPPRESS)  # internal: run one case, print JSON
    parser.add_argument(
        "--bach-runs",
        nargs="+",
        type=Path,
        help="instead: record these finished System B "
        "BACH experiment folders' per-fold accuracy (section system_b_bach)",
    )
    parser.add_argument(
        "--table4-run",
        type=Path,
        help="instead: record this finished `histobreast ablate` folder's Table 4 (section system_b_table4)",
    )
    args = parser.parse_args(argv)
    # Recording finished real-data runs: (section, its heading and explanation, the table).
    recorded = None
    if args.table4_run:
        recorded = ("system_b_table4", TABLE4_INTRO, table4_results(args.table4_run))
    elif args.bach_runs:
        recorded = ("system_b_bach", BACH_INTRO, bach_results(args.bach_runs))
    if recorded is not None:
        from benchmarks.common import write_section

        section, intro, text = recorded
        print(text)
        if not args.no_write:
            write_section(section, f"{intro}\n\n{text}")
        return 0
    import torch

    torch.set_num_threads(args.threads)
    device = args.device if args.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    cases = CUDA_CASES if device.startswith("cuda") else CPU_CASES
    if args.workers is None:
        args.workers = 12 if device.startswith("cuda") else 0
    if args.case:
        case = next(c for c in cases if c.name == args.case)
        print(json.dumps(run_case(case, device, args.steps, args.workers, args.compile)))
        return 0
    from benchmarks.common import machine_info, today, write_section

    results = []
    for case in cases:
        results.append(_in_subprocess(case, args, device))
        print(json.dumps(results[-1]), flush=True)
    text = render(results, machine_info(), today(), args.threads)
    print(text)
    if not args.no_write:
        section = "system_b_gpu" if device.startswith("cuda") else "system_b"
        write_section(section, f"## System B training speed ({device})\n\n{text}\n\n{NOTES[section]}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
