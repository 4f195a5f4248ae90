"""One experiment end to end: records -> protocol folds -> train + predict per fold -> metrics -> report.

:func:`run_experiment` is what ``histobreast train`` runs (``histobreast evaluate`` is
:mod:`histobreast.pipelines.evaluation`; the report :mod:`histobreast.pipelines.experiment_report`;
the saved predictions :mod:`histobreast.pipelines.fold_predictions`).
The experiment folder::

    OUT/config.yaml  splits.csv
    OUT/fold1/<engine run folders>  model/  predictions/<method>.csv
    OUT/report/report.md  report.html  metrics.json  figures/*.png

"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, Literal

from histobreast.atomic import remove_stale_temporaries
from histobreast.config import save_config
from histobreast.data.protocol import choose_folds, experiment_splits, fold_records, select_split
from histobreast.data.splits import fold_name, write_splits_csv
from histobreast.data.task_records import experiment_records, require_two_classes
from histobreast.engine.distributed import context_from_env
from histobreast.locking import folder_lock
from histobreast.pipelines import get_pipeline
from histobreast.pipelines.config import ExperimentConfig
from histobreast.pipelines.encoder_provenance import checked_fold_config, fold_start_weights
from histobreast.pipelines.experiment_checks import (
    check_resumable,
    check_same_splits,
    refuse_fresh_run,
)
from histobreast.pipelines.experiment_report import REPORT_DIR, ExperimentResult, report_experiment
from histobreast.pipelines.fold_predictions import (
    FoldPredictions,
    write_fold_predictions,
)
from histobreast.pipelines.network import check_model_builds

log = logging.getLogger(__name__)


def run_experiment(
    cfg: ExperimentConfig,
    out_dir: str | Path | None = None,
    folds: Iterable[int] | Literal["all"] | None = None,
    resume: bool = False,
    config_path: str | None = None,
) -> ExperimentResult:
    """Train and test every chosen fold of ``cfg``'s protocol, then write the report.

    ``folds``: ``"all"``, a list of 1-based fold numbers, or None (``data.fold`` if set, else all).
    ``out_dir`` defaults to ``runs/<cfg.name>``. With ``resume`` finished folds are reused and an
    interrupted one continues from its checkpoints; without it a folder holding checkpoints is an
    error (nothing is overwritten).
    """
    out = Path(out_dir) if out_dir is not None else Path("runs") / cfg.name
    main = context_from_env().is_main
    check_model_builds(fold_start_weights(cfg, None))
    records, classes = experiment_records(cfg.data)
    require_two_classes(records, classes, cfg.data.root)
    splits = experiment_splits(cfg.data, records, cfg.seed)
    chosen = choose_folds(cfg.data, len(splits), folds)
    with folder_lock(out) if main else contextlib.nullcontext():  # one writer: checks and writes under it
        if resume:
            check_resumable(out / "config.yaml", cfg)
            check_same_splits(out / "splits.csv", splits)
        else:
            refuse_fresh_run(out)
        if main:
            save_config(cfg, out / "config.yaml")
            write_splits_csv(splits, out / "splits.csv")
        return _run_folds(cfg, out, records, classes, splits, chosen, resume, config_path, main)


def _run_folds(
    cfg: ExperimentConfig,
    out: Path,
    records: Sequence[Any],
    classes: list[str],
    splits: Sequence[Any],
    chosen: list[int],
    resume: bool,
    config_path: str | None,
    main: bool,
) -> ExperimentResult:
    """Train and test the chosen folds, then the report (``run_experiment``'s work, under its lock)."""
    if resume and main:
        remove_stale_temporaries(out)  # a killed run's half-written files; the lock says no one else writes here
    pipeline = get_pipeline(cfg.pipeline)
    fold_predictions: FoldPredictions = {}
    model_folders: dict[int, Path] = {}
    for number in chosen:
        fold = fold_records(cfg.data, cfg.seed, number, records, splits, evaluate=cfg.evaluate.split)
        fold_dir = out / fold_name(number)
        test = select_split(fold.split, records, "test")  # the fold's test images, whatever evaluate.split
        fold_cfg = checked_fold_config(cfg, number, test, fold_dir if main else None)  # {fold}'s encoder, unseen
        log.info(
            "fold %d: %d training, %d validation, %d %s images",
            number,
            len(fold.train),
            len(fold.val),
            len(fold.test),
            cfg.evaluate.split,
        )
        model_folders[number] = pipeline.train_fold(fold_cfg, fold.train, fold.val, classes, fold_dir, resume=resume)
        if main:
            fold_predictions[number] = pipeline.predict_records(
                model_folders[number], fold.test, tta_views=cfg.evaluate.tta_views, device=cfg.train.device
            )
            write_fold_predictions(fold_dir, fold_predictions[number])
    if not main:
        return ExperimentResult(out, out / REPORT_DIR, [], chosen, {}, {}, model_folders)
    result = report_experiment(
        fold_predictions, out / REPORT_DIR, cfg, config_path=config_path, run_dirs=[out / fold_name(chosen[0])]
    )
    result.out_dir, result.model_folders = out, model_folders
    return result
