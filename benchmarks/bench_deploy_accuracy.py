"""Accuracy of the deployed models on real BACH folds: PyTorch vs ORT FP32 vs ORT INT8 (section ``deploy_accuracy``).

For every variant (a model folder per fold: the trained fold models, their O = 0.5 prunes...) and
fold: the fold's test images (from the experiment's ``fold<k>/predictions/hybrid.csv``) predicted by
the PyTorch pipeline, by the ONNX export (``export_onnx``, parity checked) and by its INT8 version
(``quantize_exported``, calibrated on up to ``--calibration-images`` of the fold's other images, i.e.
its training images), and by the INT8 version that keeps System A's global branch FP32
(``--fp32 global``). Reports each engine's image accuracy, the ORT calls identical to PyTorch's,
the largest FP32 probability difference, and the mean INT8 accuracy loss over the folds (the
issue's bar: at most 1 point).

    python -m benchmarks.bench_deploy_accuracy --experiment /work/runs/real/bach_binary_cpu \\
        --variant unpruned=/work/runs/real/bach_binary_cpu/fold{fold}/model \\
        --variant "O = 0.5 --internal=/work/runs/real/prune_internal/fold{fold}" --work /work/runs/deploy/acc
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path

import numpy as np
import torch

from benchmarks.common import benchmark_parser, machine_info, today, write_section
from histobreast.data.imageio import collect_images
from histobreast.data.records import ImageRecord
from histobreast.export.folder import export_onnx
from histobreast.export.quantize import quantize_exported
from histobreast.pipelines import get_pipeline
from histobreast.pipelines.input_range import prediction_scale
from histobreast.pipelines.package import read_model_info
from histobreast.predictions import Predictions
from histobreast.runtime.folder import EXPORT_JSON
from histobreast.runtime.predict import predict_exported


def _parse(argv: list[str] | None):
    parser = benchmark_parser(__doc__)
    parser.add_argument("--experiment", type=Path, required=True, help="experiment folder with fold<k>/predictions")
    parser.add_argument(
        "--variant",
        action="append",
        default=[],
        help="LABEL=MODEL_FOLDER_TEMPLATE with {fold}, split at the last = (default: unpruned=EXPERIMENT/fold{fold}/model)",
    )
    parser.add_argument("--folds", type=int, nargs="+", default=[1, 2, 3, 4, 5])
    parser.add_argument("--data", type=Path, default=Path("../shared/data/bach"), help="the images' dataset folder")
    parser.add_argument("--work", type=Path, required=True, help="where exports are kept (re-used when present)")
    parser.add_argument("--calibration-images", type=int, default=64)
    parser.add_argument("--threads", type=int, default=1)
    return parser.parse_args(argv)


def fold_test_records(experiment: Path, fold: int, model: Path) -> list[ImageRecord]:
    """The fold's test images as the experiment recorded them, at the model's scale."""
    table = Predictions.from_csv(experiment / f"fold{fold}" / "predictions" / "hybrid.csv")
    scale, _ = prediction_scale(read_model_info(model), None, model)
    return [
        ImageRecord(path=Path(p), label=table.classes[y], patient_id=pid, microns_per_pixel=scale, source="test")
        for p, y, pid in zip(table.paths, table.labels, table.patient_ids)
    ]


def evaluate(model: Path, records: list[ImageRecord], data: Path, work: Path, args) -> dict[str, float]:
    """Accuracies and agreement of PyTorch, ORT FP32, ORT INT8 and INT8 with the global branch FP32 on one fold."""
    test_ids = {r.image_id for r in records}
    calibration = [p for p in collect_images([data]) if p.stem not in test_ids]
    fp32, int8, mixed = work / "fp32", work / "int8", work / "int8_global_fp32"
    if not fp32.exists():
        export_onnx(model, fp32)
    if not int8.exists():
        quantize_exported(fp32, calibration, int8, max_images=args.calibration_images)
    if not mixed.exists():
        quantize_exported(fp32, calibration, mixed, max_images=args.calibration_images, keep_fp32=["global"])
    info = read_model_info(model)
    torch_pred = next(iter(get_pipeline(info["pipeline"]).predict_records(model, records, device="cpu").values()))
    ort = {
        name: next(iter(predict_exported(f, records, threads=args.threads).values()))
        for name, f in (("fp32", fp32), ("int8", int8), ("mixed", mixed))
    }
    labels = torch_pred.labels
    parity = json.loads((fp32 / EXPORT_JSON).read_text())["parity"]["max_abs_difference"]
    return {
        "parity": max(parity.values()),
        "torch": float((torch_pred.predicted == labels).mean()),
        "fp32": float((ort["fp32"].predicted == labels).mean()),
        "int8": float((ort["int8"].predicted == labels).mean()),
        "fp32_same": float((ort["fp32"].predicted == torch_pred.predicted).mean()),
        "int8_same": float((ort["int8"].predicted == torch_pred.predicted).mean()),
        "mixed": float((ort["mixed"].predicted == labels).mean()),
        "mixed_same": float((ort["mixed"].predicted == torch_pred.predicted).mean()),
        "fp32_diff": float(np.abs(ort["fp32"].probs - torch_pred.probs).max()),
        "images": float(len(records)),
    }


def main(argv: list[str] | None = None) -> str:
    args = _parse(argv)
    torch.set_num_threads(args.threads)
    variants = dict(v.rpartition("=")[::2] for v in args.variant) or {
        "unpruned": str(args.experiment / "fold{fold}" / "model")
    }
    rows = {}
    for label, template in variants.items():
        per_fold = []
        for fold in args.folds:
            model = Path(template.format(fold=fold))
            work = args.work / label.replace(" ", "_").replace("=", "") / f"fold{fold}"
            work.mkdir(parents=True, exist_ok=True)
            result = evaluate(model, fold_test_records(args.experiment, fold, model), args.data, work, args)
            print(label, fold, result, flush=True)
            per_fold.append(result)
        rows[label] = per_fold
    lines = [
        "## Deployment accuracy on real BACH (`benchmarks/bench_deploy_accuracy.py`)",
        "",
        f"Machine: {machine_info()}; {today()}. Binary task, folds {', '.join(map(str, args.folds))} of "
        f"`{args.experiment}` (each fold's test images); INT8 calibrated on up to {args.calibration_images} of "
        "the fold's training images. Accuracy: image level, mean over the folds (per fold in brackets).",
        "",
        "| model | PyTorch FP32 | ORT FP32 | ORT INT8 | INT8 loss (points) | INT8, global FP32 (`--fp32 global`) | its loss (points) | FP32 calls = PyTorch | INT8 calls = PyTorch | INT8 (global FP32) calls = PyTorch | max FP32 prob diff (images) | export parity check |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for label, folds in rows.items():

        def mean(key: str, folds=folds) -> float:
            return statistics.mean(f[key] for f in folds)

        def each(key: str, folds=folds) -> str:
            return ", ".join(f"{f[key]:.3f}" for f in folds)

        lines.append(
            f"| {label} | {mean('torch'):.3f} ({each('torch')}) | {mean('fp32'):.3f} | {mean('int8'):.3f} ({each('int8')}) | "
            f"{100 * (mean('torch') - mean('int8')):.1f} | {mean('mixed'):.3f} ({each('mixed')}) | "
            f"{100 * (mean('torch') - mean('mixed')):.1f} | {mean('fp32_same'):.1%} | {mean('int8_same'):.1%} | "
            f"{mean('mixed_same'):.1%} | "
            f"{max(f['fp32_diff'] for f in folds):.1e} | {max(f['parity'] for f in folds):.1e} |"
        )
    markdown = "\n".join(lines)
    print(markdown)
    if not args.no_write:
        write_section("deploy_accuracy", markdown)
    return markdown


if __name__ == "__main__":
    main()
