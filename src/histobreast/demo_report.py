"""The demo's one-page summary: a table per stage, the time per stage, links to each stage's own report."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

BREAKHIS_MAGNIFICATION = 200  # the demo config's data.magnification, also named in the summary page


@dataclass
class DemoResult:
    """Where everything went and the headline numbers (image-level accuracy unless named)."""

    out_dir: Path
    report_dir: Path
    prune_ratio: float  # O of the pruning stage
    numbers: dict[str, Any] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)


def write_demo_report(result: DemoResult, chance: dict[str, float]) -> dict[str, Path]:
    """The one-page summary of the demo: a table per stage and links to the stages' own reports."""
    from histobreast.report import Column, Report, RunInfo, Table

    numbers = result.numbers
    report = Report(
        result.report_dir,
        "histobreast demo (synthetic data)",
        RunInfo(
            f"synthetic BreaKHis {BREAKHIS_MAGNIFICATION}X, BACH trees",
            "see each stage",
            "System A, System B",
            "configs/demo/*.yaml",
        ),
        intro="Toy-sized versions of both systems on synthetic H&E images; the numbers show the "
        "machinery works end to end, not how well it does on real tissue (see BENCHMARKS.md).",
    )
    accuracy_rows = [
        {"stage": f"System A, method {key.split('/', 1)[1]}", "accuracy": value}
        for key, value in numbers.items()
        if key.startswith("system_a/")
    ]
    accuracy_rows += [
        {"stage": f"System B, {key.split('/', 1)[1]} level", "accuracy": value}
        for key, value in numbers.items()
        if key.startswith("system_b/")
    ]
    accuracy_rows.append(
        {
            "stage": f"Ensemble of {len(numbers['ensemble/members'])} (sum rule), fold 1",
            "accuracy": numbers["ensemble/sum"],
        }
    )
    accuracy_rows += [
        {"stage": f"  member {name}, fold 1", "accuracy": acc} for name, acc in numbers["ensemble/members"].items()
    ]
    report.add_table(
        Table(
            "Image-level accuracy",
            [Column("stage", "Stage"), Column("accuracy", "Accuracy")],
            accuracy_rows,
            caption=f"Mean ± std over folds where several. Chance: System A "
            f"{chance['system_a']:.2f} (2 classes), System B {chance['system_b']:.2f}.",
        )
    )
    cost_columns = [
        Column("model", "Model"),
        Column("params", "Parameters", fmt=",.0f"),
        Column("macs", "MACs", fmt=",.0f"),
        Column("latency_ms", "CPU latency (ms)", fmt=".1f"),
        Column("accuracy", "Accuracy (fold 1)"),
    ]
    cost_rows = [{"model": name, **numbers[f"compression/{name}"]} for name in ("unpruned", "pruned")]
    report.add_table(
        Table(
            f"SEP channel pruning, O = {result.prune_ratio}",
            cost_columns,
            cost_rows,
            caption="Hybrid model (global + 15 patches) on one image; latency measured on this machine.",
        )
    )
    report.add_heading("Each stage's own report")
    report.add_bullets(
        [
            "System A: `system_a/report/report.md` (Tables 2-4 layout, ROC, confusion matrices)",
            "Pruning: `pruned/` (importance before/after, Fig. 11)",
            "Ensemble: `ensemble/evaluation/report/report.md` (members beside the ensemble, uncertainty)",
            f"Case review: `review/report.html` (a card per test image, least certain first; "
            f"{numbers.get('review/flagged', 0)} of {numbers.get('review/images', 0)} flagged for a second look)",
            "System B: `system_b/report/report.md` (view and image level, confusion matrix)",
            f"Slide: `slide/{numbers['slide']['summary']}` (a synthetic slide's heatmaps and QuPath GeoJSON)"
            if "slide" in numbers
            else "Slide: not run",
        ]
    )
    report.add_table(
        Table(
            "Time per stage",
            [Column("stage", "Stage"), Column("seconds", "Seconds", fmt=".0f")],
            [{"stage": k, "seconds": v} for k, v in result.seconds.items()],
        )
    )
    report.add_metrics("demo", {"numbers": numbers, "seconds": result.seconds})
    return report.write()
