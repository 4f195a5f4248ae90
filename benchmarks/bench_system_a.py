"""System A speed: backbone training images/s and hybrid inference latency per image.

- **Training step**: forward (with the two auxiliary heads), the engine's loss (CE + 0.3 x each aux
  CE), backward and SGD step of the GoogLeNet-BN + SEP backbone on in-memory images, at 224 px (the
  paper) and 112 px (the CPU schedules). CUDA: bf16 autocast + channels_last, batch 256
  (``--compile``: torch.compile too).
- **Loader**: on CUDA, the same 224 px step fed by the real path (the global branch's
  images: decode, Reinhard, augmentation, resize; ``--workers`` processes) over the real BACH copies
  when ../shared/data is present, else a synthetic tree; it keeps up when the two rates match.
- **Inference latency** of one image through the hybrid model: the global image plus its 15 grid
  patches (two backbones), batch 1, at 224 px (and 112 px).

    python -m benchmarks.bench_system_a [--device auto|cpu|cuda] [--steps 6] [--threads 2]
                                        [--workers N] [--compile] [--no-write]

Writes the ``system_a`` section of BENCHMARKS.md (machine, date and load average included).
"""

from __future__ import annotations

import os
import statistics
import tempfile
import time
from pathlib import Path

import torch

from benchmarks.common import benchmark_parser, machine_info, today, write_section
from histobreast.compress.profile import measure_latency
from histobreast.engine.losses import ClassificationLoss
from histobreast.models.registry import create_model

SHARED_BACH = Path(__file__).resolve().parents[2] / "shared" / "data" / "bach"
PATCHES = 15  # paper A's 5x3 grid


def _batches(batch: int, size: int, device: torch.device, channels_last: bool) -> tuple[torch.Tensor, torch.Tensor]:
    x = torch.randn(batch, 3, size, size, device=device)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    return x, torch.randint(0, 2, (batch,), device=device)


def _endless(loader: torch.utils.data.DataLoader):  # type: ignore[no-untyped-def]
    """Batches of ``loader``, epoch after epoch (268 BACH images are about one batch of 256)."""
    while True:
        yield from loader


