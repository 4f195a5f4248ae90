"""Accuracy of the deployed models on real BACH folds: PyTorch vs ORT FP32 vs ORT INT8 (section ``deploy_accuracy``).

For every variant (a model folder per fold: the trained fold models, their O = 0.5 prunes, a System B
or baseline experiment's fold models...) and fold: the fold's test images (from the experiment's
``fold<k>/predictions``, its headline method) predicted by the PyTorch pipeline, by the ONNX export
(``export_onnx``, parity checked) and by its INT8 version (``quantize_exported``, calibrated on up to
``--calibration-images`` of the fold's other images, i.e. its training images), and, for System A, by
the INT8 version that keeps the global branch FP32 (``--fp32 global``). Reports each engine's image
accuracy on the headline method, the ORT calls identical to PyTorch's, the largest FP32 probability
difference, and the mean INT8 accuracy loss over the folds (the issue's bar: at most 1 point).

    python -m benchmarks.bench_deploy_accuracy --experiment /work/runs/real/bach_binary_cpu \\
        --variant unpruned=/work/runs/real/bach_binary_cpu/fold{fold}/model \\
        --variant "O = 0.5 --internal=/work/runs/real/prune_internal/fold{fold}" --work /work/runs/deploy/acc
    python -m benchmarks.bench_deploy_accuracy --experiment /work/runs/real/sysb_frozen \
        --variant "System B frozen=/work/runs/real/sysb_frozen/fold{fold}/model" --work /work/runs/deploy/acc \
        --section deploy_accuracy_other
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
from histobreast.pipelines.bagging import is_ensemble_folder, predict_ensemble, read_ensemble_folder
from histobreast.pipelines.fold_predictions import FoldPredictions, read_fold_predictions
from histobreast.pipelines.input_range import prediction_scale
from histobreast.pipelines.package import read_model_info
from histobreast.runtime.folder import EXPORT_JSON
from histobreast.runtime.predict import predict_exported


def _parse(argv: list[str] | None):
    parser = benchmark_parser(__doc__)
    parser.add_argument(
        "--experiment", type=Path, help="experiment folder with fold<k>/predictions (for template variants)"
    )
    parser.add_argument(
        "--variant",
        action="append",
        default=[],
        help="LABEL=MODEL_FOLDER_TEMPLATE with {fold} (test images from --experiment), or LABEL=EXPERIMENT "
        "(its own fold models and test images); split at the last = (default: unpruned=EXPERIMENT)",
    )
    parser.add_argument("--folds", type=int, nargs="+", default=[1, 2, 3, 4, 5])
    parser.add_argument("--data", type=Path, default=Path("../shared/data/bach"), help="the images' dataset folder")
    parser.add_argument("--work", type=Path, required=True, help="where exports are kept (re-used when present)")
    parser.add_argument("--calibration-images", type=int, default=64)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--section", default="deploy_accuracy", help="BENCHMARKS.md section to write")
    return parser.parse_args(argv)


def fold_test_records(saved: FoldPredictions, fold: int, model: Path) -> tuple[str, list[ImageRecord]]:
    """The headline method of an experiment's saved predictions (``read_fold_predictions``) and the fold's
    test images as it recorded them, at the model's scale."""
    method, table = next(iter(saved[fold].items()))
    single = read_ensemble_folder(model).members[0] if is_ensemble_folder(model) else model  # members share it
    scale, _ = prediction_scale(read_model_info(single), None, single)
    return method, [
        ImageRecord(path=Path(p), label=table.classes[y], patient_id=pid, microns_per_pixel=scale, source="test")
        for p, y, pid in zip(table.paths, table.labels, table.patient_ids)
    ]


def _parity(folder: Path) -> float:
    """The largest difference the export's own parity check measured (over an ensemble's members)."""
    manifest = json.loads((folder / EXPORT_JSON).read_text())
    if manifest["kind"] == "ensemble":
        return max(_parity(folder / m["folder"]) for m in manifest["members"])
    return max(manifest["parity"]["max_abs_difference"].values())


def _has_global_branch(folder: Path) -> bool:
    manifest = json.loads((folder / EXPORT_JSON).read_text())
    if manifest["kind"] == "ensemble":
        return all(_has_global_branch(folder / m["folder"]) for m in manifest["members"])
    return any(n.get("role") == "global" for n in manifest["networks"])


