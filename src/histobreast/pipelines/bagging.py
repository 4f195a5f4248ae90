"""Paper A's bagging: k models trained on k rotations of one training set, voting together.

The training set is cut into k non-overlapping, patient-disjoint subsets
(:func:`histobreast.data.splits.bagging_splits`); member j trains on the other k-1 subsets and
validates on subset j (Zhu et al. 2019, Fig. 7: k = 5). Members are ordinary model folders
written by their pipeline's ``train_fold`` (optionally channel-pruned afterwards), so any
pipeline can be bagged. An ensemble is a folder holding them and ``ensemble.json``::

    {"format": "histobreast-ensemble", "version": 1, "members": ["member1/model", ...],
     "rule": "sum" | "max" | "majority", "classes": [...], "created": ..., ...}

At evaluation every member predicts with its own pipeline (its headline method), the member
probabilities are combined by the rule (:func:`histobreast.predictions.combine_predictions`; the sum rule is
the paper's), and each image's member disagreement (the fraction of members voting against the
majority, :func:`histobreast.vote_rules.member_disagreement`) is kept as its ``uncertainty``.
"""

from __future__ import annotations

import datetime as _dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from histobreast.atomic import atomic_write_json
from histobreast.config import read_json, rebuild_dataclass, save_config
from histobreast.data.protocol import training_subsets
from histobreast.data.records import ImageRecord, read_records_csv, write_records_csv
from histobreast.data.splits import Split, write_splits_csv
from histobreast.data.task_records import dataset_kind
from histobreast.engine.inference import check_batch_size
from histobreast.errors import CheckpointError, ConfigError
from histobreast.locking import folder_lock
from histobreast.metrics import evaluate_predictions
from histobreast.pipelines.config import EnsembleOptions, ExperimentConfig
from histobreast.pipelines.encoder_provenance import checked_fold_config
from histobreast.pipelines.package import ENSEMBLE_FORMAT, MODEL_JSON, load_model_folder
from histobreast.pipelines.package import ENSEMBLE_JSON as MANIFEST
from histobreast.predictions import Predictions, combine_predictions
from histobreast.vote_rules import EnsembleRule

ENSEMBLE_VERSION = 1
TEST_RECORDS = "test_records.csv"
SUMMARY = "summary.json"  # evaluate_ensemble's headline numbers (image-level accuracies, gain)
RULES: tuple[str, ...] = ("sum", "max", "majority")


def ensemble_options(cfg: ExperimentConfig, **overrides: Any) -> EnsembleOptions:
    """The validated ``ensemble`` section of ``cfg``, with non-None ``overrides`` applied (CLI flags)."""
    changes = {k: v for k, v in overrides.items() if v is not None}
    return rebuild_dataclass(cfg.ensemble, changes, source=f"config {cfg.name!r}", prefix="ensemble")


# ---------------------------------------------------------------------------------------------
# The ensemble folder
# ---------------------------------------------------------------------------------------------


@dataclass
class EnsembleFolder:
    """A parsed ``ensemble.json``: absolute member folders, the voting rule and the other facts."""

    path: Path
    members: list[Path]
    rule: EnsembleRule
    info: dict[str, Any] = field(default_factory=dict)

    def member_names(self) -> list[str]:
        """Display names: each member's path relative to the ensemble folder, without a trailing ``/model``."""
        names = []
        for member in self.members:
            rel = member.relative_to(self.path)  # read_ensemble_folder keeps members inside the folder
            names.append((rel.parent if rel.name == "model" and rel.parent != Path(".") else rel).as_posix())
        return names


def _check_rule(rule: str, where: str) -> None:
    if rule not in RULES:
        raise ConfigError(f"{where}: voting rule must be one of {', '.join(RULES)}, got {rule!r}")


def is_ensemble_folder(path: str | Path) -> bool:
    """Whether ``path`` is a folder holding an ``ensemble.json``."""
    return (Path(path) / MANIFEST).is_file()


def save_ensemble_folder(
    path: str | Path,
    members: Sequence[str | Path],
    rule: str = "sum",
    *,
    classes: Sequence[str] | None = None,
    extra: Mapping[str, Any] | None = None,
) -> Path:
    """Write ``path/ensemble.json`` (atomically) listing ``members``: model folders (paths as usual,
    relative to the working directory unless absolute) that lie inside ``path``; they are stored
    relative to it, so the ensemble folder can be moved as a whole."""
    path = Path(path)
    _check_rule(rule, str(path / MANIFEST))
    if len(members) < 1:
        raise ConfigError(f"{path}: an ensemble needs at least one member")
    relative = []
    for member in members:
        member = Path(member)
        if not (member / MODEL_JSON).is_file():
            raise CheckpointError(f"{member}: ensemble member is not a model folder (no model.json)")
        try:
            relative.append(member.resolve().relative_to(path.resolve()).as_posix())
        except ValueError:
            raise CheckpointError(f"{member}: ensemble members must lie inside the ensemble folder {path}") from None
    manifest = {
        "format": ENSEMBLE_FORMAT,
        "version": ENSEMBLE_VERSION,
        "members": relative,
        "rule": rule,
        "classes": list(classes) if classes is not None else None,
        "created": _dt.datetime.now().astimezone().isoformat(timespec="seconds"),
        **dict(extra or {}),
    }
    atomic_write_json(path / MANIFEST, manifest)
    return path


