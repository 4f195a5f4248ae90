"""An experiment folder's integrity: what a resume may change, and what saved predictions must match.

A resumed run reuses finished folds as they are, so the settings that trained them and the splits
that chose their images must be the ones saved in ``config.yaml`` and ``splits.csv``; a fresh run
never starts over checkpoints it would silently orphan; re-scored predictions must be the test
images ``splits.csv`` held out, once each.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from histobreast.config import config_to_dict
from histobreast.data.splits import Split, read_splits_csv
from histobreast.engine.checkpoint import CHECKPOINT_DIR
from histobreast.errors import CheckpointError, ConfigError, DatasetError
from histobreast.pipelines.config import ExperimentConfig, load_config

#: Settings a resumed experiment may change: where and how it runs and is scored, not what it trains.
RESUME_MAY_CHANGE = (
    "evaluate.",
    "preprocess.cache_dir",
    "train.num_workers",
    "train.prefetch_factor",
    "train.device",
    "train.progress",
    "train.tensorboard",
    "train.log_every",
    "train.checkpoint_every",
    "train.eval_batch_size",
)


def _flat(mapping: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested config sections as ``{"train.lr": 0.01, ...}``."""
    flat: dict[str, Any] = {}
    for key, value in mapping.items():
        if isinstance(value, Mapping) and value:
            flat.update(_flat(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def check_resumable(saved: Path, cfg: ExperimentConfig) -> None:
    """Refuse to resume an experiment whose ``config.yaml`` trains differently from ``cfg``.

    Finished folds are reused as they are, so a changed setting would leave them trained one way
    and the rewritten ``config.yaml`` and report saying another.
    """
    if not saved.is_file():
        return
    before, now = _flat(config_to_dict(load_config(saved))), _flat(config_to_dict(cfg))
    changed = [
        f"{key}: {before.get(key)!r} -> {now.get(key)!r}"
        for key in sorted(before.keys() | now.keys())
        if before.get(key) != now.get(key) and not key.startswith(RESUME_MAY_CHANGE)
    ]
    if changed:
        raise ConfigError(
            f"{saved}: cannot resume, the run was started with other settings ({'; '.join(changed)}); "
            "pass the same config, --data and --set values, or a new --out"
        )


def refuse_fresh_run(out: Path) -> None:
    """Refuse to start afresh in an experiment folder whose folds hold checkpoints, before anything is
    written: its ``config.yaml`` is the record of how they were trained, which ``--resume`` checks."""
    held = next(out.glob(f"fold*/**/{CHECKPOINT_DIR}/last.json"), None)
    if held is not None:
        raise CheckpointError(
            f"{out}: already holds a checkpoint ({held}); resume it (--resume) or choose a new run folder"
        )


def check_same_splits(saved: Path, splits: Sequence[Split]) -> None:
    """Refuse to resume when the protocol's splits now differ from the saved ``splits.csv``.

    A finished fold tested the images its saved split held out; an image that moved between
    train and test (an edited fold file, another seed or data tree) would be scored by a model
    that trained on it, or never scored at all.
    """
    if not saved.is_file():
        return
    before = {split.name: dict(split.subsets) for split in read_splits_csv(saved)}
    now = {split.name: dict(split.subsets) for split in splits}
    for name in sorted(before.keys() | now.keys()):
        old, new = before.get(name, {}), now.get(name, {})
        if old == new:
            continue
        moved = sorted(i for i in old.keys() & new.keys() if old[i] != new[i])
        gone, added = sorted(old.keys() - new.keys()), sorted(new.keys() - old.keys())
        what = (
            f"{moved[0]} moved from {old[moved[0]]} to {new[moved[0]]}"
            if moved
            else f"{gone[0]} is no longer in it"
            if gone
            else f"{added[0]} is new in it"
        )
        count = len(moved) + len(gone) + len(added)
        raise ConfigError(
            f"{saved}: cannot resume, {name} of the data's protocol differs from the saved split ({what}"
            f"{f', and {count - 1} more changes' if count > 1 else ''}); restore the data or fold files, "
            "or start a new --out"
        )


def _subset(split: Split, row_id: str) -> str | None:
    """The subset of a prediction row's image: the id itself, or for System B's sample-level rows
    (``<image_id>/<view>`` and ``<image_id>/<view>/<rank>``, see ``predictions.view_table``) its image's."""
    while row_id not in split.subsets and "/" in row_id:
        row_id = row_id.rsplit("/", 1)[0]
    return split.subsets.get(row_id)


def check_saved_predictions(run_dir: Path, saved: Mapping[int, Mapping[str, Any]], evaluate_split: str) -> None:
    """Refuse saved fold predictions that repeat an image or score one the fold did not hold out.

    ``saved`` is fold -> method -> ``Predictions``; ``evaluate_split`` the config's scored subset
    (only ``test`` is checked against ``splits.csv``: validation images are carved from ``train``).
    """
    splits = {split.name: split for split in read_splits_csv(run_dir / "splits.csv")}
    for fold, methods in saved.items():
        split = splits.get(f"fold{fold}")
        for method, pred in methods.items():
            where = run_dir / f"fold{fold}" / "predictions" / f"{method}.csv"
            seen: set[str] = set()
            for image_id in pred.image_ids:
                if image_id in seen:
                    raise DatasetError(f"{where}: image {image_id!r} is listed twice")
                seen.add(image_id)
                if evaluate_split == "test" and split is not None and _subset(split, image_id) != "test":
                    subset = _subset(split, image_id)
                    raise DatasetError(
                        f"{where}: image {image_id!r} is not in fold {fold}'s test set in {run_dir / 'splits.csv'} "
                        f"({'absent' if subset is None else f'it is a {subset} image'}); the file was edited or mixed up"
                    )
