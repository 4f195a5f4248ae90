"""An experiment's saved test predictions: ``OUT/fold<N>/predictions/<method>.csv`` and their order.

Written per fold by :func:`~histobreast.pipelines.experiment.run_experiment`; read back to
re-score a run (``histobreast evaluate``), compare two runs, or pool their test rows.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

from histobreast.atomic import atomic_write_text
from histobreast.data.splits import fold_number
from histobreast.errors import ConfigError, DatasetError
from histobreast.predictions import Predictions, concat_predictions

PREDICTIONS_DIR = "predictions"
FoldPredictions = dict[int, dict[str, Predictions]]  # fold number -> method -> test predictions


def write_fold_predictions(fold_dir: Path, predictions: Mapping[str, Predictions]) -> None:
    """``fold_dir/predictions/<method>.csv`` for every method, and their order (headline first) in methods.txt."""
    target = Path(fold_dir) / PREDICTIONS_DIR
    for method, pred in predictions.items():
        pred.to_csv(target / f"{method}.csv")
    atomic_write_text(target / "methods.txt", "\n".join(predictions) + "\n")


def read_fold_predictions(run_dir: str | Path) -> FoldPredictions:
    """The saved test predictions of every fold of an experiment folder (methods in their saved order)."""
    run_dir = Path(run_dir)
    out: FoldPredictions = {}
    fold_dirs = {fold_number(p.name): p for p in run_dir.iterdir() if p.is_dir()} if run_dir.is_dir() else {}
    for number, fold_dir in sorted((n, p) for n, p in fold_dirs.items() if n is not None):
        order_file = fold_dir / PREDICTIONS_DIR / "methods.txt"
        if not order_file.is_file():
            continue
        methods = order_file.read_text().split()
        out[number] = {m: Predictions.from_csv(fold_dir / PREDICTIONS_DIR / f"{m}.csv") for m in methods}
    if not out:
        raise DatasetError(
            f"{run_dir}: no fold*/predictions found; is this an experiment folder of `histobreast train`?"
        )
    return out


def pooled_test_predictions(
    saved: FoldPredictions, method: str | None = None, folds: Sequence[int] | None = None, run_dir: str | Path = ""
) -> Predictions:
    """One table of an experiment's test predictions (``read_fold_predictions(run_dir)``) of
    ``method`` (default: the headline method) over ``folds`` (default: every fold)."""
    chosen = sorted(saved) if folds is None else list(folds)
    missing = [f for f in chosen if f not in saved]
    if missing:
        raise DatasetError(f"{run_dir}: no saved predictions for fold(s) {missing}")
    method = method or next(iter(saved[chosen[0]]))
    for fold in chosen:
        if method not in saved[fold]:
            raise ConfigError(f"{run_dir}: fold {fold} has no method {method!r}; it has {list(saved[fold])}")
    return concat_predictions([saved[f][method] for f in chosen])
