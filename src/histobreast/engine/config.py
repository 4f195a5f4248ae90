"""Experiment configuration: YAML files loaded into typed dataclasses, validated key by key.

One YAML file per published experiment (``configs/*.yaml``). A file may start from others with
``extends: base.yaml`` (a path relative to the file, or a list of them; mappings are merged
deeply, everything else is replaced), and the command line may change any value with dotted
overrides (``--set train.lr=0.01``; values are parsed as YAML). Unknown keys, wrong types and
out-of-range values raise :class:`~histobreast.errors.ConfigError` naming the file and the dotted
key. The resolved configuration is saved into every run folder, so a run can be repeated.

:func:`build_dataclass` is the generic validator behind all of this; other modules use it for
their own free-form sub-sections (e.g. ``preprocess.regions.krem`` into ``KremParams``).
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import types
import typing
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar, Union

import yaml

from histobreast.atomic import atomic_write_text
from histobreast.errors import ConfigError

T = TypeVar("T")

Problems = Iterator[tuple[str, str]]  # (field name, message) pairs yielded by a section's ``problems()``

# ---------------------------------------------------------------------------------------------
# Schema. Each section may define ``problems()`` yielding (field, message) for values whose type
# is right but whose range or combination is not; the loader prefixes the dotted key and file.
# ---------------------------------------------------------------------------------------------


@dataclass
class DataConfig:
    """Which images and which labels: dataset kind and location, task, fold and split scheme.

    The data module interprets these values (``split`` names one of its split schemes);
    loader mechanics (workers, batch sizes) live in ``train``.
    """

    kind: Literal["auto", "breakhis", "bach", "folder", "synthetic"] = "auto"
    root: str | None = None
    magnification: int | None = None  # BreaKHis: 40, 100, 200 or 400 (x)
    fold: int | None = None  # 1-based fold number
    folds_file: str | None = None  # BreaKHis dsfoldN.txt, or a saved split file
    n_folds: int = 5
    split: str = "official"  # split scheme name, interpreted by histobreast.data.splits
    val_fraction: float = 0.2  # share of the training images held out for validation
    task: str | None = None  # e.g. "binary", "subtype", "multiclass"
    label_map: dict[str, str] = field(default_factory=dict)  # raw label -> task class
    classes: list[str] = field(default_factory=list)  # class order (empty: the reader's order)
    microns_per_pixel: float | None = None  # override the reader's physical scale

    def problems(self) -> Problems:
        if self.magnification is not None and self.magnification not in (40, 100, 200, 400):
            yield "magnification", f"must be 40, 100, 200 or 400, got {self.magnification}"
        if self.n_folds < 2:
            yield "n_folds", f"must be >= 2, got {self.n_folds}"
        if self.fold is not None and not 1 <= self.fold <= self.n_folds:
            yield "fold", f"must be between 1 and n_folds={self.n_folds}, got {self.fold}"
        if not 0.0 <= self.val_fraction < 1.0:
            yield "val_fraction", f"must be in [0, 1), got {self.val_fraction}"
        if self.microns_per_pixel is not None and self.microns_per_pixel <= 0:
            yield "microns_per_pixel", f"must be > 0, got {self.microns_per_pixel}"
        if len(set(self.classes)) != len(self.classes):
            yield "classes", f"has duplicates: {self.classes}"
        unknown = sorted(set(self.label_map.values()) - set(self.classes)) if self.classes else []
        if unknown:
            yield "label_map", f"maps to {unknown}, which are not in data.classes {self.classes}"


@dataclass
class StainConfig:
    """Colour normalisation: Reinhard (paper A) or Macenko to one reference image."""

    method: Literal["none", "reinhard", "macenko"] = "none"
    target: str | None = None  # reference image, a saved normaliser (.json), or "train": fitted on a training image
    # Reinhard's LAB statistics over tissue pixels (ours) or every pixel (torchstain's and TIAToolbox's).
    pixels: Literal["tissue", "all"] = "tissue"

    def problems(self) -> Problems:
        if self.method != "none" and self.target is None:
            yield "target", f"stain method {self.method!r} needs a reference image or fitted normaliser file"
        if self.pixels != "tissue" and self.method != "reinhard":
            yield "pixels", f"{self.pixels!r} applies to method reinhard only, not {self.method!r}"


@dataclass
class AugmentConfig:
    """Training augmentation; paper A uses random rotation, flips and shear, 8 copies per image."""

    rotation: float = 0.0  # maximum absolute angle, degrees
    hflip: bool = False
    vflip: bool = False
    shear: float = 0.0  # maximum absolute shear, degrees
    color_jitter: float = 0.0  # brightness/contrast/saturation strength, 0 = off
    copies: int = 1  # augmented copies per training image and epoch (paper A: 8)

    @property
    def active(self) -> bool:
        """Whether any augmentation is drawn (False: the samples are the images as they are)."""
        return self.rotation > 0 or self.shear > 0 or self.hflip or self.vflip or self.color_jitter > 0

    def problems(self) -> Problems:
        for name in ("rotation", "shear", "color_jitter"):
            if getattr(self, name) < 0:
                yield name, f"must be >= 0, got {getattr(self, name)}"
        if self.copies < 1:
            yield "copies", f"must be >= 1, got {self.copies}"


@dataclass
class PatchConfig:
    """System A local branch: the image resized to ``grid * size`` and cut into a grid of patches."""

    grid: tuple[int, int] = (5, 3)  # columns x rows: 1120x672 -> 15 patches of 224 (paper A)
    size: int = 224
    per_image: int | None = None  # local-branch training: random patches per image and epoch (None: all)

    def problems(self) -> Problems:
        if min(self.grid) < 1 or self.size < 1:
            yield "grid", f"grid and size must be positive, got grid={self.grid}, size={self.size}"
        if self.per_image is not None and not 1 <= self.per_image <= self.grid[0] * self.grid[1]:
            yield (
                "per_image",
                f"must be between 1 and the grid's {self.grid[0] * self.grid[1]} patches, got {self.per_image}",
            )


@dataclass
class RegionConfig:
    """System B key regions (KREM) and views; ``krem`` overrides fields of ``KremParams``."""

    views: list[str] = field(default_factory=lambda: ["raw", "rot90", "rot180", "rot270", "flip_x", "flip_y"])
    top_k_train: int = 12  # densest level-1 windows per view for training (paper B)
    top_k_test: int = 1  # the densest window at test time (paper B)
    krem: dict[str, Any] = field(default_factory=dict)  # validated against KremParams where used
    selection: Literal["density", "random"] = "density"  # random: paper B's random-region control

    def problems(self) -> Problems:
        if self.top_k_train < 1 or self.top_k_test < 1:
            yield "top_k_train", "top_k_train and top_k_test must be >= 1"
        if not self.views:
            yield "views", "needs at least one view"


@dataclass
class PreprocessConfig:
    """Pre-processing: typed sub-sections; each system reads the ones it uses (A: patches, B: regions)."""

    input_size: int = 224
    # Resample images to this physical scale and crop input_size px (None: resize the whole image
    # to input_size x input_size). Used by the image pipeline, e.g. 112 px crops at ~3.4 µm/px.
    microns_per_pixel: float | None = None
    stain: StainConfig = field(default_factory=StainConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    patches: PatchConfig = field(default_factory=PatchConfig)
    regions: RegionConfig = field(default_factory=RegionConfig)
    cache_dir: str | None = None  # on-disk cache of pre-processed crops

    def problems(self) -> Problems:
        if self.input_size < 1:
            yield "input_size", f"must be >= 1, got {self.input_size}"
        if self.microns_per_pixel is not None and self.microns_per_pixel <= 0:
            yield "microns_per_pixel", f"must be > 0, got {self.microns_per_pixel}"


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
class ScheduleConfig:
    """Learning-rate schedule, evaluated from the optimizer step (see ``engine.schedules``).

    ``step``: lr * gamma**k, the k-th decay after ``first_step`` units then every ``step_size``
    units, never below ``min_lr``. ``cosine``: from lr to ``min_lr`` over the run. ``constant``.
    ``warmup`` units of linear warm-up precede any of them. ``unit`` is ``iteration`` (one
    optimizer step) or ``epoch`` (the lr then changes only at epoch boundaries).
    """

    name: Literal["constant", "step", "cosine"] = "constant"
    unit: Literal["iteration", "epoch"] = "iteration"
    step_size: int = 1
    first_step: int | None = None  # None: step_size
    gamma: float = 0.1
    min_lr: float = 0.0
    warmup: int = 0

    def problems(self) -> Problems:
        if self.step_size < 1:
            yield "step_size", f"must be >= 1, got {self.step_size}"
        if self.first_step is not None and self.first_step < 0:
            yield "first_step", f"must be >= 0, got {self.first_step}"
        if not 0.0 < self.gamma <= 1.0:
            yield "gamma", f"must be in (0, 1], got {self.gamma}"
        if self.min_lr < 0:
            yield "min_lr", f"must be >= 0, got {self.min_lr}"
        if self.warmup < 0:
            yield "warmup", f"must be >= 0, got {self.warmup}"


@dataclass
class TrainConfig:
    """Optimisation and the training loop (see docs/engine.md for every key).

    ``batch_size`` is the effective batch of one optimizer step over all processes, as the
    papers state it; it is split into ``world_size * grad_accum`` equal micro-batches.
    """

    optimizer: Literal["sgd", "adamw"] = "sgd"
    lr: float = 0.01
    momentum: float = 0.9  # SGD
    nesterov: bool = False  # SGD
    betas: tuple[float, float] = (0.9, 0.999)  # AdamW
    weight_decay: float = 0.0
    batch_size: int = 32
    epochs: int | None = None
    iterations: int | None = None  # optimizer steps; exactly one of epochs / iterations
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    grad_accum: int = 1
    grad_clip: float | None = None  # max global gradient norm
    aux_weight: float = 0.3  # GoogLeNet's weight of each auxiliary-head loss
    amp: bool | Literal["auto"] = "auto"  # bf16 autocast; auto = on CUDA only
    channels_last: bool | Literal["auto"] = "auto"  # auto = on CUDA only
    compile: bool = False  # torch.compile the training forward
    sync_batchnorm: bool = False  # SyncBatchNorm across DDP processes
    early_stopping: int | None = None  # patience, in evaluations without improvement
    select_metric: str = "val_accuracy"
    select_mode: Literal["auto", "max", "min"] = "auto"  # auto: min for *loss metrics
    restore_best: bool = True  # load the best weights into the model when fit ends
    eval_every: int | None = None  # optimizer steps between validations; None: every epoch
    checkpoint_every: int | None = None  # optimizer steps between `last` checkpoints
    log_every: int = 50  # optimizer steps between logged (synchronised) losses
    eval_batch_size: int | None = None  # per process; None: twice the training micro-batch
    num_workers: int = 4
    prefetch_factor: int = 2
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    deterministic: bool = False  # torch.use_deterministic_algorithms (slower on GPU)
    progress: bool | Literal["auto"] = "auto"  # rich progress bars; auto = when stderr is a TTY
    tensorboard: bool = True

    def problems(self) -> Problems:
        if (self.epochs is None) == (self.iterations is None):
            yield "epochs", "set exactly one of train.epochs and train.iterations"
        for name in ("epochs", "iterations", "early_stopping", "eval_every", "checkpoint_every", "eval_batch_size"):
            value = getattr(self, name)
            if value is not None and value < 1:
                yield name, f"must be >= 1, got {value}"
        for name in ("batch_size", "grad_accum", "log_every", "prefetch_factor"):
            if getattr(self, name) < 1:
                yield name, f"must be >= 1, got {getattr(self, name)}"
        if self.batch_size % self.grad_accum:
            yield "grad_accum", f"must divide batch_size={self.batch_size}, got {self.grad_accum}"
        if not (self.lr > 0 and math.isfinite(self.lr)):
            yield "lr", f"must be a positive number, got {self.lr}"
        if not 0.0 <= self.momentum < 1.0:
            yield "momentum", f"must be in [0, 1), got {self.momentum}"
        if self.nesterov and (self.optimizer != "sgd" or self.momentum == 0):
            yield "nesterov", "needs optimizer: sgd with momentum > 0"
        if not all(0.0 <= b < 1.0 for b in self.betas):
            yield "betas", f"must be in [0, 1), got {self.betas}"
        if self.weight_decay < 0 or self.aux_weight < 0:
            yield "weight_decay", "weight_decay and aux_weight must be >= 0"
        if self.grad_clip is not None and self.grad_clip <= 0:
            yield "grad_clip", f"must be > 0, got {self.grad_clip}"
        if self.num_workers < 0:
            yield "num_workers", f"must be >= 0, got {self.num_workers}"
        if not (self.device in ("auto", "cpu", "cuda") or _is_cuda_index(self.device)):
            yield "device", f"must be auto, cpu, cuda or cuda:N, got {self.device!r}"


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


def _is_cuda_index(device: str) -> bool:
    prefix, _, index = device.partition(":")
    return prefix == "cuda" and index.isdigit()


# ---------------------------------------------------------------------------------------------
# Loading: YAML -> merged mapping (extends, overrides) -> dataclasses.
# ---------------------------------------------------------------------------------------------


def load_config(path: str | Path, overrides: Sequence[str] = ()) -> ExperimentConfig:
    """Read ``path`` (following ``extends``), apply ``key=value`` overrides, validate.

    A missing ``name`` defaults to the file's stem. Errors name the file and the dotted key.
    """
    path = Path(path)
    raw = _read_with_extends(path, chain=())
    raw = apply_overrides(raw, overrides, source=path)
    raw.setdefault("name", path.stem)
    try:
        return build_dataclass(ExperimentConfig, raw, source=str(path))
    except ConfigError as err:
        # the message names the file; say so when the key at fault came from an override instead
        culprits = [item for item in overrides if item.partition("=")[0].strip() in str(err)]
        if not culprits:
            raise
        raise ConfigError(f"{err} (from the override {', '.join(map(repr, culprits))}, not the file)") from None


def parse_config(mapping: Mapping[str, Any], source: str = "<config>") -> ExperimentConfig:
    """Validate an in-memory mapping (e.g. a checkpoint's stored config) as an experiment."""
    return build_dataclass(ExperimentConfig, mapping, source=source)


def config_to_dict(config: Any) -> dict[str, Any]:
    """A dataclass config as plain YAML/JSON-able data (tuples become lists)."""
    return _plain(dataclasses.asdict(config))


def save_config(config: Any, path: str | Path) -> Path:
    """Write the resolved ``config`` as YAML, atomically (the run folder's ``config.yaml``)."""
    text = yaml.safe_dump(config_to_dict(config), sort_keys=False, default_flow_style=None)
    return atomic_write_text(path, text)


def apply_overrides(
    raw: Mapping[str, Any], overrides: Sequence[str], source: str | Path = "<config>"
) -> dict[str, Any]:
    """Return a copy of ``raw`` with each ``dotted.key=value`` applied (value parsed as YAML)."""
    result = _deep_copy(raw)
    for item in overrides:
        key, sep, text = item.partition("=")
        key = key.strip()
        if not sep or not key or any(not part for part in key.split(".")):
            raise ConfigError(f"override {item!r}: expected dotted.key=value, e.g. train.lr=0.01")
        try:
            value = yaml.safe_load(text) if text.strip() else None
        except yaml.YAMLError as err:
            raise ConfigError(f"override {item!r}: value is not valid YAML ({err})") from err
        node = result
        parts = key.split(".")
        for depth, part in enumerate(parts[:-1]):
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                where = ".".join(parts[: depth + 1])
                raise ConfigError(f"{source}: override {item!r}: {where} is a value, not a section")
            node = child
        node[parts[-1]] = value
    return result


def _read_with_extends(path: Path, chain: tuple[Path, ...]) -> dict[str, Any]:
    resolved = path.resolve()
    if resolved in chain:
        cycle = " -> ".join(str(p) for p in (*chain, resolved))
        raise ConfigError(f"{path}: `extends` forms a cycle: {cycle}")
    if not path.is_file():
        hint = f" (extended from {chain[-1]})" if chain else ""
        raise ConfigError(f"{path}: config file not found{hint}")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML ({err})") from err
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of sections, got {type(raw).__name__}")
    parents = raw.pop("extends", None)
    if parents is None:
        return raw
    if isinstance(parents, str):
        parents = [parents]
    if not isinstance(parents, list) or not all(isinstance(p, str) for p in parents):
        raise ConfigError(f"{path}: extends: must be a file name or a list of file names")
    merged: dict[str, Any] = {}
    for parent in parents:
        merged = _deep_merge(merged, _read_with_extends(path.parent / parent, (*chain, resolved)))
    return _deep_merge(merged, raw)


def _deep_merge(base: Mapping[str, Any], update: Mapping[str, Any]) -> dict[str, Any]:
    out = _deep_copy(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _deep_merge(out[key], value)
        else:
            out[key] = _deep_copy(value)
    return out


def _deep_copy(obj: Any) -> Any:
    if isinstance(obj, Mapping):
        return {k: _deep_copy(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_deep_copy(v) for v in obj]
    return obj


def _plain(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k: _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    return obj


# ---------------------------------------------------------------------------------------------
# The generic validator: mapping -> dataclass, by the dataclass's type hints.
# ---------------------------------------------------------------------------------------------


def build_dataclass(cls: type[T], mapping: Any, source: str = "<config>", prefix: str = "") -> T:
    """Build dataclass ``cls`` from ``mapping``, checking keys, types and each ``problems()``.

    Supports bool/int/float/str, ``None`` unions, ``Literal``, ``list[T]``, ``tuple[...]``,
    ``dict[str, T]``, ``Any`` and nested dataclasses. ``ConfigError`` messages read
    ``"<source>: <prefix.key>: <problem>"``. Other modules use it for their own option sets.
    """
    where = prefix or "(top level)"
    if not isinstance(mapping, Mapping):
        raise ConfigError(f"{source}: {where}: expected a mapping of keys, got {_describe(mapping)}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = [k for k in mapping if k not in fields]
    if unknown:
        messages = []
        for key in unknown:
            close = difflib.get_close_matches(str(key), fields, n=1)
            messages.append(_join(prefix, str(key)) + (f" (did you mean {_join(prefix, close[0])}?)" if close else ""))
        raise ConfigError(f"{source}: unknown key(s) {', '.join(messages)}; allowed here: {', '.join(fields)}")
    values: dict[str, Any] = {}
    for name, f in fields.items():
        key = _join(prefix, name)
        if name in mapping:
            values[name] = _convert(hints[name], mapping[name], source, key)
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise ConfigError(f"{source}: {key}: required key is missing")
    obj = cls(**values)
    check = getattr(obj, "problems", None)
    if check is not None:
        for name, message in check():
            raise ConfigError(f"{source}: {_join(prefix, name)}: {message}")
    return obj


def _convert(tp: Any, value: Any, source: str, key: str) -> Any:
    """Check ``value`` against annotation ``tp`` and return it converted (int->float, list->tuple)."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is Any:
        return value
    if dataclasses.is_dataclass(tp):
        return build_dataclass(tp, value, source, key)
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        options = [a for a in args if a is not type(None)]
        for option in options:
            try:
                return _convert(option, value, source, key)
            except ConfigError as err:
                # A single structured option (section, list, mapping) has the more precise message.
                if len(options) == 1 and (dataclasses.is_dataclass(option) or typing.get_origin(option)):
                    raise err
        raise ConfigError(f"{source}: {key}: expected {_type_name(tp)}, got {_describe(value)}")
    if origin is Literal:
        if value in args and not (isinstance(value, bool) and not any(isinstance(a, bool) for a in args)):
            return value
        raise ConfigError(f"{source}: {key}: must be one of {', '.join(map(repr, args))}, got {_describe(value)}")
    if tp is bool:
        if isinstance(value, bool):
            return value
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    elif tp is str:
        if isinstance(value, str):
            return value
    elif origin is list:
        if isinstance(value, list):
            return [_convert(args[0], v, source, f"{key}[{i}]") for i, v in enumerate(value)]
    elif origin is tuple:
        if isinstance(value, (list, tuple)):
            if len(args) == 2 and args[1] is Ellipsis:
                return tuple(_convert(args[0], v, source, f"{key}[{i}]") for i, v in enumerate(value))
            if len(value) == len(args):
                return tuple(_convert(a, v, source, f"{key}[{i}]") for i, (a, v) in enumerate(zip(args, value)))
    elif origin is dict:
        if isinstance(value, Mapping):
            out = {}
            for k, v in value.items():
                if not isinstance(k, str):
                    raise ConfigError(f"{source}: {key}: keys must be strings, got {k!r}")
                out[k] = _convert(args[1], v, source, f"{key}.{k}")
            return out
    else:  # pragma: no cover - a schema bug, not a user error
        raise TypeError(f"unsupported annotation {tp!r} for {key}")
    raise ConfigError(f"{source}: {key}: expected {_type_name(tp)}, got {_describe(value)}")


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (Union, types.UnionType):
        return " or ".join(_type_name(a) for a in args)
    if origin is Literal:
        return "one of " + ", ".join(map(repr, args))
    if origin is list:
        return f"a list of {_type_name(args[0])}"
    if origin is tuple:
        if len(args) == 2 and args[1] is Ellipsis:
            return f"a list of {_type_name(args[0])}"
        return f"a list of {len(args)} values ({', '.join(_type_name(a) for a in args)})"
    if origin is dict:
        return f"a mapping of {_type_name(args[1])}"
    if tp is type(None):
        return "null"
    return {bool: "true/false", int: "an integer", float: "a number", str: "a string"}.get(
        tp, getattr(tp, "__name__", str(tp))
    )


def _describe(value: Any) -> str:
    if value is None:
        return "null"
    text = repr(value)
    return f"{type(value).__name__} {text if len(text) <= 60 else text[:57] + '...'}"


def _join(prefix: str, name: str) -> str:
    return f"{prefix}.{name}" if prefix else name
