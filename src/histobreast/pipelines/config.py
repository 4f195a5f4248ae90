"""Experiment configs: one YAML file per published experiment, loaded into a typed ExperimentConfig.

The experiment's own sections (``model``, ``evaluate``, the optional stages ``prune``, ``ensemble``
and ``spanhol``) live here; the others
beside their owners (``data.config``, ``preprocess.config``, ``engine.config``), the YAML machinery
(``extends``, overrides, validation) in :mod:`histobreast.config`. The resolved configuration is
saved into every run folder, so a run can be repeated.
"""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from histobreast.config import Problems, build_dataclass, load_dataclass, unknown_keys_message
from histobreast.data.config import DataConfig
from histobreast.engine.config import TrainConfig
from histobreast.errors import ConfigError
from histobreast.models.registry import model_parameters
from histobreast.pipelines.registry import get_pipeline, pipeline_names
from histobreast.preprocess.config import PreprocessConfig
from histobreast.seeding import seed_problem

Extraction = Literal["sliding", "random"]  # how the Spanhol 2016 baseline cuts its training patches


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
        train_keys = [f.name for f in dataclasses.fields(TrainConfig)]
        unknown = unknown_keys_message(self.encoder_pretraining or {}, train_keys, "model.encoder_pretraining")
        if unknown:
            yield "encoder_pretraining", unknown
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
    batch_size: int | None = None  # None: the engine's rule, TrainConfig.eval_batch
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
class PruneOptions:
    """The ``prune`` section of an experiment config (and the ``histobreast prune`` flags).

    ``ratio`` O and ``loops`` R (paper A: O = 0.5, R = 1). ``retrain_iterations``: optimizer steps
    of each retraining (None: the model's own ``train`` section). ``importance_batches`` limits the
    importance pass (None: the whole training set, as in the paper). ``dns``: run Dynamic Network
    Surgery after channel pruning, with sensitivity ``dns_sensitivity`` (c of Guo et al.).
    ``internal``: each loop also removes the same fraction of the internal convs' channels (the
    stem's conv2_reduce/conv2 and every reduce conv, ranked by |BatchNorm gamma|): beyond the
    paper, which prunes only the SEP-followed layers (:mod:`histobreast.compress.prune`).
    ``report_ratios``, ``report_loops`` and ``report_loop_ratio`` are the sweeps of
    ``histobreast prune report`` (paper A: Fig. 12 / Table 7, Fig. 10 at O = 0.8).
    """

    ratio: float = 0.5
    loops: int = 1
    retrain_iterations: int | None = None
    importance_batches: int | None = None
    batch_size: int = 8
    dns: bool = False
    dns_sensitivity: float = 0.0
    report_ratios: list[float] = field(default_factory=lambda: [0.0, 0.25, 0.5, 0.7, 0.9, 0.95])
    report_loops: list[int] = field(default_factory=lambda: [1, 2, 3, 4])
    report_loop_ratio: float = 0.8
    report_dns_sensitivities: list[float] = field(default_factory=list)
    internal: bool = False  # also prune the stem and reduce convs by |BN gamma| (beyond the paper)

    def problems(self) -> Problems:
        for name in ("ratio", "report_loop_ratio"):
            if not 0.0 <= getattr(self, name) < 1.0:
                yield name, f"must be in [0, 1), got {getattr(self, name)}"
        if any(not 0.0 <= r < 1.0 for r in self.report_ratios):
            yield "report_ratios", f"every ratio must be in [0, 1), got {self.report_ratios}"
        if self.loops < 1 or any(r < 1 for r in self.report_loops):
            yield "loops", "loops (and every report_loops entry) must be >= 1"
        for name in ("retrain_iterations", "importance_batches"):
            value = getattr(self, name)
            if value is not None and value < 1:
                yield name, f"must be >= 1, got {value}"
        if self.batch_size < 1:
            yield "batch_size", f"must be >= 1, got {self.batch_size}"


@dataclass
class EnsembleOptions:
    """The ``ensemble`` section of an experiment config.

    ``members``: k (paper A: 5). ``rule``: how members vote (paper A: sum). ``prune_ratio`` > 0
    channel-prunes every member to that target ratio in ``prune_loops`` loops after training.
    ``contiguous``: cut the subsets as contiguous image-number ranges per class (BACH, whose
    neighbouring images share a patient) instead of a seeded random pick of patients; null
    chooses contiguous for ``data.kind: bach``.
    """

    members: int = 5
    rule: Literal["sum", "max", "majority"] = "sum"
    prune_ratio: float = 0.0
    prune_loops: int = 1
    contiguous: bool | None = None

    def problems(self) -> Problems:
        if self.members < 2:
            yield "members", f"an ensemble needs at least 2 members, got {self.members}"
        if not 0.0 <= self.prune_ratio < 1.0:
            yield "prune_ratio", f"must be in [0, 1), got {self.prune_ratio}"
        if self.prune_loops < 1:
            yield "prune_loops", f"must be >= 1, got {self.prune_loops}"


