"""System B end to end on the CPU: image -> six views x KREM crops -> probabilities (section ``deploy_system_b``).

The rows of ``bench_deploy`` time System B's networks on random crops; these time what a user runs:
``liu2022.predict_records`` (PyTorch FP32) against the torch-free runtime's ``predict_model``
(ORT FP32 and ORT INT8, sessions opened once), both reading the image, normalising its stain, running
KREM on each of the six views, cutting the crops and voting. The model is the CPU config's
(``configs/liu2022/bach4_cpu.yaml``: ResNet18 x 3 on 112 px crops, BiLSTM FDNet), untrained; INT8 is
calibrated through the same crops of the synthetic images (``quantize_exported``). Images: synthetic
H&E at BACH's field of view, 1024x768 px at 0.84 µm/px (our real copies' size). Timing as in
``bench_deploy``: every case in turn, round after round, medians.

    python -m benchmarks.bench_deploy_system_b [--batches 1 4] [--threads 1] [--rounds 3] [--no-write]
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import torch

from benchmarks.bench_deploy import ENGINES, SYSTEM_B_CONFIG, Runner, measure, table
from benchmarks.common import benchmark_parser, machine_info, today, write_section
from histobreast.data.imageio import read_rgb
from histobreast.data.synthetic import synth_bach
from histobreast.export.folder import export_onnx
from histobreast.export.quantize import quantize_exported
from histobreast.models import create_model
from histobreast.pipelines import liu2022
from histobreast.pipelines.config import load_config
from histobreast.pipelines.input_range import training_inputs
from histobreast.pipelines.package import images_scale, load_model_folder, save_model_folder
from histobreast.preprocess.stain import create_normalizer
from histobreast.runtime.folder import ExportedModel, read_exported
from histobreast.runtime.predict import model_sessions, predict_model

CLASSES = ["normal", "benign", "in_situ", "invasive"]
MODEL = "System B, image to probabilities"


def _parse(argv: list[str] | None):
    parser = benchmark_parser(__doc__)
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 4], help="images per call (1 gives latency)")
    parser.add_argument("--threads", type=int, nargs="+", default=[1])
    parser.add_argument("--rounds", type=int, default=3, help="timing rounds; each times every case in turn")
    parser.add_argument("--repeats", type=int, default=3, help="timed calls per case and round (median)")
    return parser.parse_args(argv)


def runners(work: Path, records: list, threads: int) -> dict[str, Runner]:
    """The three engines on ``threads`` threads; ``run(batch)`` predicts the first ``batch`` images."""
    folder, fp32, int8 = work / "model", work / "fp32", work / "int8"
    if not folder.exists():
        cfg = load_config(SYSTEM_B_CONFIG)
        torch.manual_seed(0)
        model = create_model("msmv_pfenet", num_classes=len(CLASSES), **cfg.model.kwargs).eval()
        scale, inputs = images_scale(records), training_inputs(records)
        stain = create_normalizer("reinhard").fit(read_rgb(records[0].path))  # the config's Reinhard target
        save_model_folder(folder, model, cfg, CLASSES, stain=stain, microns_per_pixel=scale, training_inputs=inputs)
        export_onnx(folder, fp32)
        quantize_exported(fp32, [r.path for r in records], int8)
    loaded = load_model_folder(folder)

    def torch_run(batch: int) -> Any:
        return liu2022.predict_records(loaded, records[:batch], device="cpu")

    def ort_runner(path: Path) -> Runner:
        exported = read_exported(path)
        assert isinstance(exported, ExportedModel)
        sessions = model_sessions(exported, threads)
        return lambda batch: predict_model(exported, records[:batch], sessions=sessions)

    return dict(zip(ENGINES, (torch_run, ort_runner(fp32), ort_runner(int8))))


def main(argv: list[str] | None = None) -> str:
    """Measure on every thread count, print the section and (unless --no-write) save it."""
    args = _parse(argv)
    batches = sorted(set([1, *args.batches]))
    loads = [os.getloadavg()[0]]
    results = {}
    with tempfile.TemporaryDirectory() as folder:
        work = Path(folder)
        records = synth_bach(work / "images", per_class=2, size=(1024, 768), image_format="png")
        for threads in args.threads:
            cases = {(MODEL, engine): run for engine, run in runners(work, records, threads).items()}
            results[threads] = measure(cases, threads, batches, args.rounds, args.repeats)
            loads.append(os.getloadavg()[0])
    per = results[min(results)]
    lines = [
        "## Deployment, System B end to end: image -> KREM crops -> probabilities (`benchmarks/bench_deploy_system_b.py`)",
        "",
        f"Machine: {machine_info()}; onnxruntime {__import__('onnxruntime').__version__}; {today()}. "
        f"Median of {args.rounds} rounds x {args.repeats} calls, all cases timed in turn; load average "
        f"{min(loads):.1f}-{max(loads):.1f} on {os.cpu_count()} cores (ratios are what to read). One image = "
        "1024x768 px synthetic H&E at 0.84 µm/px: read, Reinhard-normalised, six views x KREM (the densest region each) x 3 crops "
        "of 112 px, `configs/liu2022/bach4_cpu.yaml` (ResNet18 x 3 + BiLSTM, untrained), six-view vote. "
        "PyTorch: `liu2022.predict_records`; ORT: the runtime's `predict_model` (sessions opened once); "
        "INT8 calibrated through the same crops.",
        "",
        *table(results, [MODEL], batches),
        "",
        f"- {min(results)} thread{'s' * (min(results) > 1)}, batch 1: ORT FP32 {per[(MODEL, 'PyTorch FP32')][1] / per[(MODEL, 'ORT FP32')][1]:.2f}x, "
        f"ORT INT8 {per[(MODEL, 'PyTorch FP32')][1] / per[(MODEL, 'ORT INT8')][1]:.2f}x the PyTorch path's speed "
        "(KREM and the crops, shared by both, are in every row).",
    ]
    markdown = "\n".join(lines)
    print(markdown)
    if not args.no_write:
        write_section("deploy_system_b", markdown)
    return markdown


if __name__ == "__main__":
    main()
