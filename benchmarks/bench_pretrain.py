"""Record self-supervised pre-training on real BACH, its probes and the models started from it, in BENCHMARKS.md.

Not a timing benchmark: the encoders are made with ``histobreast pretrain`` (one per fold), the
probes with ``histobreast pretrain probe --out DIR`` and the downstream models with ``histobreast
train`` (commands in the section); this script reads their ``pretrain.json``, probe folders and
experiment folders, so every number in BENCHMARKS.md is exactly those runs'.

    python -m benchmarks.bench_pretrain --runs 'runs/pretrain/simclr_resnet18_bach_fold{fold}' \\
        --probe runs/probe/simclr --random-probe runs/probe/random \\
        --experiment "System B frozen, SSL start=runs/sysb_frozen_ssl" \\
        --experiment "ResNet18 baseline=runs/resnet18_bach4_cpu" \\
        --margin-target "System B frozen, SSL start:ResNet18 baseline" \\
        [--pair "ResNet18, SSL start:ResNet18 baseline"] \\
        [--runs 'runs/pretrain/simclr_googlenet_sep_bach_fold{fold}' --experiment "System A, SSL start=..." \\
         --probe runs/probe/googlenet_sep --random-probe runs/probe/random_googlenet_sep \\
         --target "System A, SSL start=0.82"] [--not-run "WHAT (WHY)"] [--title TEXT] [--no-write]

The k-th ``--probe`` (and ``--random-probe``) is of the k-th ``--runs`` schedule's encoders.

Writes the ``pretrain`` section (``--section``), with issue 20's targets and whether they are met.
"""

from __future__ import annotations

import json
import shlex
import statistics
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from benchmarks.common import benchmark_parser, machine_info, write_section
from histobreast.errors import DatasetError
from histobreast.metrics import paired_accuracy_difference
from histobreast.pipelines.fold_predictions import FoldPredictions, pooled_test_predictions, read_fold_predictions

LOSS_NAMES = {"simclr": "NT-Xent", "byol": "BYOL (negative cosine)", "dino": "DINO cross-entropy"}
# Issue 20's bars: the linear probe on BACH's 4 classes (random-init frozen: ~0.41 in eva, 0.442 ours);
# System B over the ResNet18 baseline (0.468) by 5 points with a paired CI above zero.
PROBE_TARGET = 0.55
MARGIN_TARGET = 0.05
TITLE = "Self-supervised pre-training on real BACH (`histobreast pretrain`)"


def mean_std(values: Sequence[float]) -> str:
    """``0.412 ± 0.051`` (sample std over the folds)."""
    return f"{statistics.fmean(values):.3f} ± {statistics.stdev(values):.3f}" if len(values) > 1 else f"{values[0]:.3f}"


def folds_mean(n: int) -> str:
    """``5-fold mean``, or ``mean of 4 of the 5 folds`` when a study ran on fewer folds than the protocol's."""
    return "5-fold mean" if n == 5 else f"mean of {n} of the 5 folds"


def fold_accuracies(saved: FoldPredictions) -> dict[int, float]:
    """Each fold's image-level accuracy on its headline method (the first saved)."""
    out = {}
    for fold, methods in saved.items():
        table = next(iter(methods.values()))
        out[fold] = float((table.predicted == table.labels).mean())
    return out


def pretrain_rows(runs: list[tuple[int, dict[str, Any]]]) -> list[str]:
    """One row per fold's pre-training run: images seen, steps, final loss, minutes."""
    rows = ["| fold | images seen | steps | final loss | minutes |", "| ---: | ---: | ---: | ---: | ---: |"]
    for fold, run in runs:
        rows.append(
            f"| {fold} | {len(run['images'])} | {run['steps']} | {run['final_loss']:.3f} | {run['seconds'] / 60:.1f} |"
        )
    return rows


def probe_rows(label: str, probe: dict[str, Any]) -> list[str]:
    """Per-fold probe rows of one probe folder, then its mean ± std."""
    rows = []
    for f in probe["folds"]:
        rows.append(
            f"| {label} | {f['fold']} | {f['train_images']} / {f['test_images']} | {f['knn_accuracy']:.3f} | "
            f"{f['linear_accuracy']:.3f} | {f['linear_balanced_accuracy']:.3f} |"
        )
    columns = ("knn_accuracy", "linear_accuracy", "linear_balanced_accuracy")
    means = " | ".join(mean_std([f[c] for f in probe["folds"]]) for c in columns)
    rows.append(f"| **{label}** | mean ± std | | {means} |")
    return rows


