"""Tables in the papers' layouts, rendered to Markdown and HTML from one structure.

A :class:`Table` is a list of row dicts plus a column spec. Cells hold plain values: a float, int,
str, ``None``/NaN (shown as "–"), a fold summary ``{"mean", "std"}`` (shown "0.912 ± 0.013") or
a bootstrap interval ``{"estimate", "low", "high"}`` (shown "0.912 (0.880–0.940)").

The builders accept either one evaluation (``metrics.evaluate_predictions``) or a fold summary
(``metrics.summarise_folds`` of such evaluations) wherever a "result" is expected.
"""

from __future__ import annotations

import html
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from histobreast.metrics import METRIC_INFO

MISSING = "–"
COUNT_FMT = ",.0f"

# Paper A's method numbering in Tables 2-4: 1 global branch, 2 local branch with mean patch
# vote, 3 hybrid; "(Max)" replaces the mean patch vote by the max rule.
PAPER_A_METHODS: dict[str, str] = {
    "global": "1 (global)",
    "local": "2 (local)",
    "hybrid": "3 (hybrid)",
    "local_max": "2 (Max)",
    "hybrid_max": "3 (Max)",
}


@dataclass(frozen=True)
class Column:
    """One column: ``key`` into the row dicts, its ``header``, an optional spanning ``group``
    header (e.g. "40X"), the float format spec, and the metric it shows (for the glossary)."""

    key: str
    header: str
    group: str = ""
    fmt: str = ".3f"
    metric: str | None = None


