"""Record finished real-data experiments (``histobreast train`` folders) in BENCHMARKS.md.

Not a timing benchmark: training on the real BACH copies takes most of an hour on the 2-core CPU,
so the runs are made with ``histobreast train`` (the commands are listed in the section) and this
script only reads their saved reports, so the numbers in BENCHMARKS.md are exactly those runs'.

    python -m benchmarks.real_data [RUN_DIR ...] [--no-write]

With no folders it records the standard ones under ``runs/`` (those missing are listed as not run).
Writes the ``real_bach`` section of BENCHMARKS.md.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from benchmarks.common import benchmark_parser, write_section

# (run folder, what it is); each folder's config.yaml and report/metrics.json say the rest.
STANDARD_RUNS = [
    ("runs/bach_binary_cpu", "System A hybrid (GoogLeNet-SEP, global + 15 patches), binary"),
    ("runs/resnet18_bach_binary_cpu", "ResNet18 baseline, binary"),
    ("runs/resnet18_bach4_cpu", "ResNet18 baseline, 4 classes"),
]
METRICS = ("image_level_accuracy", "kappa", "auc")


def _mean_std(summary: dict[str, Any], metric: str) -> str:
    entry = summary["metrics"].get(f"metrics/{metric}")
    if entry is None or entry["mean"] is None or math.isnan(entry["mean"]):
        return "–"
    std = entry.get("std")
    return f"{entry['mean']:.3f}" + ("" if std is None or math.isnan(std) else f" ± {std:.3f}")


def run_rows(run_dir: Path, label: str) -> tuple[list[str], str]:
    """Table rows (one per evaluation method) and a note with the command, date and machine."""
    metrics = json.loads((run_dir / "report" / "metrics.json").read_text())
    results, run = metrics["results"], metrics["run"]
    rows = []
    for i, (method, summary) in enumerate(results["summary"].items()):
        name = f"{label}" if i == 0 else f"  same run, method `{method}`"
        folds = summary.get("n_folds", "?")
        cells = " | ".join(_mean_std(summary, m) for m in METRICS)
        rows.append(f"| {name} | `{method}` | {folds} | {cells} |")
    note = f"- `{run_dir}`: `{run['command']}` — config `{run['config']}`, finished {run['date']}, {run['machine']}."
    return rows, note


def render(runs: list[tuple[Path, str]]) -> str:
    lines = [
        "| model | method | folds | image-level accuracy | Cohen's kappa | AUC |",
        "| --- | --- | ---: | ---: | ---: | ---: |",
    ]
    notes, missing = [], []
    for run_dir, label in runs:
        if not (run_dir / "report" / "metrics.json").is_file():
            missing.append(f"- `{run_dir}` ({label}): not run yet")
            continue
        rows, note = run_rows(run_dir, label)
        lines += rows
        notes.append(note)
    return "\n".join(lines + [""] + notes + missing)


def main(argv: list[str] | None = None) -> int:
    parser = benchmark_parser(__doc__)
    parser.add_argument("runs", nargs="*", type=Path, help="experiment folders (default: the standard runs)")
    args = parser.parse_args(argv)
    runs = [(p, p.name) for p in args.runs] or [(Path(p), label) for p, label in STANDARD_RUNS]
    text = (
        "## Real BACH microscopy images (268 shared copies, 1024x768 at 0.84 µm/px)\n\n"
        "5-fold cross-validation over contiguous image-number ranges per class (neighbouring BACH images "
        "come from one patient; never a random split), trained from scratch on the 2-core CPU with the "
        "`*_cpu.yaml` schedules, not tuned on these numbers. Mean ± std over the folds' test sets.\n\n" + render(runs)
    )
    print(text)
    if not args.no_write:
        write_section("real_bach", text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
