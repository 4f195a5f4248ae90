"""Paper B's Table 4 in one command: every MSMV-PFENet variant on the same folds, one report.

An ablation file names a base experiment (a ``liu2022`` config) and the Table 4 rows to run
(keys of :data:`histobreast.models.msmv.TABLE4_VARIANTS`)::

    base: bach4_frozen.yaml          # relative to this file
    variants: [single_fenet_fc, pfenet_fc, pfenet_svm, pfenet_bilstm2]
    main: pfenet_bilstm2             # confusion matrix (Fig. 7) and per-class scores in the report
    overrides: [train.epochs=5]      # dotted changes to the base, for every variant

Each network row is the base config with the row's model kwargs merged over the base's, run as an
ordinary experiment (``histobreast train``'s folder layout and report) in ``<out>/<variant>``; the SVM
row fits :class:`~histobreast.engine.features.SVMDiscriminator` on the pooled
features of its source row's trained models. The report (``<out>/report``) holds the Table 4 layout
(patch- and image-level accuracy, mean ± std over folds, next to the paper's numbers), the main
model's image-level evaluation (confusion matrix PNG, per-class precision / recall / F1) and its
patch-level one.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from histobreast.config import build_dataclass, read_yaml_mapping
from histobreast.data.protocol import choose_folds, experiment_splits, fold_records
from histobreast.data.splits import fold_name
from histobreast.data.task_records import experiment_records
from histobreast.errors import ConfigError
from histobreast.metrics import evaluate_predictions
from histobreast.models.msmv import Table4Variant, table4_variant
from histobreast.pipelines import liu2022
from histobreast.pipelines.config import ExperimentConfig, load_config
from histobreast.pipelines.experiment import run_experiment
from histobreast.pipelines.fold_predictions import read_fold_predictions, write_fold_predictions
from histobreast.pipelines.registry import get_pipeline
from histobreast.predictions import Predictions, concat_predictions
from histobreast.report import Column, Report, RunInfo, ablation_table

log = logging.getLogger(__name__)

METHODS = liu2022.PIPELINE.methods  # six-view vote, per view


@dataclass
class AblationConfig:
    """An ablation file: the base experiment, the Table 4 rows, the main row, shared overrides."""

    base: str
    variants: list[str]
    main: str = "pfenet_bilstm2"
    overrides: list[str] = field(default_factory=list)

    def problems(self):  # type: ignore[no-untyped-def]
        if not self.variants or len(set(self.variants)) != len(self.variants):
            yield "variants", f"must be a non-empty list of distinct Table 4 keys, got {self.variants}"
        for key in self.variants:
            try:
                variant = table4_variant(key)
            except ConfigError as err:
                yield "variants", str(err)
                return
            if variant.svm_features_of is not None and variant.svm_features_of not in self.variants:
                yield "variants", f"{key} is fitted on the features of {variant.svm_features_of}; list that row too"
        if self.main not in self.variants:
            yield "main", f"{self.main!r} is not one of the variants {self.variants}"


def load_ablation(path: str | Path, overrides: Sequence[str] = ()) -> tuple[AblationConfig, ExperimentConfig]:
    """Read an ablation file and its base experiment (with the file's and then ``overrides`` applied)."""
    path = Path(path)
    raw = read_yaml_mapping(path, "ablation file")
    ablation = build_dataclass(AblationConfig, raw, source=str(path))
    base = load_config(path.parent / ablation.base, [*ablation.overrides, *overrides])
    if get_pipeline(base.pipeline) is not liu2022.PIPELINE:
        raise ConfigError(f"{path}: base {ablation.base} runs pipeline {base.pipeline!r}; Table 4 ablates liu2022")
    return ablation, base


def variant_config(base: ExperimentConfig, variant: Table4Variant, cache_dir: Path) -> ExperimentConfig:
    """The base experiment with the row's model kwargs merged over the base's, named after the row.

    Rows share one cache (``base.preprocess.cache_dir`` or ``cache_dir``): the key regions, and in
    frozen mode the features of equal encoders (the PFENet rows start from the same seeded weights).
    """
    model = dataclasses.replace(base.model, kwargs={**base.model.kwargs, **variant.model_kwargs})
    preprocess = dataclasses.replace(base.preprocess, cache_dir=base.preprocess.cache_dir or str(cache_dir))
    return dataclasses.replace(base, name=f"{base.name}_{variant.key}", model=model, preprocess=preprocess)


def _accuracy(pred: Predictions) -> float:
    return float(np.mean(pred.predicted == pred.labels))


def _fold_summary(values: Sequence[float]) -> float | dict[str, float]:
    if len(values) == 1:
        return values[0]
    return {"mean": float(np.mean(values)), "std": float(np.std(values, ddof=1))}


@dataclass
class AblationResult:
    """Per row: each fold's ``{"image", "patch"}`` predictions; the report's files."""

    folds: list[int]
    predictions: dict[str, list[dict[str, Predictions]]]
    report: dict[str, Path]

    def accuracies(self) -> dict[str, dict[str, list[float]]]:
        """``{variant: {"image": [per fold], "patch": [per fold]}}``."""
        return {
            key: {m: [_accuracy(fold[m]) for fold in folds] for m in METHODS} for key, folds in self.predictions.items()
        }


def run_ablation(
    ablation: AblationConfig,
    base: ExperimentConfig,
    out_dir: str | Path,
    *,
    folds: str | Sequence[int] = "all",
    resume: bool = True,
    config_path: str = "",
) -> AblationResult:
    """Train and evaluate every row on the chosen folds (1-based), then write the report.

    A network row is an ordinary experiment in ``<out>/<row>`` (:func:`run_experiment`: its own
    report, ``fold<N>/model`` and ``fold<N>/predictions``); an SVM row writes the same
    ``fold<N>/predictions``. With ``resume`` (default) finished folds are reused.
    """
    out_dir = Path(out_dir)
    records, _ = experiment_records(base.data)
    splits = experiment_splits(base.data, records, base.seed)
    chosen = choose_folds(base.data, len(splits), "all" if folds == "all" else [int(f) for f in folds])
    variants = [table4_variant(k) for k in ablation.variants]
    # Networks first: an SVM row reads the trained models of its source row.
    for variant in sorted(variants, key=lambda v: v.svm_features_of is not None):
        row_dir = out_dir / variant.key
        log.info("Table 4 row %s on folds %s", variant.key, chosen)
        if variant.svm_features_of is None:
            run_experiment(
                variant_config(base, variant, out_dir / "cache"),
                row_dir,
                folds=chosen,
                resume=resume,
                config_path=config_path or None,
            )
            continue
        for number in chosen:
            fold = fold_records(base.data, base.seed, number, records, splits)
            source = out_dir / variant.svm_features_of / fold_name(number) / "model"
            write_fold_predictions(
                row_dir / fold_name(number), liu2022.predict_records_svm(source, fold.train, fold.test)
            )
    predictions = {key: [read_fold_predictions(out_dir / key)[fold] for fold in chosen] for key in ablation.variants}
    report = write_report(ablation, base, predictions, chosen, out_dir / "report", config_path)
    return AblationResult(chosen, predictions, report)


def ablation_rows(predictions: Mapping[str, list[dict[str, Predictions]]]) -> list[dict[str, Any]]:
    """Table 4 rows: encoding, discrimination, patch / image accuracy (over folds) and the paper's."""
    rows = []
    for key, folds in predictions.items():
        variant = table4_variant(key)
        rows.append(
            {
                "key": key,
                "encoder": variant.encoding,
                "discriminator": variant.discrimination,
                "patch_accuracy": _fold_summary([_accuracy(f["patch"]) for f in folds]),
                "image_accuracy": _fold_summary([_accuracy(f["image"]) for f in folds]),
                "paper_patch": variant.paper_patch / 100,
                "paper_image": variant.paper_image / 100,
            }
        )
    return rows


def write_report(
    ablation: AblationConfig,
    base: ExperimentConfig,
    predictions: Mapping[str, list[dict[str, Predictions]]],
    folds: Sequence[int],
    out_dir: Path,
    config_path: str = "",
) -> dict[str, Path]:
    """``report.md``/``report.html``/``metrics.json`` with Table 4 and the main row's evaluations."""
    fold_text = f"folds {', '.join(map(str, folds))} of {base.data.n_folds}"
    report = Report(
        out_dir,
        f"Table 4 ablation (Liu et al. 2022): {base.name}",
        RunInfo(
            dataset=f"{base.data.kind} ({base.data.root})",
            split=fold_text,
            model="msmv_pfenet variants",
            config=config_path or ablation.base,
        ),
        intro=(
            "Each row trains on the same folds. Patch level: one result per view (the densest "
            "region); image level: the views' majority vote (ties: larger summed probability). "
            f"Frozen encoders: {base.model.frozen_encoders}."
        ),
    )
    rows = ablation_rows(predictions)
    table = ablation_table(rows)
    table.columns += [
        Column("paper_patch", "Paper patch (%)", fmt=".1%"),
        Column("paper_image", "Paper image (%)", fmt=".1%"),
    ]
    for shown, row in zip(table.rows, rows):
        shown.update(paper_patch=row["paper_patch"], paper_image=row["paper_image"])
    table.caption = f"Mean ± std over {fold_text}; the paper's numbers are its BACH results."
    report.add_table(table)
    main = table4_variant(ablation.main)
    for method, label in (("image", "image level (six-view vote)"), ("patch", "patch level (per view)")):
        pooled = concat_predictions([fold[method] for fold in predictions[ablation.main]])
        report.add_evaluation(f"{main.encoding} + {main.discrimination}, {label}", evaluate_predictions(pooled), pooled)
    report.add_metrics(
        "accuracy_per_fold",
        {
            key: {"folds": list(folds), **{m: [_accuracy(f[m]) for f in fs] for m in METHODS}}
            for key, fs in predictions.items()
        },
    )
    return report.write()
