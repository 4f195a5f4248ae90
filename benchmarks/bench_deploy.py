"""CPU speed of the deployed models: PyTorch FP32 eager vs ONNX Runtime FP32 vs ONNX Runtime INT8 (section ``deploy``).

- **System A**: one hybrid image = the global image + the 5x3 grid's 15 patches, at the config's
  input size (``configs/zhu2019/bach_binary_cpu.yaml``: 112 px, the size of the real-BACH fold
  models; ``--size 224`` for the paper's), GoogLeNet-BN + SEP at the config's (full) widths, for
  the unpruned network, O = 0.5 and O = 0.5 ``--internal`` (pruned by the project's
  ``compress.prune`` from SE importances of one random batch: channel costs do not depend on which
  channels go). Untrained weights: speed only.
- **System B**: one image = 6 views x 3 KREM crops (``configs/liu2022/bach4_cpu.yaml``: ResNet18
  x 3 on 112 px crops, BiLSTM FDNet). Its INT8 graphs are calibrated on seeded random crops (the
  runtime does not build System B's KREM inputs yet), so they time, they do not classify.
- Every model goes through the user path: a model folder, ``export_onnx`` (parity checked),
  ``quantize_exported`` on synthetic H&E images for System A. Latency at batch 1 and images/s at
  the best of ``--batches``, on 1 and 2 threads (torch intra-op threads / ORT intra-op threads);
  all engines and models are timed in turn, round after round, and the median of the rounds kept,
  so a shared machine's load falls on all alike. The issue's target ratio (ORT INT8 of
  O = 0.5 --internal vs PyTorch FP32 of the unpruned hybrid) is computed from the same run.

    python -m benchmarks.bench_deploy [--size 112] [--batches 1 4] [--threads 1 2] [--rounds 3] [--no-write]
"""

from __future__ import annotations

import copy
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from benchmarks.common import benchmark_parser, machine_info, today, write_section
from histobreast.compress.importance import compute_channel_importance
from histobreast.compress.prune import per_loop_fraction, prune_channels
from histobreast.data.synthetic import synth_bach
from histobreast.export.folder import export_onnx
from histobreast.export.quantize import quantize_exported, quantize_network
from histobreast.models import create_model
from histobreast.models.hybrid import HybridCNN
from histobreast.pipelines.config import load_config
from histobreast.pipelines.package import load_model_folder, save_model_folder
from histobreast.pipelines.zhu2019 import split_kwargs
from histobreast.runtime.folder import INPUT_NAME, OUTPUT_NAME, open_session, read_exported

REPO = Path(__file__).resolve().parents[1]
SYSTEM_A_CONFIG = REPO / "configs" / "zhu2019" / "bach_binary_cpu.yaml"
SYSTEM_B_CONFIG = REPO / "configs" / "liu2022" / "bach4_cpu.yaml"
VARIANTS = (("unpruned", 0.0, False), ("O = 0.5", 0.5, False), ("O = 0.5 --internal", 0.5, True))
ENGINES = ("PyTorch FP32", "ORT FP32", "ORT INT8")
VIEWS, SCALES = 6, 3  # System B: six views, one crop per KREM scale each
CLASSES = ["non-carcinoma", "carcinoma"]
Runner = Callable[[int], Any]  # batch size -> one forward pass over that many images


def _parse(argv: list[str] | None):
    parser = benchmark_parser(__doc__)
    parser.add_argument("--size", type=int, default=None, help="input side in px (default: the configs' 112)")
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 4], help="images per call (1 gives latency)")
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--rounds", type=int, default=3, help="timing rounds; each times every case in turn")
    parser.add_argument("--repeats", type=int, default=3, help="timed calls per case and round (median)")
    parser.add_argument("--skip-system-b", action="store_true")
    return parser.parse_args(argv)


def system_a_folders(work: Path, size: int | None) -> dict[str, Path]:
    """A model folder per pruning variant (the config's branch network, pruned by compress.prune)."""
    cfg = load_config(SYSTEM_A_CONFIG)
    if size is not None:
        cfg = load_config(
            SYSTEM_A_CONFIG, overrides=[f"preprocess.input_size={size}", f"preprocess.patches.size={size}"]
        )
    side = cfg.preprocess.input_size
    torch.manual_seed(0)
    branch_kwargs, hybrid_kwargs = split_kwargs(cfg)
    base = create_model(cfg.model.name, num_classes=2, **branch_kwargs).eval()
    importance = compute_channel_importance(base, [torch.randn(4, 3, side, side)])
    folders = {}
    for label, ratio, internal in VARIANTS:
        branch = (
            base if ratio == 0 else prune_channels(base, importance, per_loop_fraction(ratio, 1), internal=internal)
        )
        hybrid = HybridCNN(copy.deepcopy(branch), copy.deepcopy(branch), **hybrid_kwargs).eval()
        folders[label] = save_model_folder(work / f"a_{ratio}_{internal}", hybrid, cfg, CLASSES)
    return folders