def evaluate(model: Path, method: str, records: list[ImageRecord], data: Path, work: Path, args) -> dict[str, float]:
    """Accuracies and agreement of PyTorch, ORT FP32, ORT INT8 (and, for System A, INT8 with the global
    branch FP32) on one fold's ``method``."""
    test_ids = {r.image_id for r in records}
    calibration = [p for p in collect_images([data]) if p.stem not in test_ids]
    engines = {"fp32": work / "fp32", "int8": work / "int8"}
    if not engines["fp32"].exists():
        export_onnx(model, engines["fp32"])
    if not engines["int8"].exists():
        quantize_exported(engines["fp32"], calibration, engines["int8"], max_images=args.calibration_images)
    if _has_global_branch(engines["fp32"]):
        engines["mixed"] = work / "int8_global_fp32"
        if not engines["mixed"].exists():
            quantize_exported(
                engines["fp32"], calibration, engines["mixed"], max_images=args.calibration_images, keep_fp32=["global"]
            )
    if is_ensemble_folder(model):  # its vote: the experiment's headline (e.g. Spanhol's max_fusion)
        voted = predict_ensemble(model, records, device="cpu")
        torch_methods, method = {"ensemble": voted.ensemble, **voted.members}, "ensemble"
    else:
        torch_methods = get_pipeline(read_model_info(model)["pipeline"]).predict_records(model, records, device="cpu")
    torch_pred = torch_methods[method]
    ort_methods = {name: predict_exported(f, records, threads=args.threads) for name, f in engines.items()}
    ort = {name: methods[method] for name, methods in ort_methods.items()}
    labels = torch_pred.labels
    result = {
        "parity": _parity(engines["fp32"]),
        "torch": float((torch_pred.predicted == labels).mean()),
        # over every method both engines give (System B's per-view table as well as its vote shares)
        "fp32_diff": max(
            float(np.abs(ort_methods["fp32"][m].probs - p.probs).max())
            for m, p in torch_methods.items()
            if m in ort_methods["fp32"]
        ),
        "images": float(len(records)),
    }
    for name, pred in ort.items():
        result[name] = float((pred.predicted == labels).mean())
        result[f"{name}_same"] = float((pred.predicted == torch_pred.predicted).mean())
    return result


def main(argv: list[str] | None = None) -> str:
    args = _parse(argv)
    torch.set_num_threads(args.threads)
    variants = dict(v.rpartition("=")[::2] for v in args.variant) or {"unpruned": str(args.experiment)}
    rows, tasks = {}, {}
    for label, template in variants.items():
        experiment = Path(template) if "{fold}" not in template else args.experiment
        if "{fold}" not in template:
            template = str(Path(template) / "fold{fold}" / "model")
        saved, per_fold = read_fold_predictions(experiment), []
        for fold in args.folds:
            model = Path(template.format(fold=fold))
            work = args.work / label.replace(" ", "_").replace("=", "") / f"fold{fold}"
            work.mkdir(parents=True, exist_ok=True)
            method, records = fold_test_records(saved, fold, model)
            result = evaluate(model, method, records, args.data, work, args)
            print(label, fold, method, result, flush=True)
            per_fold.append(result)
        rows[label] = per_fold
        tasks[label] = f"{len({r.label for r in records})} classes, `{method}`"
    lines = [
        "## Deployment accuracy on real BACH (`benchmarks/bench_deploy_accuracy.py`)",
        "",
        f"Machine: {machine_info()}; {today()}. Folds {', '.join(map(str, args.folds))} of each experiment "
        f"({', '.join(f'`{v}`' for v in variants.values())}; each fold's test images, the experiment's headline "
        f"method); INT8 calibrated on up to {args.calibration_images} of the fold's training images. Accuracy: "
        "image level, mean over the folds (per fold in brackets). The global-FP32 INT8 columns apply to System A only.",
        "",
        "| model | task | PyTorch FP32 | ORT FP32 | ORT INT8 | INT8 loss (points) | INT8, global FP32 (`--fp32 global`) | its loss (points) | FP32 calls = PyTorch | INT8 calls = PyTorch | INT8 (global FP32) calls = PyTorch | max FP32 prob diff (images, every method) | export parity check |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for label, folds in rows.items():

        def mean(key: str, folds=folds) -> float:
            return statistics.mean(f[key] for f in folds)

        def each(key: str, folds=folds) -> str:
            return ", ".join(f"{f[key]:.3f}" for f in folds)

        mixed = "mixed" in folds[0]
        lines.append(
            f"| {label} | {tasks[label]} | {mean('torch'):.3f} ({each('torch')}) | {mean('fp32'):.3f} | "
            f"{mean('int8'):.3f} ({each('int8')}) | {100 * (mean('torch') - mean('int8')):.1f} | "
            + (
                f"{mean('mixed'):.3f} ({each('mixed')}) | {100 * (mean('torch') - mean('mixed')):.1f} | "
                if mixed
                else "– | – | "
            )
            + f"{mean('fp32_same'):.1%} | {mean('int8_same'):.1%} | "
            + (f"{mean('mixed_same'):.1%} | " if mixed else "– | ")
            + f"{max(f['fp32_diff'] for f in folds):.1e} | {max(f['parity'] for f in folds):.1e} |"
        )
    markdown = "\n".join(lines)
    print(markdown)
    if not args.no_write:
        write_section(args.section, markdown)
    return markdown


if __name__ == "__main__":
    main()