@dataclass
class SpanholOptions:
    """The ``spanhol`` section of a baseline config (defaults: Spanhol et al. 2016).

    One member is trained per (patch size, extraction) pair. ``scale`` resizes images before
    patches are cut (Spanhol et al. worked on half-size 350x230 BreaKHis images; 0.5 here).
    ``random_patches``: random windows per training image. ``patch_rule``: how an image's patch
    probabilities become its probabilities; ``fusion``: how the members vote (paper: max).
    """

    patch_sizes: list[int] = field(default_factory=lambda: [32, 64])
    extractions: list[Extraction] = field(default_factory=lambda: ["sliding", "random"])
    overlap: float = 0.5
    random_patches: int = 1000
    scale: float = 0.5
    patch_rule: Literal["sum", "max"] = "sum"
    fusion: Literal["sum", "max", "majority"] = "max"
    eval_batch_size: int = 512

    def problems(self) -> Problems:
        if not self.patch_sizes or any(size < 8 for size in self.patch_sizes):
            yield "patch_sizes", f"needs at least one size, each >= 8 pixels, got {self.patch_sizes}"
        if not self.extractions or len(set(self.extractions)) != len(self.extractions):
            yield "extractions", f"needs distinct values among {typing.get_args(Extraction)}, got {self.extractions}"
        if not 0.0 <= self.overlap < 1.0:
            yield "overlap", f"must be in [0, 1), got {self.overlap}"
        if self.random_patches < 1 or self.eval_batch_size < 1:
            yield "random_patches", "random_patches and eval_batch_size must be >= 1"
        if self.scale <= 0:
            yield "scale", f"must be > 0, got {self.scale}"

    def members(self) -> list[tuple[str, int, str]]:
        """``(name, patch size, extraction)`` of every member, sizes outer."""
        return [(f"patch{size}_{kind}", size, kind) for size in self.patch_sizes for kind in self.extractions]


@dataclass
class ExperimentConfig:
    """One experiment: every section of a config file, validated."""

    name: str
    # Which end-to-end pipeline (histobreast.pipelines) runs this experiment: Zhu et al. 2019's
    # hybrid System A, Liu et al. 2022's MSMV-PFENet System B, the Spanhol et al. 2016 patch
    # baseline, or a plain whole-image classifier (e.g. the ResNet18 baseline).
    pipeline: str = "image"  # a name of histobreast.pipelines.registry
    seed: int = 0
    data: DataConfig = field(default_factory=DataConfig)
    preprocess: PreprocessConfig = field(default_factory=PreprocessConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=lambda: TrainConfig(epochs=1))
    evaluate: EvaluateConfig = field(default_factory=EvaluateConfig)
    # The optional stages: channel pruning / DNS (histobreast.pipelines.pruning), bagging
    # (histobreast.pipelines.bagging), the Spanhol 2016 baseline (histobreast.pipelines.spanhol2016).
    prune: PruneOptions = field(default_factory=PruneOptions)
    ensemble: EnsembleOptions = field(default_factory=EnsembleOptions)
    spanhol: SpanholOptions = field(default_factory=SpanholOptions)

    def problems(self) -> Problems:
        if not self.name:
            yield "name", "must not be empty"
        elif self.name in (".", "..") or any(c in self.name for c in "/\\:") or self.name.startswith("~"):
            yield "name", f"must be a plain folder name (runs/<name> holds the run), got {self.name!r}"
        if seed_problem(self.seed):
            yield "seed", seed_problem(self.seed)
        if self.model.frozen_encoders and self.preprocess.augment.active:
            yield (
                "preprocess.augment",
                (
                    "changes the training samples every epoch, but model.frozen_encoders: "
                    "true encodes them once; remove one of the two"
                ),
            )
        if self.pipeline not in pipeline_names():
            yield "pipeline", f"must be one of {', '.join(pipeline_names())}, got {self.pipeline!r}"
            return
        yield from self._model_problems()

    def _model_problems(self) -> Problems:
        """``model.kwargs`` among the registered model constructor's (and the pipeline's own keys), and
        the pipeline's own checks (e.g. inputs big enough for its network)."""
        pipeline = get_pipeline(self.pipeline)
        try:
            accepted = model_parameters(self.model.name)
        except ConfigError:  # not registered (yet): building the model names the registered ones
            accepted = None
        if accepted is not None:
            known = sorted({*accepted, *pipeline.model_keys})
            unknown = unknown_keys_message(self.model.kwargs, known, "model.kwargs")
            if unknown:
                yield "model.kwargs", unknown
        if pipeline.config_problems is not None:
            yield from pipeline.config_problems(self)


def load_config(path: str | Path, overrides: Sequence[str] = ()) -> ExperimentConfig:
    """Read ``path`` (following ``extends``), apply ``key=value`` overrides, validate.

    A missing ``name`` defaults to the file's stem. Errors name the file and the dotted key.
    """
    return load_dataclass(ExperimentConfig, path, overrides, defaults={"name": Path(path).stem})


def parse_config(mapping: Mapping[str, Any], source: str = "<config>") -> ExperimentConfig:
    """Validate an in-memory mapping (e.g. a checkpoint's stored config) as an experiment."""
    return build_dataclass(ExperimentConfig, mapping, source=source)