def read_ensemble_folder(path: str | Path) -> EnsembleFolder:
    """Parse ``path/ensemble.json``; a missing or malformed manifest raises CheckpointError."""
    path = Path(path)
    manifest_path = path / MANIFEST
    if not manifest_path.is_file():
        raise CheckpointError(f"{path}: not an ensemble folder (no {MANIFEST}); a single model folder has model.json")
    info = read_json(
        manifest_path, "ensemble manifest", error=CheckpointError, format=ENSEMBLE_FORMAT, version=ENSEMBLE_VERSION
    )
    members = info.get("members")
    if not isinstance(members, list) or not members or not all(isinstance(m, str) for m in members):
        raise CheckpointError(f"{manifest_path}: 'members' must be a non-empty list of folder names")
    rule = info.get("rule", "sum")
    _check_rule(rule, str(manifest_path))
    folders = []
    for member in members:
        folder = (path / member).resolve()
        if not folder.is_relative_to(path.resolve()):
            raise CheckpointError(f"{manifest_path}: member {member!r} lies outside the ensemble folder")
        if not (folder / MODEL_JSON).is_file():
            raise CheckpointError(f"{manifest_path}: member {member!r} is not a model folder (no model.json)")
        folders.append(folder)
    return EnsembleFolder(path.resolve(), folders, rule, info)


# ---------------------------------------------------------------------------------------------
# Prediction
# ---------------------------------------------------------------------------------------------


def predict_member(model_folder: str | Path | Any, records: Sequence[ImageRecord], **options: Any) -> Predictions:
    """One model folder's headline predictions (the first method of its pipeline's ``predict_records``)."""
    from histobreast.pipelines import get_pipeline

    loaded = load_model_folder(model_folder) if isinstance(model_folder, (str, Path)) else model_folder
    methods = get_pipeline(loaded.pipeline).predict_records(loaded, records, **options)
    return next(iter(methods.values()))


@dataclass
class EnsemblePredictions:
    """The ensemble's predictions (with an ``uncertainty`` column) and each member's."""

    ensemble: Predictions
    members: dict[str, Predictions]
    rule: EnsembleRule


def predict_ensemble(
    path: str | Path, records: Sequence[ImageRecord], rule: EnsembleRule | None = None, **options: Any
) -> EnsemblePredictions:
    """Every member's headline predictions on ``records`` and their vote (by ``rule``, default the
    folder's); ``options`` go to each member pipeline's ``predict_records``."""
    check_batch_size(options.get("batch_size"))
    folder = read_ensemble_folder(path)
    rule = rule or folder.rule
    _check_rule(rule, str(path))
    members = {
        name: predict_member(member, records, **options) for name, member in zip(folder.member_names(), folder.members)
    }
    return EnsemblePredictions(combine_predictions(members, rule), members, rule)


# ---------------------------------------------------------------------------------------------
# Training and evaluation
# ---------------------------------------------------------------------------------------------


def _contiguous(cfg: ExperimentConfig, options: EnsembleOptions) -> bool:
    return options.contiguous if options.contiguous is not None else dataset_kind(cfg.data) == "bach"


def bag_training_set(cfg: ExperimentConfig, records: Sequence[ImageRecord], options: EnsembleOptions) -> list[Split]:
    """The k bagging splits (``bag1`` ... ``bagk``: ``train`` = k-1 subsets, ``val`` = the k-th)."""
    return training_subsets(cfg.data, records, options.members, cfg.seed, _contiguous(cfg, options))