@dataclass
class Table:
    """Rows (dicts keyed by column keys) under a title, with an optional caption below."""

    title: str
    columns: list[Column]
    rows: list[dict[str, Any]]
    caption: str = ""
    notes: list[str] = field(default_factory=list)

    def cells(self) -> list[list[str]]:
        """Every row's formatted cell strings, in column order."""
        return [[format_cell(row.get(c.key), c.fmt) for c in self.columns] for row in self.rows]

    def numeric_columns(self) -> list[bool]:
        """Per column: whether it holds numbers (right-aligned) rather than text (left-aligned)."""
        return [
            any(not isinstance(row.get(c.key), str) and not _is_missing(row.get(c.key)) for row in self.rows)
            for c in self.columns
        ]

    def to_markdown(self) -> str:
        """A GitHub-flavoured Markdown table (grouped headers become "40X PL")."""

        def md(text: str) -> str:
            return text.replace("|", "\\|")

        headers = [md(f"{c.group} {c.header}".strip()) for c in self.columns]
        lines = [
            f"**{md(self.title)}**",
            "",
            "| " + " | ".join(headers) + " |",
            "|" + "|".join(" ---: " if numeric else " --- " for numeric in self.numeric_columns()) + "|",
        ]
        lines += ["| " + " | ".join(md(v) for v in row) + " |" for row in self.cells()]
        lines += [""] + [f"_{md(line)}_" for line in [self.caption, *self.notes] if line]
        return "\n".join(lines).rstrip() + "\n"

    def to_html(self) -> str:
        """An HTML ``<table>`` with a caption; grouped columns get a spanning header row."""
        esc = html.escape
        parts = [f"<table>\n<caption>{esc(self.title)}</caption>\n<thead>\n"]
        if any(c.group for c in self.columns):
            parts.append("<tr>")
            i = 0
            while i < len(self.columns):
                col = self.columns[i]
                if not col.group:
                    parts.append(f'<th rowspan="2">{esc(col.header)}</th>')
                    i += 1
                    continue
                span = 1
                while i + span < len(self.columns) and self.columns[i + span].group == col.group:
                    span += 1
                parts.append(f'<th colspan="{span}">{esc(col.group)}</th>')
                i += span
            parts.append(
                "</tr>\n<tr>" + "".join(f"<th>{esc(c.header)}</th>" for c in self.columns if c.group) + "</tr>\n"
            )
        else:
            parts.append("<tr>" + "".join(f"<th>{esc(c.header)}</th>" for c in self.columns) + "</tr>\n")
        parts.append("</thead>\n<tbody>\n")
        numeric = self.numeric_columns()
        for row in self.cells():
            parts.append(
                "<tr>"
                + "".join(
                    f'<td class="num">{esc(v)}</td>' if num else f"<td>{esc(v)}</td>" for v, num in zip(row, numeric)
                )
                + "</tr>\n"
            )
        parts.append("</tbody>\n</table>\n")
        parts += [f'<p class="caption">{esc(line)}</p>\n' for line in [self.caption, *self.notes] if line]
        return "".join(parts)

    def to_dict(self) -> dict[str, Any]:
        """The raw data (for metrics.json): title, caption, column spec and unformatted rows."""
        return {
            "title": self.title,
            "caption": self.caption,
            "notes": list(self.notes),
            "columns": [asdict(c) for c in self.columns],
            "rows": self.rows,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Table:
        """The table that :meth:`to_dict` wrote (e.g. read back from a report's metrics.json)."""
        return cls(
            title=data["title"],
            columns=[Column(**c) for c in data["columns"]],
            rows=list(data["rows"]),
            caption=data.get("caption", ""),
            notes=list(data.get("notes", [])),
        )

    def metrics_shown(self) -> list[str]:
        """The metric keys of the columns, in order, without repeats (for the report glossary)."""
        return list(dict.fromkeys(c.metric for c in self.columns if c.metric))


def _is_missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def format_cell(value: Any, fmt: str = ".3f") -> str:
    """Format one cell: numbers with ``fmt`` (counts use ",.0f"), mean ± std, estimate
    (low–high), strings as they are, and "–" for missing or undefined (NaN) values."""
    if _is_missing(value):
        return MISSING
    if isinstance(value, Mapping):
        if "mean" in value:
            mean = format_cell(value["mean"], fmt)
            return mean if _is_missing(value.get("std")) or mean == MISSING else f"{mean} ± {format(value['std'], fmt)}"
        if "estimate" in value:
            return f"{format_cell(value['estimate'], fmt)} ({format_cell(value['low'], fmt)}–{format_cell(value['high'], fmt)})"
        raise ValueError(f"cannot format a table cell from keys {sorted(value)}")
    if isinstance(value, (bool, str)):
        return str(value)
    return format(float(value), fmt)


def result_value(result: Mapping[str, Any], *path: str) -> Any:
    """A value of an evaluation dict (``result["metrics"]["kappa"]``) or the matching
    ``{"mean", "std", ...}`` entry of a fold summary (``result["metrics"]["metrics/kappa"]``)."""
    if "n_folds" in result:
        key = "/".join(path)
        if key not in result["metrics"]:
            raise KeyError(f"fold summary has no metric {key!r}")
        return result["metrics"][key]
    node: Any = result
    for i, part in enumerate(path):
        if not isinstance(node, Mapping) or part not in node:
            raise KeyError(f"evaluation has no entry {'/'.join(path[: i + 1])!r}")
        node = node[part]
    return node


def _metric_header(metric: str) -> str:
    return METRIC_INFO[metric][0] if metric in METRIC_INFO else metric


def results_table(
    results: Mapping[str, Mapping[str, Any]],
    metrics: Sequence[str],
    title: str,
    caption: str = "",
    row_header: str = "Model",
    headers: Mapping[str, str] | None = None,
) -> Table:
    """One row per named result, one column per metric (keys of ``evaluation["metrics"]``);
    ``headers`` overrides a metric's column header."""
    headers = headers or {}
    columns = [Column("name", row_header)] + [Column(m, headers.get(m, _metric_header(m)), metric=m) for m in metrics]
    rows = [{"name": name, **{m: result_value(r, "metrics", m) for m in metrics}} for name, r in results.items()]
    notes = [f"{name}: {note}" for name, r in results.items() for note in r.get("notes", [])]
    return Table(title, columns, rows, caption, notes)


def per_magnification_table(
    results: Mapping[str, Mapping[int | None, Mapping[str, Any]]],
    metrics: Sequence[str],
    title: str,
    caption: str = "",
) -> Table:
    """Paper A's layout: one row per method, a column group per magnification (one group
    without a heading for a dataset without magnifications, e.g. BACH), the ``metrics`` in each.

    ``results[method][magnification]`` is an evaluation or fold summary; a method without a
    magnification shows "–". Method keys of :data:`PAPER_A_METHODS` get the paper's labels.
    The evaluations' notes on undefined values become the table's notes.
    """
    mags = sorted({m for by_mag in results.values() for m in by_mag}, key=lambda m: (m is None, m or 0))
    columns = [Column("method", "Method")]
    for mag in mags:
        group = "" if mag is None else f"{mag}X"
        columns += [Column(f"{mag}/{m}", _metric_header(m), group=group, metric=m) for m in metrics]
    rows, notes = [], []
    for method, by_mag in results.items():
        label = PAPER_A_METHODS.get(method, method)
        row: dict[str, Any] = {"method": label}
        for mag in mags:
            for m in metrics:
                row[f"{mag}/{m}"] = result_value(by_mag[mag], "metrics", m) if mag in by_mag else None
            where = label if mag is None else f"{label}, {mag}X"
            notes += [f"{where}: {note}" for note in by_mag.get(mag, {}).get("notes", [])]
        rows.append(row)
    return Table(title, columns, rows, caption, notes)


def accuracy_table(
    results: Mapping[str, Mapping[int | None, Mapping[str, Any]]], title: str, caption: str = ""
) -> Table:
    """Paper A Tables 2-3 (and 5): patient- and image-level accuracy, kappa and PPV."""
    return per_magnification_table(
        results, ("patient_level_accuracy", "image_level_accuracy", "kappa", "ppv"), title, caption
    )


def f1_table(results: Mapping[str, Mapping[int | None, Mapping[str, Any]]], title: str, caption: str = "") -> Table:
    """Paper A Table 4 (and 6): image-level F1, precision and recall."""
    return per_magnification_table(results, ("f1", "precision", "recall"), title, caption)


def per_class_table(result: Mapping[str, Any], title: str = "Per-class results") -> Table:
    """One row per class: images in the test set, precision, recall, F1 and one-vs-rest AUC
    (paper B, Fig. 7b as numbers)."""
    scores = ("precision", "recall", "f1", "auc")
    columns = [Column("class", "Class"), Column("support", "Images", fmt=COUNT_FMT)] + [
        Column(s, _metric_header(s), metric=s) for s in scores
    ]
    rows = [
        {
            "class": c,
            "support": result_value(result, "per_class", c, "support"),
            **{s: result_value(result, "per_class", c, s) for s in scores},
        }
        for c in result["classes"]
    ]
    return Table(title, columns, rows)


def confusion_table(result: Mapping[str, Any], title: str = "Confusion matrix") -> Table:
    """Counts with true classes as rows and predicted classes as columns (summed over folds for
    a fold summary)."""
    classes = list(result["classes"])
    matrix = result["confusion_matrix"]
    columns = (
        [Column("true", "True \\ predicted")]
        + [Column(c, c, fmt=COUNT_FMT) for c in classes]
        + [Column("total", "Total", fmt=COUNT_FMT)]
    )
    rows = [
        {"true": c, **{p: int(matrix[i][j]) for j, p in enumerate(classes)}, "total": int(sum(matrix[i]))}
        for i, c in enumerate(classes)
    ]
    return Table(title, columns, rows, caption="Rows: the pathologists' label; columns: the model's prediction.")


def ensemble_table(
    members: Mapping[str, Mapping[str, Any]],
    ensemble: Mapping[str, Any],
    rule: str,
    metrics: Sequence[str] = ("image_level_accuracy", "patient_level_accuracy", "kappa", "f1", "auc"),
    title: str = "Ensemble and its members",
) -> Table:
    """Each member beside the ensemble (paper A, Table 9), with the ensemble's gain in
    image-level accuracy over its best member as the caption."""

    def il(result: Mapping[str, Any]) -> float:
        value = result_value(result, "metrics", "image_level_accuracy")
        return value["mean"] if isinstance(value, Mapping) else value

    if not members:
        raise ValueError("ensemble_table needs at least one member")
    best_name = max(members, key=lambda name: il(members[name]))
    gain = il(ensemble) - il(members[best_name])
    caption = f"Ensemble ({rule} rule) image-level accuracy {gain:+.3f} against the best member ({best_name})."
    return results_table({**members, f"Ensemble ({rule})": ensemble}, metrics, title, caption)


def levels_table(
    patch: Mapping[str, Any],
    image: Mapping[str, Any],
    metrics: Sequence[str] = ("image_level_accuracy", "precision", "recall", "f1", "kappa"),
    title: str = "Patch level and image level",
) -> Table:
    """Paper B's two levels: every view classified on its own (patch level) against the
    six-view majority vote (image level)."""
    return results_table(
        {"Patch level (each view)": patch, "Image level (six-view vote)": image},
        metrics,
        title,
        row_header="Level",
        headers={"image_level_accuracy": "Accuracy"},
    )


# Compression columns (paper A, Table 7 and Fig. 10/12): (row key, header, divisor, format).
COMPRESSION_COLUMNS: tuple[tuple[str, str, float, str], ...] = (
    ("ratio", "Pruning ratio O", 1.0, ".2f"),
    ("loops", "Loops R", 1.0, COUNT_FMT),
    ("params", "Parameters (M)", 1e6, ".2f"),
    ("macs", "MACs (G)", 1e9, ".3f"),
    ("size_bytes", "Size (MiB)", 2**20, ".1f"),
    ("latency_ms", "CPU latency (ms/image)", 1.0, ".1f"),
    ("speedup", "Speed-up (×)", 1.0, ".2f"),
    ("throughput", "GPU throughput (images/s)", 1.0, COUNT_FMT),
    ("accuracy", "Accuracy", 1.0, ".3f"),
)


def _scaled(value: Any, divisor: float) -> Any:
    if _is_missing(value) or divisor == 1.0:
        return value
    if isinstance(value, Mapping):
        return {k: (v / divisor if k in ("mean", "std", "estimate", "low", "high") else v) for k, v in value.items()}
    return value / divisor


def compression_table(rows: Sequence[Mapping[str, Any]], title: str = "Compression (paper A, Table 7)") -> Table:
    """Model cost against pruning ratio: a column for each key of :data:`COMPRESSION_COLUMNS`
    that any row has (raw counts: ``params``, ``macs``, ``size_bytes``; ``latency_ms``;
    ``accuracy``...). ``speedup`` is computed from ``latency_ms`` against the ``ratio == 0`` row
    when the rows have one and do not give it."""
    rows = [dict(r) for r in rows]
    baseline = next((r for r in rows if r.get("ratio") == 0 and not _is_missing(r.get("latency_ms"))), None)
    if baseline is not None:
        for r in rows:
            if "speedup" not in r and not _is_missing(r.get("latency_ms")):
                r["speedup"] = baseline["latency_ms"] / r["latency_ms"]
    present = [spec for spec in COMPRESSION_COLUMNS if any(spec[0] in r for r in rows)]
    unknown = sorted({k for r in rows for k in r} - {spec[0] for spec in COMPRESSION_COLUMNS})
    columns = [
        Column(key, header, fmt=fmt, metric="image_level_accuracy" if key == "accuracy" else None)
        for key, header, _, fmt in present
    ]
    table_rows = [{key: _scaled(r.get(key), div) for key, _, div, _ in present} for r in rows]
    notes = [f"Not tabulated (no column for them): {', '.join(unknown)}."] if unknown else []
    return Table(title, columns, table_rows, notes=notes)


def ablation_table(rows: Sequence[Mapping[str, Any]], title: str = "Architecture ablation (paper B, Table 4)") -> Table:
    """Paper B Table 4: feature encoder, discriminator, patch- and image-level accuracy (%).

    Each row needs ``encoder``, ``discriminator``, ``patch_accuracy``, ``image_accuracy``
    (fractions or fold summaries); the row with the best image-level accuracy is marked "(best)".
    """

    def image_acc(row: Mapping[str, Any]) -> float:
        value = row["image_accuracy"]
        value = value["mean"] if isinstance(value, Mapping) else value
        return -math.inf if _is_missing(value) else value

    missing = [
        i for i, r in enumerate(rows) if not {"encoder", "discriminator", "patch_accuracy", "image_accuracy"} <= set(r)
    ]
    if missing:
        raise ValueError(f"ablation rows {missing} lack one of encoder, discriminator, patch_accuracy, image_accuracy")
    best = max(range(len(rows)), key=lambda i: image_acc(rows[i])) if rows else -1
    columns = [
        Column("encoder", "Feature encoding"),
        Column("discriminator", "Discrimination"),
        Column("patch_accuracy", "Patch (%)", fmt=".1%"),
        Column("image_accuracy", "Image (%)", fmt=".1%"),
    ]
    table_rows = [
        {
            "encoder": f"{r['encoder']} (best)" if i == best else r["encoder"],
            "discriminator": r["discriminator"],
            "patch_accuracy": r["patch_accuracy"],
            "image_accuracy": r["image_accuracy"],
        }
        for i, r in enumerate(rows)
    ]
    return Table(title, columns, table_rows)
