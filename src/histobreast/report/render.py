"""The report writer: a :class:`Report` collects headings, text, tables and figures, then writes
``report.md``, ``report.html`` (self-contained, figures linked relatively from ``figures/``)
and ``metrics.json`` into one folder, all atomically.

Every report starts with the run header (dataset, split, model, config, date, machine and the
command that regenerates it) and ends with a one-line meaning of every metric it shows, so a
pathologist can read it without the papers.
"""

from __future__ import annotations

import datetime as _dt
import html
import os
import platform
import re
import shlex
import sys
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from histobreast.atomic import atomic_write_bytes, atomic_write_json, atomic_write_text
from histobreast.config import to_jsonable
from histobreast.errors import HistobreastError
from histobreast.metrics import METRIC_INFO, roc_curves
from histobreast.predictions import Predictions
from histobreast.report.plots import plot_confusion_matrix, plot_per_class_scores, plot_roc_curves
from histobreast.report.tables import Table, confusion_table, per_class_table, results_table

# Metrics in the one-row summary of an evaluation (precision equals PPV and is left out).
SUMMARY_METRICS = ("image_level_accuracy", "patient_level_accuracy", "kappa", "ppv", "recall", "f1", "auc")

NOTATION = (
    "0.912 ± 0.013: mean ± standard deviation over cross-validation folds.",
    "0.912 (0.880–0.940): estimate with its 95% bootstrap confidence interval (patients resampled).",
    "–: undefined for this data (e.g. a class absent from the test images) or not measured.",
)

_CSS = """
body { font-family: -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; max-width: 1100px;
       margin: 2em auto; padding: 0 1em; color: #1d1d1f; line-height: 1.45; }
h1 { border-bottom: 2px solid #7a2048; padding-bottom: .2em; }
h2 { color: #7a2048; margin-top: 1.8em; }
table { border-collapse: collapse; margin: 1em 0; font-size: .92em; }
caption { font-weight: 600; text-align: left; padding-bottom: .3em; }
th, td { border: 1px solid #c9c9d1; padding: .3em .6em; text-align: left; }
th { background: #f3eef3; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
p.caption, figcaption { color: #555; font-size: .9em; }
figure { margin: 1.2em 0; }
figure img { max-width: 100%; border: 1px solid #ddd; }
code { background: #f4f4f6; padding: 0 .25em; }
""".strip()


def describe_machine() -> str:
    """One line naming this machine: host, OS, CPU count, accelerator, Python and torch (or, for a report of
    the torch-free runtime, which loaded onnxruntime and not torch, onnxruntime: torch is not imported then)."""
    host = f"{platform.node()} ({platform.system()} {platform.release()}), {os.cpu_count()} CPUs"
    ort = sys.modules.get("onnxruntime")
    if "torch" not in sys.modules and ort is not None:
        return f"{host}; Python {platform.python_version()}, onnxruntime {ort.__version__} (no torch)"
    import torch

    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return f"{host}, {gpu}; Python {platform.python_version()}, torch {torch.__version__}"


def current_command() -> str:
    """The command line of this process, as a shell would re-run it."""
    return shlex.join([Path(sys.argv[0]).name, *sys.argv[1:]]) if sys.argv and sys.argv[0] else ""


@dataclass(frozen=True)
class RunInfo:
    """The header of a report: what was evaluated, where, when, and how to regenerate it."""

    dataset: str
    split: str
    model: str
    config: str
    command: str = field(default_factory=current_command)
    date: str = field(default_factory=lambda: _dt.datetime.now().astimezone().isoformat(timespec="seconds"))
    machine: str = field(default_factory=describe_machine)

    def rows(self) -> list[tuple[str, str]]:
        """(label, value) pairs in display order."""
        return [
            ("Dataset", self.dataset),
            ("Split / fold", self.split),
            ("Model", self.model),
            ("Config", self.config),
            ("Date", self.date),
            ("Machine", self.machine),
            ("Command to regenerate", self.command),
        ]