def paired(a: FoldPredictions, b: FoldPredictions, where: str) -> dict[str, Any]:
    """``histobreast compare``'s paired difference of two runs' headline methods over their shared folds."""
    folds = sorted(set(a) & set(b))
    return paired_accuracy_difference(
        pooled_test_predictions(a, None, folds, where), pooled_test_predictions(b, None, folds, where)
    )


def pair_row(label: str, result: dict[str, Any]) -> str:
    return (
        f"| {label} | {result['accuracy_a']:.3f} | {result['accuracy_b']:.3f} | {result['estimate']:+.3f} | "
        f"[{result['low']:+.3f}, {result['high']:+.3f}] | {result['only_a_right']} / {result['only_b_right']} | "
        f"{result['mcnemar_p']:.3g} |"
    )


def encoder_lines(template: str, runs: list[tuple[int, dict[str, Any]]]) -> list[str]:
    """One pre-training schedule's description and its per-fold table."""
    first = runs[0][1]
    train, ssl = first["config"]["train"], first["config"]["pretrain"]
    minutes = [run["seconds"] / 60 for _, run in runs]
    return [
        f"**{first['method']}, {first['encoder']}** (config `configs/pretrain/{first['config']['name']}.yaml`): one "
        f"encoder per fold (`{template}`), each pre-trained on that fold's training images only; {first['steps']} "
        f"steps of batch {train['batch_size']} tiles, {ssl['tile_size']} px tiles of {ssl['tile_microns']} µm, "
        f"{ssl['tiles_per_image']} tiles per image per epoch; {statistics.fmean(minutes):.1f} min per fold"
        + (f" with {first['torch_threads']} torch thread(s)" if "torch_threads" in first else "")
        + f", last finished {max(run.get('finished', '') for _, run in runs)}. "
        f"Final loss: {LOSS_NAMES.get(first['method'], first['method'])}.",
        "",
        *pretrain_rows(runs),
        "",
    ]


def probe_lines(
    runs: list[tuple[int, dict[str, Any]]], probe: dict[str, Any], random_probe: dict[str, Any] | None
) -> list[str]:
    """One schedule's probe table: the pre-trained encoders, then the same network at random init."""
    first = runs[0][1]
    lines = [
        f"### Linear probe and k-NN on the frozen features of `{first['config']['name']}` (4 classes, image level)",
        "",
        "| encoder | fold | train / test images | k-NN accuracy | linear-probe accuracy | linear balanced accuracy |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
        *probe_rows(f"pre-trained ({first['method']})", probe),
    ]
    if random_probe is not None:
        lines += probe_rows("random init (same network, same seed)", random_probe)
    return lines + [""]


