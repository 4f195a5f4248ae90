"""A training run's logs: CSV files per logged step and per evaluation, TensorBoard, a progress bar.

Written by the main process only; a resumed run first drops the rows and events after the step it
resumes from, so its logs read as if it had never stopped.
"""

from __future__ import annotations

import csv
import logging
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from histobreast.atomic import atomic_path
from histobreast.engine.config import TrainConfig

log = logging.getLogger(__name__)


class RunLogger:
    """CSV logs (``train_log.csv`` per logged step, ``eval_log.csv`` per evaluation), TensorBoard
    and a rich progress bar, on the main process only (files only when there is a ``run_dir``).

    On resumption the CSV rows and TensorBoard events after the resumed step are dropped first.
    """

    def __init__(
        self, run_dir: Path | None, config: TrainConfig, *, enabled: bool, total_steps: int, resumed_step: int | None
    ) -> None:
        self.enabled = enabled
        files = run_dir if enabled else None
        self.train_csv = CsvLog(files / "train_log.csv", resumed_step) if files else None
        self.eval_csv = CsvLog(files / "eval_log.csv", resumed_step) if files else None
        self.writer = None
        if files is not None and config.tensorboard:
            from torch.utils.tensorboard import SummaryWriter  # imported lazily: it is slow to import

            self.writer = SummaryWriter(str(files / "tensorboard"), purge_step=resumed_step)
        show = sys.stderr.isatty() if config.progress == "auto" else config.progress
        self.progress = None
        if enabled and show:
            from rich.console import Console
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeElapsedColumn,
                TimeRemainingColumn,
            )

            self.progress = Progress(
                TextColumn("[bold]train"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                TimeRemainingColumn(),
                TextColumn("{task.fields[status]}"),
                console=Console(stderr=True),
            )
            self.task = self.progress.add_task("train", total=total_steps, completed=resumed_step or 0, status="")
            self.progress.start()

    def advance(self, step: int) -> None:
        """Move the bar (no host-device sync)."""
        if self.progress is not None:
            self.progress.update(self.task, completed=step)

    def step(self, step: int, epoch: float, lr: float, totals: dict[str, float]) -> None:
        """A logged training step: CSV row, scalars, bar status."""
        row = {"step": step, "epoch": epoch, "lr": lr, **totals}
        if self.train_csv is not None:
            self.train_csv.write(row)
        if self.writer is not None:
            for key in ("train_loss", "train_accuracy", "lr", "images_per_s"):
                self.writer.add_scalar(f"train/{key}", row[key], step)
        if self.progress is not None:
            self.progress.update(
                self.task,
                status=f"epoch {epoch:.2f} loss {totals['train_loss']:.4f} "
                f"lr {lr:.2e} {totals['images_per_s']:.0f} img/s",
            )

    def evaluation(self, row: dict[str, float], improved: bool, select_metric: str) -> None:
        """An evaluation: CSV row, scalars, one console line."""
        if self.eval_csv is not None:
            self.eval_csv.write(row)
        if self.writer is not None:
            for key, value in row.items():
                if key not in ("step", "epoch"):
                    self.writer.add_scalar(f"eval/{key}", value, int(row["step"]))
        shown = " ".join(f"{k}={v:.4g}" for k, v in row.items() if k not in ("step", "lr"))
        line = f"step {int(row['step'])}: {shown}" + (f" (best {select_metric})" if improved else "")
        if self.progress is not None:
            self.progress.console.print(line, highlight=False)
        elif self.enabled:
            log.info(line)

    def close(self) -> None:
        """Stop the bar and flush TensorBoard."""
        if self.progress is not None:
            self.progress.stop()
        if self.writer is not None:
            self.writer.close()


class CsvLog:
    """An append-only CSV log keyed by ``step``; new columns rewrite the file with a wider header."""

    def __init__(self, path: Path, resumed_step: int | None) -> None:
        self.path = path
        self.fields: list[str] = []
        rows: list[dict[str, str]] = []
        if resumed_step is not None and path.is_file():
            with path.open(newline="") as fh:
                reader = csv.DictReader(fh)
                self.fields = list(reader.fieldnames or [])
                rows = [r for r in reader if r.get("step") and int(float(r["step"])) <= resumed_step]
        self._rewrite(rows)

    def write(self, row: Mapping[str, Any]) -> None:
        """Append ``row`` (rewriting the header if it brings new columns)."""
        new = [k for k in row if k not in self.fields]
        if new:
            with self.path.open(newline="") as fh:
                rows = list(csv.DictReader(fh))
            self.fields += new
            self._rewrite(rows)
        with self.path.open("a", newline="") as fh:
            csv.DictWriter(fh, self.fields).writerow({k: _fmt(v) for k, v in row.items()})

    def _rewrite(self, rows: list[dict[str, str]]) -> None:
        with atomic_path(self.path) as tmp, tmp.open("w", newline="") as fh:
            writer = csv.DictWriter(fh, self.fields)
            if self.fields:
                writer.writeheader()
            writer.writerows(rows)


def _fmt(value: Any) -> Any:
    return f"{value:.6g}" if isinstance(value, float) else value