@dataclass(frozen=True)
class _Heading:
    text: str
    level: int = 2

    def to_markdown(self) -> str:
        return f"{'#' * self.level} {self.text}\n"

    def to_html(self) -> str:
        return f"<h{self.level}>{html.escape(self.text)}</h{self.level}>\n"


@dataclass(frozen=True)
class _Paragraph:
    text: str

    def to_markdown(self) -> str:
        return self.text + "\n"

    def to_html(self) -> str:
        return f"<p>{html.escape(self.text)}</p>\n"


@dataclass(frozen=True)
class _Bullets:
    items: tuple[str, ...]

    def to_markdown(self) -> str:
        return "".join(f"- {item}\n" for item in self.items)

    def to_html(self) -> str:
        return "<ul>\n" + "".join(f"<li>{html.escape(item)}</li>\n" for item in self.items) + "</ul>\n"


@dataclass(frozen=True)
class _Figure:
    rel_path: str
    caption: str

    def to_markdown(self) -> str:
        return f"![{self.caption}]({self.rel_path})\n\n_{self.caption}_\n"

    def to_html(self) -> str:
        src, cap = html.escape(self.rel_path, quote=True), html.escape(self.caption)
        return f'<figure><img src="{src}" alt="{cap}"><figcaption>{cap}</figcaption></figure>\n'


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", text.lower()).strip("_") or "section"