def train_ensemble(
    cfg: ExperimentConfig,
    train_records: Sequence[ImageRecord],
    classes: Sequence[str],
    out_dir: str | Path,
    *,
    options: EnsembleOptions | None = None,
    test_records: Sequence[ImageRecord] = (),
    fold: int | None = None,
    resume: bool = False,
) -> Path:
    """Train the k members of ``cfg``'s pipeline on the bagging splits of ``train_records`` and
    write the ensemble folder ``out_dir`` (members in ``out_dir/member<j>/model``; pruned ones in
    ``out_dir/member<j>/pruned``). ``test_records`` are remembered for ``evaluate`` without data,
    and the members' start weights are refused if pre-trained on one of them
    (:func:`~histobreast.pipelines.encoder_provenance.checked_fold_config`; ``fold``: the protocol's
    fold they come from, which a ``{fold}`` weights path needs)."""
    from histobreast.pipelines import get_pipeline

    options = options or ensemble_options(cfg)
    out_dir = Path(out_dir)
    with folder_lock(out_dir):  # one writer: a second `ensemble train` into this folder is refused, naming the holder
        cfg = checked_fold_config(cfg, fold, test_records, out_dir)
        save_config(cfg, out_dir / "config.yaml")
        splits = bag_training_set(cfg, train_records, options)
        write_splits_csv(splits, out_dir / "bagging_splits.csv")
        if test_records:
            write_records_csv(test_records, out_dir / TEST_RECORDS)
        pipeline = get_pipeline(cfg.pipeline)
        members = []
        for number, split in enumerate(splits, start=1):
            member_dir = out_dir / f"member{number}"
            member_train, member_val = split.select(train_records, "train"), split.select(train_records, "val")
            folder = pipeline.train_fold(cfg, member_train, member_val, classes, member_dir, resume=resume)
            if options.prune_ratio > 0 and resume and (member_dir / "pruned" / MODEL_JSON).is_file():
                folder = member_dir / "pruned"  # pruned before the interruption
            elif options.prune_ratio > 0:
                from histobreast.pipelines.pruning import prune_model_folder, prune_options

                prune = prune_options(cfg, ratio=options.prune_ratio, loops=options.prune_loops)
                folder = prune_model_folder(
                    folder, member_dir / "pruned", member_train, member_val, options=prune, resume=resume
                )
            members.append(folder)
        extra = {
            "pipeline": cfg.pipeline,
            "config": cfg.name,
            "bagging": {
                "members": options.members,
                "contiguous": _contiguous(cfg, options),
                "prune_ratio": options.prune_ratio,
                "prune_loops": options.prune_loops,
            },
        }
        return save_ensemble_folder(out_dir, members, options.rule, classes=classes, extra=extra)


def held_out_records(path: str | Path) -> list[ImageRecord]:
    """The test records remembered by :func:`train_ensemble`; ConfigError when there are none."""
    csv_path = Path(path) / TEST_RECORDS
    if not csv_path.is_file():
        raise ConfigError(f"{path}: the ensemble has no remembered test images ({TEST_RECORDS}); pass --data")
    return read_records_csv(csv_path)


def evaluate_ensemble(
    path: str | Path,
    records: Sequence[ImageRecord],
    out_dir: str | Path,
    rule: EnsembleRule | None = None,
    **options: Any,
) -> dict[str, Any]:
    """Predict ``records`` with the ensemble and each member, write ``predictions.csv`` (ensemble,
    with ``uncertainty``), ``members/<name>.csv`` and a report (the ensemble beside each member,
    paper A Table 9) and ``summary.json`` (the accuracies and the gain over the best member); returns
    ``{"ensemble": metrics, "members": {name: metrics}, "rule", "gain_over_best_member"}``."""
    from histobreast.report import Report, RunInfo, ensemble_table

    out_dir = Path(out_dir)
    result = predict_ensemble(path, records, rule, **options)
    result.ensemble.to_csv(out_dir / "predictions.csv")
    for name, table in result.members.items():
        table.to_csv(out_dir / "members" / f"{name.replace('/', '_')}.csv")
    ensemble_metrics = evaluate_predictions(result.ensemble)
    member_metrics = {name: evaluate_predictions(table) for name, table in result.members.items()}
    best = max(member_metrics.values(), key=lambda m: m["metrics"]["image_level_accuracy"])
    gain = ensemble_metrics["metrics"]["image_level_accuracy"] - best["metrics"]["image_level_accuracy"]
    report = Report(
        out_dir / "report",
        f"Ensemble of {len(member_metrics)} models ({result.rule} rule)",
        RunInfo(
            str(records[0].path.parent) if records else "-",
            "ensemble evaluation",
            str(Path(path)),
            str(Path(path) / MANIFEST),
        ),
    )
    report.add_table(ensemble_table(member_metrics, ensemble_metrics, result.rule))
    uncertainty = result.ensemble.extra["uncertainty"]
    report.add_text(
        f"Member disagreement (uncertainty column of predictions.csv): mean {uncertainty.mean():.3f}, "
        f"{int((uncertainty > 0).sum())} of {len(uncertainty)} images without a unanimous vote."
    )
    report.add_evaluation(f"Ensemble ({result.rule})", ensemble_metrics, result.ensemble)
    report.write()
    accuracy = {name: m["metrics"]["image_level_accuracy"] for name, m in member_metrics.items()}
    atomic_write_json(
        out_dir / SUMMARY,
        {
            "rule": result.rule,
            "images": len(records),
            "ensemble": ensemble_metrics["metrics"]["image_level_accuracy"],
            "members": accuracy,
            "best_member": max(accuracy, key=accuracy.__getitem__),
            "gain_over_best_member": gain,
            "mean_uncertainty": float(uncertainty.mean()),
        },
    )
    return {"rule": result.rule, "ensemble": ensemble_metrics, "members": member_metrics, "gain_over_best_member": gain}