def _ort_runner(folder: Path, threads: int, inputs: Callable[[int], dict[str, np.ndarray]]) -> Runner:
    exported = read_exported(folder)
    sessions = {name: open_session(net.path, threads) for name, net in exported.networks.items()}  # type: ignore[union-attr]

    def run(batch: int) -> Any:
        return [sessions[name].run([OUTPUT_NAME], {INPUT_NAME: x}) for name, x in inputs(batch).items()]

    return run


def _timed(run: Runner, batch: int, repeats: int) -> float:
    """Median seconds of ``repeats`` calls after one untimed call."""
    run(batch)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run(batch)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def system_a_runners(
    folder: Path, work: Path, calibration: Path, threads: int, side: int, patch: int
) -> dict[str, Runner]:
    """The three engines of one System A model folder on ``threads`` threads."""
    rng = np.random.default_rng(0)
    cache: dict[int, dict[str, np.ndarray]] = {}

    def inputs(batch: int) -> dict[str, np.ndarray]:
        if batch not in cache:
            cache[batch] = {
                "global": rng.standard_normal((batch, 3, side, side), dtype=np.float32),
                "local": rng.standard_normal((batch * 15, 3, patch, patch), dtype=np.float32),
            }
        return cache[batch]

    model = load_model_folder(folder).model

    def torch_run(batch: int) -> Any:
        x = inputs(batch)
        with torch.inference_mode():
            return model.branch_outputs(
                torch.from_numpy(x["global"]), torch.from_numpy(x["local"]).view(batch, 15, 3, patch, patch)
            )

    fp32, int8 = work / f"{folder.name}.onnx", work / f"{folder.name}.int8"
    if not fp32.exists():
        export_onnx(folder, fp32)
        quantize_exported(fp32, [calibration], int8, max_images=16)
    return {
        "PyTorch FP32": torch_run,
        "ORT FP32": _ort_runner(fp32, threads, inputs),
        "ORT INT8": _ort_runner(int8, threads, inputs),
    }


def system_b_runners(work: Path, threads: int) -> tuple[dict[str, Runner], int]:
    """PyTorch / ORT FP32 / ORT INT8 runners of the System B CPU config, and its crop side."""
    cfg = load_config(SYSTEM_B_CONFIG)
    side = cfg.preprocess.input_size
    rng = np.random.default_rng(0)
    cache: dict[int, np.ndarray] = {}

    def crops(batch: int) -> np.ndarray:  # (images x views, scales, 3, side, side)
        if batch not in cache:
            cache[batch] = rng.standard_normal((batch * VIEWS, SCALES, 3, side, side), dtype=np.float32)
        return cache[batch]

    folder = work / "b_model"
    if not folder.exists():
        torch.manual_seed(0)
        model = create_model("msmv_pfenet", num_classes=4, **cfg.model.kwargs).eval()
        save_model_folder(folder, model, cfg, ["normal", "benign", "in_situ", "invasive"], microns_per_pixel=0.42)
        export_onnx(folder, work / "b_fp32")
        (work / "b_int8").mkdir()
        for net in read_exported(work / "b_fp32").networks.values():  # type: ignore[union-attr]
            calibration = (rng.standard_normal((4, *net.sample_shape), dtype=np.float32) for _ in range(4))
            quantize_network(net.path, work / "b_int8" / net.path.name, calibration)
    model = load_model_folder(folder).model

    def torch_run(batch: int) -> Any:
        with torch.inference_mode():
            return model.predict_proba(torch.from_numpy(crops(batch)))

    def ort_runner(onnx_folder: Path) -> Runner:
        exported = read_exported(work / "b_fp32")
        sessions = [open_session(onnx_folder / net.path.name, threads) for net in exported.networks.values()]  # type: ignore[union-attr]

        def run(batch: int) -> Any:
            x = crops(batch)
            features = np.stack(
                [
                    s.run([OUTPUT_NAME], {INPUT_NAME: np.ascontiguousarray(x[:, i])})[0]
                    for i, s in enumerate(sessions[:-1])
                ],
                axis=1,
            )
            return sessions[-1].run([OUTPUT_NAME], {INPUT_NAME: features})

        return run

    return {
        "PyTorch FP32": torch_run,
        "ORT FP32": ort_runner(work / "b_fp32"),
        "ORT INT8": ort_runner(work / "b_int8"),
    }, side


def measure(cases: dict[tuple[str, str], Runner], threads: int, batches: list[int], rounds: int, repeats: int) -> dict:
    """``{(model, engine): {batch: seconds per call}}``, every case timed in turn each round."""
    torch.set_num_threads(threads)
    times: dict[tuple[str, str], dict[int, list[float]]] = {key: {b: [] for b in batches} for key in cases}
    for _ in range(rounds):
        for key, run in cases.items():
            for batch in batches:
                times[key][batch].append(_timed(run, batch, repeats))
    return {key: {b: statistics.median(v) for b, v in per.items()} for key, per in times.items()}