def training_rate(
    size: int,
    batch: int,
    steps: int,
    device: torch.device,
    *,
    compile_model: bool = False,
    loader: torch.utils.data.DataLoader | None = None,
) -> float:
    """Images per second of full training steps (median over ``steps`` timed steps after 2 warm-ups)."""
    cuda = device.type == "cuda"
    model = create_model("googlenet_sep", num_classes=2).to(device).train()
    if cuda:
        model = model.to(memory_format=torch.channels_last)
    step_model = torch.compile(model) if compile_model else model
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    loss_fn = ClassificationLoss(aux_weight=0.3)
    fixed = _batches(batch, size, device, cuda)
    batches = _endless(loader) if loader is not None else None
    times = []
    for i in range(steps + 2):
        if batches is not None:
            x, y = next(batches)
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            if cuda:
                x = x.contiguous(memory_format=torch.channels_last)
        else:
            x, y = fixed
        if cuda:
            torch.cuda.synchronize()
        start = time.perf_counter()
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=cuda):
            loss = loss_fn(step_model(x), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if cuda:
            torch.cuda.synchronize()
        if i >= 2:
            times.append(time.perf_counter() - start if batches is None else time.perf_counter())
    if batches is not None:  # wall time between consecutive steps, loading included
        return batch / statistics.median(b - a for a, b in zip(times, times[1:]))
    return batch / statistics.median(times)


def hybrid_latency_ms(size: int, device: torch.device, repeats: int) -> float:
    """Median ms for one image (global + 15 patches) through the hybrid model, batch 1."""
    model = create_model("hybrid_googlenet_sep", num_classes=2).to(device).eval()
    inputs = (torch.randn(1, 3, size, size, device=device), torch.randn(1, PATCHES, 3, size, size, device=device))
    return measure_latency(model, inputs, repeats=repeats, warmup=2)


def real_loader(workers: int, batch: int) -> torch.utils.data.DataLoader:
    """System A's global-branch training images (decode, Reinhard, augmentation, 224 px), endlessly."""
    from histobreast.data.bach import BACH_BINARY, BACH_BINARY_CLASSES
    from histobreast.data.readers import read_dataset
    from histobreast.data.records import relabel
    from histobreast.data.synthetic import synth_bach
    from histobreast.pipelines.config import load_config
    from histobreast.pipelines.zhu2019 import branch_datasets
    from histobreast.preprocess.stain_target import fit_stain_normalizer

    root = (
        SHARED_BACH
        if SHARED_BACH.is_dir()
        else Path(synth_bach(tempfile.mkdtemp(), per_class=40, size=(1024, 768))[0].path).parents[2]
    )
    cfg = load_config(
        Path(__file__).resolve().parents[1] / "configs" / "zhu2019" / "bach_binary.yaml",
        [f"data.root={root}", "data.microns_per_pixel=null"],
    )
    records = read_dataset(root)
    records = relabel(records, BACH_BINARY)
    global_data, _ = branch_datasets(
        cfg, records, [], list(BACH_BINARY_CLASSES), fit_stain_normalizer(cfg.preprocess.stain, records, cfg.seed)
    )["global"]
    return torch.utils.data.DataLoader(
        global_data,
        batch_size=batch,
        shuffle=True,
        num_workers=workers,
        pin_memory=True,
        drop_last=True,
        persistent_workers=workers > 0,
        prefetch_factor=4 if workers else None,
    )


def main(argv: list[str] | None = None) -> int:
    parser = benchmark_parser(__doc__)
    parser.add_argument("--device", default="auto", help="auto (CUDA when available), cpu or cuda")
    parser.add_argument("--steps", type=int, default=6, help="timed training steps per case")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    parser.add_argument("--workers", type=int, default=12, help="loader processes of the CUDA loader case")
    parser.add_argument("--compile", action="store_true", help="torch.compile the CUDA training step")
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    torch.set_num_threads(args.threads)
    device = torch.device(
        "cuda"
        if args.device == "auto" and torch.cuda.is_available()
        else ("cpu" if args.device == "auto" else args.device)
    )
    cuda = device.type == "cuda"
    rows = []
    for size, batch in ((224, 256), (112, 256)) if cuda else ((224, 16), (112, 32)):
        rate = training_rate(size, batch, args.steps, device, compile_model=args.compile and cuda)
        rows.append(f"| training step, backbone + aux heads | {size} | {batch} | {rate:,.1f} images/s |")
    if cuda:
        rate = training_rate(224, 256, args.steps, device, loader=real_loader(args.workers, 256))
        rows.append(
            f"| training step fed by the real loader ({args.workers} workers) | 224 | 256 | {rate:,.1f} images/s |"
        )
    for size in (224, 112):
        ms = hybrid_latency_ms(size, device, repeats=10)
        rows.append(f"| inference, hybrid (global + 15 patches), one image | {size} | 1 | {ms:,.1f} ms |")
    load = os.getloadavg()[0]
    text = "\n".join(
        [
            f"## System A speed ({'CUDA, bf16 autocast + channels_last' if cuda else 'CPU, fp32'})",
            "",
            f"`python -m benchmarks.bench_system_a` on {today()}: {machine_info()}; "
            f"load average {load:.1f} when it started (the machine was shared: other jobs slow these numbers).",
            "GoogLeNet-BN + SEP at full paper widths, from scratch, SGD; median over timed steps after warm-up.",
            "",
            "| measurement | input px | batch | result |",
            "| --- | ---: | ---: | ---: |",
            *rows,
        ]
    )
    print(text)
    if not args.no_write:
        write_section("system_a" if not cuda else "system_a_cuda", text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