def render(
    encoders: list[tuple[str, list[tuple[int, dict[str, Any]]]]],
    probes: list[tuple[dict[str, Any], dict[str, Any] | None, dict[str, Any] | None]],
    experiments: dict[str, tuple[Path, FoldPredictions]],
    pairs: list[tuple[str, str, dict[str, Any]]],
    margin_targets: list[tuple[str, str, dict[str, Any]]],
    targets: dict[str, float],
    not_run: Sequence[str] = (),
    command: str = "",
    title: str = TITLE,
) -> str:
    """The section: schedules, machine and time, the probe tables, the downstream runs and the targets.

    ``probes[k]`` is (probe, random-init probe or None, their paired difference or None) of ``encoders[k]``.
    """
    first = encoders[0][1][0][1]
    probed = [(runs, *probe) for (_, runs), probe in zip(encoders, probes, strict=False)]
    lines = [
        f"## {title}",
        "",
        "Commands: `histobreast pretrain --config CONFIG --data ../shared/data/bach --set data.fold=N --out ...` "
        "for N = 1..5, then `histobreast pretrain probe --config CONFIG --data ../shared/data/bach --weights "
        "'.../fold{fold}/encoder.safetensors' --out DIR` (and without `--weights` for the random-init row), and "
        "`histobreast train` for the models started from the encoders, each with `OMP_NUM_THREADS=1`.",
        f"Machine: {machine_info()}.",
        *([f"This section: `python -m benchmarks.bench_pretrain {command}`."] if command else []),
        "",
    ]
    for template, runs in encoders:
        lines += encoder_lines(template, runs)
    for runs, probe, random_probe, _ in probed:
        lines += probe_lines(runs, probe, random_probe)
    lines += [
        f"Frozen features: the mean pooled vector over up to {first['config']['probe']['max_tiles']} tiles per "
        "image; k-NN (cosine) and logistic regression fitted on each fold's training images, scored on its test "
        "images.",
    ]
    probe_pairs = [
        (f"linear probe of `{runs[0][1]['config']['name']}`: pre-trained vs random init", pair)
        for runs, _, _, pair in probed
        if pair is not None
    ]
    comparisons = probe_pairs + [(f"{a} vs {b}", result) for a, b, result in margin_targets + pairs]
    if experiments:
        lines += [
            "",
            "### Models started from the per-fold encoders, and their comparisons",
            "",
            "| run | folder | fold 1 | fold 2 | fold 3 | fold 4 | fold 5 | mean ± std |",
            "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |",
        ]
        for label, (folder, saved) in experiments.items():
            accuracy = fold_accuracies(saved)
            cells = " | ".join(f"{accuracy[f]:.3f}" if f in accuracy else "" for f in range(1, 6))
            lines.append(f"| {label} | `{folder}` | {cells} | {mean_std(list(accuracy.values()))} |")
    if comparisons:
        lines += [
            "",
            "Paired differences on the same test images (`histobreast compare A B`: patients resampled 1000 times):",
            "",
            "| A vs B | A | B | A - B | 95% interval | only A / only B right | McNemar p |",
            "| --- | ---: | ---: | ---: | --- | ---: | --- |",
            *(pair_row(label, result) for label, result in comparisons),
        ]
    lines += ["", "Issue 20's targets, plainly:"]
    for runs, probe, _, _ in probed:
        linear = statistics.fmean(f["linear_accuracy"] for f in probe["folds"])
        lines.append(
            f"- linear probe of `{runs[0][1]['config']['name']}` >= {PROBE_TARGET:.2f} on 4 classes, "
            f"{folds_mean(len(probe['folds']))}: **{'met' if linear >= PROBE_TARGET else 'not met'}** ({linear:.3f})."
        )
    for a, b, result in margin_targets:
        met = result["estimate"] >= MARGIN_TARGET and result["low"] > 0
        lines.append(
            f"- {a} over {b} by >= {MARGIN_TARGET * 100:.0f} points with a paired interval above zero: "
            f"**{'met' if met else 'not met'}** ({result['estimate']:+.3f}, [{result['low']:+.3f}, {result['high']:+.3f}])."
        )
    for label, bar in targets.items():
        accuracy = fold_accuracies(experiments[label][1])
        mean = statistics.fmean(accuracy.values())
        lines.append(
            f"- {label} >= {bar:.2f} ({folds_mean(len(accuracy))}): **{'met' if mean >= bar else 'not met'}** ({mean:.3f})."
        )
    lines += [f"- {text}: **not run**." for text in not_run]
    return "\n".join(lines)


def labelled_path(text: str, option: str) -> tuple[str, Path]:
    label, sep, path = text.rpartition("=")
    if not sep or not label:
        raise SystemExit(f"{option} {text!r}: expected LABEL=FOLDER")
    return label, Path(path)


def read_probe(folder: Path, option: str) -> dict[str, Any]:
    """A ``pretrain probe --out`` folder's ``probe.json``, or one line naming the missing file."""
    record = folder / "probe.json"
    if not record.is_file():
        raise SystemExit(f"{option} {folder}: no {record.name} (a `histobreast pretrain probe --out` folder)")
    return json.loads(record.read_text())


def read_run(folder: Path, option: str) -> FoldPredictions:
    """An experiment or probe folder's saved test predictions, or one line naming the folder."""
    try:
        return read_fold_predictions(folder)
    except DatasetError as error:
        raise SystemExit(f"{option} {error}") from None