def table(results: dict[int, dict], models: list[str], batches: list[int]) -> list[str]:
    """Markdown rows: model, engine, then per thread count the latency at batch 1 and the best images/s."""
    thread_counts = sorted(results)
    head = ["model", "engine"]
    for t in thread_counts:
        head += [f"{t} thr: ms/image, batch 1", f"{t} thr: best images/s (batch)"]
    lines = ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    for model in models:
        for engine in ENGINES:
            cells = []
            for t in thread_counts:
                per = results[t][(model, engine)]
                best = max(batches, key=lambda b: b / per[b])
                cells += [f"{per[1] * 1e3:.0f}", f"{best / per[best]:.2f} ({best})"]
            lines.append(f"| {model} | {engine} | " + " | ".join(cells) + " |")
    return lines


def main(argv: list[str] | None = None) -> str:
    """Measure both systems on every thread count, print the section and (unless --no-write) save it."""
    args = _parse(argv)
    batches = sorted(set([1, *args.batches]))
    loads = [os.getloadavg()[0]]
    with tempfile.TemporaryDirectory() as folder:
        work = Path(folder)
        synth_bach(work / "calibration", per_class=4, size=(512, 384), image_format="jpg")
        folders = system_a_folders(work, args.size)
        cfg = load_model_folder(folders["unpruned"]).cfg
        side, patch = cfg.preprocess.input_size, cfg.preprocess.patches.size
        results_a, results_b = {}, {}
        for threads in args.threads:
            cases = {
                (label, engine): run
                for label, f in folders.items()
                for engine, run in system_a_runners(f, work, work / "calibration", threads, side, patch).items()
            }
            results_a[threads] = measure(cases, threads, batches, args.rounds, args.repeats)
            if not args.skip_system_b:
                runners, b_side = system_b_runners(work, threads)
                cases_b = {("System B", engine): run for engine, run in runners.items()}
                results_b[threads] = measure(cases_b, threads, batches, args.rounds, args.repeats)
            loads.append(os.getloadavg()[0])
    lines = [
        "## Deployment: PyTorch vs ONNX Runtime FP32 vs INT8 on the CPU (`benchmarks/bench_deploy.py`)",
        "",
        f"Machine: {machine_info()}; onnxruntime {__import__('onnxruntime').__version__}; {today()}. "
        f"Median of {args.rounds} rounds x {args.repeats} calls, all cases timed in turn (a shared machine's load "
        "falls on all alike; absolute times on a busy machine are high, ratios are what to read). "
        f"Load average during the run: {min(loads):.1f}-{max(loads):.1f} on {os.cpu_count()} cores"
        + (
            "; above the core count, so threads wait for cores: PyTorch's OpenMP threads spin on each other "
            "and its multi-thread numbers measure that contention, not the engine (read the 1-thread rows)."
            if max(loads) > (os.cpu_count() or 1)
            else "."
        ),
        "",
        f"System A: one image = global {side} px + 15 patches of {patch} px (`configs/zhu2019/bach_binary_cpu.yaml` widths; "
        "untrained weights, pruned by `compress.prune`; INT8: QDQ per-channel, calibrated on 16 synthetic H&E images).",
        "",
        *table(results_a, list(folders), batches),
        "",
    ]
    for threads, per in results_a.items():
        base = per[("unpruned", "PyTorch FP32")]
        target = per[("O = 0.5 --internal", "ORT INT8")]
        same = per[("O = 0.5 --internal", "PyTorch FP32")]
        best = max(batches)
        lines.append(
            f"- {threads} thread{'s' * (threads > 1)}: ORT INT8 of O = 0.5 --internal vs PyTorch FP32 of the unpruned hybrid: "
            f"**{base[1] / target[1]:.2f}x** per image at batch 1, {base[best] / target[best]:.2f}x at batch {best} "
            f"(target: 4x; {'met' if base[1] / target[1] >= 4 else 'NOT met'} at batch 1); "
            f"vs PyTorch FP32 of the same pruned model: {same[1] / target[1]:.2f}x."
        )
    if results_b:
        lines += [
            "",
            f"System B: one image = 6 views x 3 KREM crops of {b_side} px (`configs/liu2022/bach4_cpu.yaml`: ResNet18 x 3 + "
            "BiLSTM; untrained; its INT8 calibrated on random crops: speed only).",
            "",
            *table(results_b, ["System B"], batches),
        ]
    markdown = "\n".join(lines)
    print(markdown)
    if not args.no_write:
        write_section("deploy", markdown)
    return markdown


if __name__ == "__main__":
    main()
