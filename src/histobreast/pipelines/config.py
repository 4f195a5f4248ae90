"""Experiment configs: one YAML file per published experiment, loaded into a typed ExperimentConfig.

The experiment's own sections (``model``, ``evaluate``, the optional stages) live here; the others
beside their owners (``data.config``, ``preprocess.config``, ``engine.config``), the YAML machinery
(``extends``, overrides, validation) in :mod:`histobreast.config`. The resolved configuration is
saved into every run folder, so a run can be repeated.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from histobreast.config import Problems, build_dataclass, load_dataclass
from histobreast.data.config import DataConfig
from histobreast.engine.config import TrainConfig
from histobreast.preprocess.config import PreprocessConfig


@dataclass
class ModelConfig:
    """``create_model(name, num_classes=..., weights=..., **kwargs)``."""

    name: str = ""
    num_classes: int | None = None  # None: the number of data classes
    weights: str | None = None  # local safetensors file to initialise from
    kwargs: dict[str, Any] = field(default_factory=dict)
    # System B's frozen-encoder mode: encode every crop once (cached) and train only the discriminator.
    frozen_encoders: bool = False
    # System B: train each encoder alone (+ a linear head) on its scale's crops before the main
    # stage; keys override the ``train`` section (e.g. {iterations: 150}). None: no pre-training.
    encoder_pretraining: dict[str, Any] | None = None
    # System B, frozen mode after encoder pre-training: FDNet learns from out-of-fold vectors. The
    # training images are cut into k patient-disjoint parts, each encoded by encoders pre-trained on
    # the other k-1 (stacking); the saved model keeps the encoders pre-trained on all of them.
    cross_fit: int | None = None

    def problems(self) -> Problems:
        if not self.name:
            yield "name", "is required (a registered model name, see `histobreast models list`)"
        if self.num_classes is not None and self.num_classes < 2:
            yield "num_classes", f"must be >= 2, got {self.num_classes}"
        if self.cross_fit is not None:
            if self.cross_fit < 2:
                yield "cross_fit", f"must be >= 2 parts (or null), got {self.cross_fit}"
            if not (self.frozen_encoders and self.encoder_pretraining):
                yield "cross_fit", "needs frozen_encoders: true and an encoder_pretraining section"


@dataclass
class EvaluateConfig:
    """Evaluation options read by ``histobreast evaluate`` and the pipelines."""

    split: Literal["test", "val"] = "test"
    batch_size: int | None = None  # None: train.eval_batch_size
    tta_views: list[str] = field(default_factory=list)  # e.g. the six views; empty: none
    bootstrap: int = 1000  # resamples of patients for the 95% confidence intervals
    ci: float = 0.95
    per_magnification: bool = True

    def problems(self) -> Problems:
        if self.batch_size is not None and self.batch_size < 1:
            yield "batch_size", f"must be >= 1, got {self.batch_size}"
        if self.bootstrap < 0:
            yield "bootstrap", f"must be >= 0, got {self.bootstrap}"
        if not 0.0 < self.ci < 1.0:
            yield "ci", f"must be in (0, 1), got {self.ci}"


@dataclass
class ExperimentConfig:
    """One experiment: every section of a config file, validated."""

    name: str
    # Which end-to-end pipeline (histobreast.pipelines) runs this experiment: Zhu et al. 2019's
    # hybrid System A, Liu et al. 2022's MSMV-PFENet System B, the Spanhol et al. 2016 patch
    # baseline, or a plain whole-image classifier (e.g. the ResNet18 baseline).
    pipeline: Literal["zhu2019", "liu2022", "spanhol2016", "image"] = "image"
    seed: int = 0
    data: DataConfig = field(default_factory=DataConfig)
    preprocess: PreprocessConfig = field(default_factory=PreprocessConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=lambda: TrainConfig(epochs=1))
    evaluate: EvaluateConfig = field(default_factory=EvaluateConfig)
    # Options of the optional stages, free mappings validated where used (like preprocess.regions.krem):
    # channel pruning / DNS (histobreast.pipelines.pruning.PruneOptions), bagging
    # (histobreast.pipelines.bagging.EnsembleOptions), the Spanhol 2016 baseline
    # (histobreast.pipelines.spanhol2016.SpanholOptions).
    prune: dict[str, Any] = field(default_factory=dict)
    ensemble: dict[str, Any] = field(default_factory=dict)
    spanhol: dict[str, Any] = field(default_factory=dict)

    def problems(self) -> Problems:
        if not self.name:
            yield "name", "must not be empty"
        if self.seed < 0:
            yield "seed", f"must be >= 0, got {self.seed}"
        if self.model.frozen_encoders and self.preprocess.augment.active:
            yield (
                "preprocess.augment",
                (
                    "changes the training samples every epoch, but model.frozen_encoders: "
                    "true encodes them once; remove one of the two"
                ),
            )


def load_config(path: str | Path, overrides: Sequence[str] = ()) -> ExperimentConfig:
    """Read ``path`` (following ``extends``), apply ``key=value`` overrides, validate.

    A missing ``name`` defaults to the file's stem. Errors name the file and the dotted key.
    """
    return load_dataclass(ExperimentConfig, path, overrides, defaults={"name": Path(path).stem})


def parse_config(mapping: Mapping[str, Any], source: str = "<config>") -> ExperimentConfig:
    """Validate an in-memory mapping (e.g. a checkpoint's stored config) as an experiment."""
    return build_dataclass(ExperimentConfig, mapping, source=source)
