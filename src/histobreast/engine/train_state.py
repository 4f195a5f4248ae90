"""Where a training run is (the counters a checkpoint stores) and what a finished run reports."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class TrainState:
    """Where a run is: the counters a checkpoint stores and callbacks read."""

    step: int = 0  # optimizer steps taken
    epoch: int = 0  # epochs completed
    batches_in_epoch: int = 0  # micro-batches of the current epoch consumed by each process
    best_value: float | None = None
    best_step: int | None = None
    evals_since_best: int = 0
    stopped_early: bool = False
    history: list[dict[str, float]] = field(default_factory=list)  # one row per evaluation
    train_totals: list[float] = field(
        default_factory=lambda: [0.0, 0.0, 0.0]
    )  # loss x n, correct, n since the last evaluation


@dataclass
class FitResult:
    """What a finished ``fit`` reports (also written to ``fit_result.json`` in the run folder)."""

    steps: int
    epochs: float
    select_metric: str
    best_value: float | None
    best_step: int | None
    stopped_early: bool
    restored_best: bool
    history: list[dict[str, float]]
    run_dir: str | None
    last_checkpoint: str | None
    best_checkpoint: str | None

    @property
    def final_metrics(self) -> dict[str, float]:
        """The last evaluation's row ({} when there was no validation)."""
        return dict(self.history[-1]) if self.history else {}