class Report:
    """Builder of one report folder: ``add_*`` calls in reading order, then :meth:`write`.

    >>> report = Report("runs/x/report", "Hybrid model on BreaKHis", RunInfo("BreaKHis", "fold 1", "hybrid", "zhu2019.yaml"))
    >>> report.add_evaluation("Test set", evaluate_predictions(pred), pred).write()  # doctest: +SKIP
    """

    def __init__(self, out_dir: str | Path, title: str, run: RunInfo, intro: str = "") -> None:
        self.out_dir = Path(out_dir)
        self.title = title
        self.run = run
        self.intro = intro
        self._blocks: list[Any] = []
        self._tables: list[Table] = []
        self._figures: list[dict[str, str]] = []
        self._results: dict[str, Any] = {}

    def figure_path(self, name: str) -> Path:
        """Where a figure of this report should be written (``<out_dir>/figures/<name>``)."""
        return self.out_dir / "figures" / name

    def add_heading(self, text: str, level: int = 2) -> Report:
        """Start a section."""
        self._blocks.append(_Heading(text, level))
        return self

    def add_text(self, text: str) -> Report:
        """A paragraph of plain text."""
        self._blocks.append(_Paragraph(text))
        return self

    def add_bullets(self, items: Sequence[str]) -> Report:
        """A bulleted list of plain-text items."""
        self._blocks.append(_Bullets(tuple(items)))
        return self

    def add_table(self, table: Table) -> Report:
        """A table (also saved, unformatted, in metrics.json)."""
        self._blocks.append(table)
        self._tables.append(table)
        return self

    def add_figure(self, path: str | Path, caption: str) -> Report:
        """A PNG; one outside the report folder is copied into ``figures/`` so the folder is
        self-contained."""
        path = Path(path)
        if not path.is_file():
            raise HistobreastError(f"{path}: figure file not found")
        try:
            rel = path.resolve().relative_to(self.out_dir.resolve())
        except ValueError:
            dest = self.figure_path(path.name)
            atomic_write_bytes(dest, path.read_bytes())
            rel = dest.relative_to(self.out_dir)
        self._blocks.append(_Figure(rel.as_posix(), caption))
        self._figures.append({"path": rel.as_posix(), "caption": caption})
        return self

    def add_metrics(self, name: str, data: Any) -> Report:
        """Store ``data`` (e.g. an evaluation dict) under ``results[name]`` in metrics.json."""
        if name in self._results:
            raise ValueError(f"metrics {name!r} already added to this report")
        self._results[name] = data
        return self

    def add_evaluation(
        self, name: str, evaluation: Mapping[str, Any], predictions: Predictions | None = None
    ) -> Report:
        """A full section for one ``metrics.evaluate_predictions`` result: class counts, summary
        table, per-class table and bar chart, confusion matrix table and figure, ROC curves (when
        ``predictions`` are given) and the notes on undefined values."""
        slug = _slug(name)
        counts = ", ".join(f"{c} {n}" for c, n in evaluation["class_counts"].items())
        self.add_heading(name)
        self.add_text(
            f"{evaluation['n_images']} test images from {evaluation['n_patients']} patients "
            f"(images per true class: {counts}). PPV, recall, F1 and AUC: {evaluation['averaging']}."
        )
        self.add_table(results_table({name: evaluation}, SUMMARY_METRICS, f"{name}: summary", row_header="Test set"))
        self.add_table(per_class_table(evaluation, f"{name}: per class"))
        self.add_figure(
            plot_per_class_scores(evaluation["per_class"], self.figure_path(f"{slug}_per_class.png")),
            f"{name}: precision, recall and F1 per class.",
        )
        self.add_table(confusion_table(evaluation, f"{name}: confusion matrix"))
        self.add_figure(
            plot_confusion_matrix(
                evaluation["confusion_matrix"], evaluation["classes"], self.figure_path(f"{slug}_confusion.png")
            ),
            f"{name}: confusion matrix, counts and share of each true class.",
        )
        if predictions is not None:
            curves = roc_curves(predictions, evaluation["positive_class"])
            self.add_figure(
                plot_roc_curves(curves, self.figure_path(f"{slug}_roc.png"), f"{name}: ROC"),
                f"{name}: ROC curves ({', '.join(curves)}).",
            )
        if evaluation["notes"]:
            self.add_text("Undefined values (shown as –):")
            self.add_bullets(evaluation["notes"])
        return self.add_metrics(name, evaluation)

    def _glossary(self) -> list[str]:
        shown = dict.fromkeys(m for t in self._tables for m in t.metrics_shown())
        return [f"{METRIC_INFO[m][0]}: {METRIC_INFO[m][1]}." for m in shown if m in METRIC_INFO] + list(NOTATION)

    def to_markdown(self) -> str:
        """The whole report as Markdown."""
        parts = [
            f"# {self.title}\n",
            "| | |\n| --- | --- |\n"
            + "".join(
                f"| {label} | {f'`{value}`' if label.startswith('Command') else value} |\n"
                for label, value in self.run.rows()
            ),
        ]
        if self.intro:
            parts.append(self.intro + "\n")
        parts += [block.to_markdown() for block in self._blocks]
        parts += ["## What the numbers mean\n", _Bullets(tuple(self._glossary())).to_markdown()]
        return "\n".join(parts)

    def to_html(self) -> str:
        """The whole report as one HTML page with inline CSS."""
        esc = html.escape
        run_rows = "".join(
            f"<tr><th>{esc(label)}</th><td>{f'<code>{esc(value)}</code>' if label.startswith('Command') else esc(value)}</td></tr>\n"
            for label, value in self.run.rows()
        )
        body = [f"<h1>{esc(self.title)}</h1>\n", f'<table class="run">\n{run_rows}</table>\n']
        if self.intro:
            body.append(_Paragraph(self.intro).to_html())
        body += [block.to_html() for block in self._blocks]
        body += [_Heading("What the numbers mean").to_html(), _Bullets(tuple(self._glossary())).to_html()]
        return (
            f'<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n<title>{esc(self.title)}</title>\n'
            f"<style>\n{_CSS}\n</style>\n</head>\n<body>\n{''.join(body)}</body>\n</html>\n"
        )

    def to_json(self) -> dict[str, Any]:
        """What metrics.json holds: title, run header, results, tables (raw rows) and figures."""
        return to_jsonable(
            {
                "title": self.title,
                "run": asdict(self.run),
                "results": self._results,
                "tables": [t.to_dict() for t in self._tables],
                "figures": self._figures,
            }
        )

    def write(self) -> dict[str, Path]:
        """Write report.md, report.html and metrics.json into the report folder (atomically)."""
        return {
            "markdown": atomic_write_text(self.out_dir / "report.md", self.to_markdown()),
            "html": atomic_write_text(self.out_dir / "report.html", self.to_html()),
            "metrics": atomic_write_json(self.out_dir / "metrics.json", self.to_json()),
        }