def compared(
    experiments: dict[str, tuple[Path, FoldPredictions]], text: str, option: str
) -> tuple[str, str, dict[str, Any]]:
    """``LABEL_A:LABEL_B`` → the two labels and their paired difference."""
    a, sep, b = text.partition(":")
    if not sep or a not in experiments or b not in experiments:
        raise SystemExit(f"{option} {text!r}: expected LABEL_A:LABEL_B, two --experiment labels")
    return a, b, paired(experiments[a][1], experiments[b][1], str(experiments[a][0]))


def main(argv: list[str] | None = None) -> int:
    parser = benchmark_parser(__doc__)
    parser.add_argument(
        "--runs",
        action="append",
        required=True,
        help="the `pretrain --out` folders, with {fold} for the fold number (repeatable, one per schedule)",
    )
    parser.add_argument(
        "--probe",
        type=Path,
        action="append",
        required=True,
        help="`pretrain probe --weights ... --out` folder; the k-th probes the k-th --runs (repeatable)",
    )
    parser.add_argument(
        "--random-probe",
        type=Path,
        action="append",
        default=[],
        help="`pretrain probe --out` folder without --weights, the k-th --probe's network (repeatable)",
    )
    parser.add_argument("--experiment", action="append", default=[], help="LABEL=EXPERIMENT_FOLDER (repeatable)")
    parser.add_argument("--pair", action="append", default=[], help="LABEL_A:LABEL_B, a paired comparison (repeatable)")
    parser.add_argument(
        "--margin-target",
        action="append",
        default=[],
        help=f"LABEL_A:LABEL_B, a paired comparison whose bar is A over B by {MARGIN_TARGET:.2f} (repeatable)",
    )
    parser.add_argument(
        "--target", action="append", default=[], help="LABEL=ACCURACY, an experiment's bar (repeatable)"
    )
    parser.add_argument(
        "--not-run", action="append", default=[], help="a target's study that was not run, and why (repeatable)"
    )
    parser.add_argument("--title", default=TITLE, help="the section's heading")
    parser.add_argument("--section", default="pretrain", help="BENCHMARKS.md section to write")
    args = parser.parse_args(argv)
    encoders = []
    for template in args.runs:
        runs = []
        for fold in range(1, 6):
            record = Path(template.replace("{fold}", str(fold))) / "pretrain.json"
            if record.is_file():
                runs.append((fold, json.loads(record.read_text())))
        if not runs:
            raise SystemExit(f"--runs {template}: no pretrain.json for any fold")
        encoders.append((template, runs))
    if len(args.probe) > len(encoders) or len(args.random_probe) > len(args.probe):
        raise SystemExit("--probe: one per --runs schedule at most, and --random-probe one per --probe at most")
    probes = []
    for k, folder in enumerate(args.probe):
        random_folder = args.random_probe[k] if k < len(args.random_probe) else None
        probes.append(
            (
                read_probe(folder, "--probe"),
                read_probe(random_folder, "--random-probe") if random_folder else None,
                paired(read_run(folder, "--probe"), read_run(random_folder, "--random-probe"), str(folder))
                if random_folder
                else None,
            )
        )
    experiments = {}
    for text in args.experiment:
        label, folder = labelled_path(text, "--experiment")
        experiments[label] = (folder, read_run(folder, "--experiment"))
    pairs = [compared(experiments, text, "--pair") for text in args.pair]
    margin_targets = [compared(experiments, text, "--margin-target") for text in args.margin_target]
    targets = {}
    for text in args.target:
        label, bar = labelled_path(text, "--target")
        if label not in experiments:
            raise SystemExit(f"--target {text!r}: {label!r} is not an --experiment label")
        try:
            targets[label] = float(str(bar))
        except ValueError:
            raise SystemExit(f"--target {text!r}: {str(bar)!r} is not an accuracy") from None
    text = render(
        encoders,
        probes,
        experiments,
        pairs,
        margin_targets,
        targets,
        args.not_run,
        shlex.join(a for a in (sys.argv[1:] if argv is None else argv) if a != "--no-write"),
        args.title,
    )
    print(text)
    if not args.no_write:
        write_section(args.section, text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
