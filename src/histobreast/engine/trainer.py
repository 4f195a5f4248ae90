"""The one training loop of histobreast: every model, every system, one process or many.

``Trainer(model, train_config, ...).fit(train_data, val_data)`` trains any ``nn.Module`` on
batches ``(inputs, target)`` (``inputs`` a tensor or a dict of tensors passed as keyword
arguments). It does SGD/AdamW with the papers' schedules, bf16 autocast and channels_last on GPU,
gradient accumulation and clipping, DDP under torchrun, best-on-validation selection and early
stopping, atomic checkpoints (``last`` and ``best``) and exact resumption, CSV/TensorBoard logs
and a rich progress bar. See docs/engine.md.

Exact resumption: data order and augmentation are pure functions of ``(seed, epoch, index)``
(``engine.distributed``), the learning rate a pure function of the step (``engine.schedules``),
and a ``last`` checkpoint stores weights, optimizer tensors, every generator's state and the
position inside the epoch; a resumed run skips the consumed batches and continues bit for bit.
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import logging
import math
import os
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Dataset

from histobreast.atomic import atomic_path, atomic_write_json
from histobreast.config import build_dataclass, config_to_dict, save_config
from histobreast.engine.checkpoint import CHECKPOINT_DIR, Checkpoint, read_checkpoint, save_checkpoint
from histobreast.engine.config import TrainConfig
from histobreast.engine.distributed import (
    DistributedContext,
    EpochSampler,
    all_gather_objects,
    all_reduce_sum,
    broadcast_object,
    build_loader,
    context_from_env,
    gather_sharded,
    init_distributed,
    resolve_device,
)
from histobreast.engine.inference import autocast, call_model, predict_probabilities, resolve_flag, to_device
from histobreast.engine.losses import ClassificationLoss, main_logits
from histobreast.engine.schedules import LRSchedule, set_lr
from histobreast.errors import CheckpointError, ConfigError
from histobreast.seeding import capture_rng_state, derive_seed, restore_rng_state, seed_everything

log = logging.getLogger(__name__)

LossFn = Callable[[Any, Tensor], Tensor]
ValidateFn = Callable[[nn.Module], Mapping[str, float]]
StepCallback = Callable[["Trainer"], None]


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


class Trainer:
    """Trains ``model`` with a :class:`TrainConfig`; one instance per run.

    Args:
        model: any module; its forward returns logits, or ``{"logits", "aux": [...]}`` in train mode.
        config: the ``train`` section (validated again here).
        seed: run seed; data order, augmentation and dropout follow from it.
        run_dir: folder for checkpoints, logs and ``config.yaml``; None trains in memory only.
        loss_fn: ``loss_fn(output, target) -> scalar``; default cross-entropy + aux heads.
        validate: ``validate(model) -> {metric: value}``, called on every rank with the unwrapped
            model at each evaluation (after the default ``val_loss``/``val_accuracy`` from
            ``val_data``, which it may override); rank 0's values decide for all ranks.
        callbacks: called as ``callback(trainer)`` after every optimizer step (e.g. DNS masks).
        model_name, model_kwargs: stored in checkpoints so ``load_model`` can rebuild the model.
        experiment: the whole experiment config (any config dataclass, e.g. ``pipelines.config.ExperimentConfig``),
            saved as ``config.yaml`` and in checkpoints.
        metadata: any other JSON-able facts for the checkpoints (e.g. ``{"classes": [...]}``).
    """

    def __init__(
        self,
        model: nn.Module,
        config: TrainConfig,
        *,
        seed: int = 0,
        run_dir: str | Path | None = None,
        loss_fn: LossFn | None = None,
        validate: ValidateFn | None = None,
        callbacks: Sequence[StepCallback] = (),
        model_name: str | None = None,
        model_kwargs: Mapping[str, Any] | None = None,
        experiment: Any | None = None,
        metadata: Mapping[str, Any] | None = None,
    ) -> None:
        self.config = build_dataclass(TrainConfig, config_to_dict(config), source="train config", prefix="train")
        cfg = self.config
        self.seed = seed
        self.run_dir = Path(run_dir) if run_dir is not None else None
        self.loss_fn = loss_fn or ClassificationLoss(cfg.aux_weight)
        self.validate = validate
        self.callbacks = list(callbacks)
        self.checkpoint_info = {
            "model_name": model_name,
            "model_kwargs": dict(model_kwargs or {}),
            "metadata": dict(metadata or {}),
            "seed": seed,
            "config": config_to_dict(experiment) if experiment is not None else {"train": config_to_dict(cfg)},
        }
        self.experiment = experiment

        env = context_from_env()
        self.device = resolve_device(cfg.device, env.local_rank)
        self.ctx: DistributedContext = init_distributed(self.device)
        step_batch = env.world_size * cfg.grad_accum
        if cfg.batch_size % step_batch:
            raise ConfigError(
                f"train.batch_size={cfg.batch_size} must be divisible by world_size x grad_accum = "
                f"{env.world_size} x {cfg.grad_accum} (it is the batch of one optimizer step over all processes)"
            )
        self.micro_batch = cfg.batch_size // step_batch  # per process, per forward pass
        self.use_amp = resolve_flag(cfg.amp, self.device)
        self.channels_last = resolve_flag(cfg.channels_last, self.device)
        self._configure_backends()

        self.model = model.to(self.device)
        if self.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        if self.ctx.is_distributed and cfg.sync_batchnorm:
            self.model = nn.SyncBatchNorm.convert_sync_batchnorm(self.model)
        self.optimizer = build_optimizer(self.model, cfg)
        self.train_module: nn.Module = self.model
        self._ddp: DistributedDataParallel | None = None
        if self.ctx.is_distributed:
            ids = [self.device.index] if self.device.type == "cuda" else None
            self._ddp = DistributedDataParallel(self.model, device_ids=ids)
            self.train_module = self._ddp
        if cfg.compile:
            self.train_module = torch.compile(self.train_module)  # type: ignore[assignment]
        self.state = TrainState()
        self.lr = cfg.lr
        self._best_weights: dict[str, Tensor] | None = None  # in-memory best when there is no run_dir

    # -- public ------------------------------------------------------------------------------

    @property
    def checkpoint_dir(self) -> Path | None:
        """``run_dir/checkpoints`` (None when training in memory)."""
        return self.run_dir / CHECKPOINT_DIR if self.run_dir is not None else None

    def fit(
        self,
        train_data: Dataset | DataLoader,
        val_data: Dataset | DataLoader | None = None,
        *,
        resume: bool = False,
    ) -> FitResult:
        """Train until ``epochs``/``iterations`` are done or early stopping; returns a summary.

        A ``Dataset`` gets the engine's deterministic, sharded loader (recommended); a
        ``DataLoader`` is used as given (its batches are micro-batches). With ``resume`` the run
        continues from ``run_dir``'s ``last`` checkpoint if there is one; without it an existing
        checkpoint in ``run_dir`` is an error rather than silently overwritten.
        """
        cfg = self.config
        train_loader = self._train_loader(train_data)
        val_loader, val_sharded = self._val_loader(val_data)
        if cfg.early_stopping is not None and val_loader is None and self.validate is None:
            raise ConfigError("train.early_stopping needs validation data or a validate function")
        try:
            batches = len(train_loader)
        except TypeError:
            raise ConfigError("training data must have a length (an IterableDataset cannot be used)") from None
        steps_per_epoch = batches // cfg.grad_accum
        if steps_per_epoch < 1:
            where = f"{self.run_dir}: " if self.run_dir is not None else ""  # which fold and branch
            raise ConfigError(
                f"{where}train.batch_size={cfg.batch_size}: the training data gives {batches} micro-batch(es) per "
                f"process, fewer than one optimizer step (grad_accum={cfg.grad_accum}); lower train.batch_size"
            )
        total_steps = cfg.iterations if cfg.iterations is not None else cfg.epochs * steps_per_epoch  # type: ignore[operator]
        schedule = LRSchedule(cfg.schedule, cfg.lr, steps_per_epoch, total_steps)

        resumed = self._start(resume, total_steps)
        logs = RunLogger(
            self.run_dir,
            cfg,
            enabled=self.ctx.is_main,
            total_steps=total_steps,
            resumed_step=self.state.step if resumed else None,
        )
        try:
            self._loop(train_loader, val_loader, val_sharded, schedule, steps_per_epoch, total_steps, logs)
        finally:
            logs.close()
        restored = self._restore_best()
        result = FitResult(
            steps=self.state.step,
            epochs=self.state.step / steps_per_epoch,
            select_metric=cfg.select_metric,
            best_value=self.state.best_value,
            best_step=self.state.best_step,
            stopped_early=self.state.stopped_early,
            restored_best=restored,
            history=list(self.state.history),
            run_dir=str(self.run_dir) if self.run_dir else None,
            last_checkpoint=str(self.checkpoint_dir / "last.json") if self.checkpoint_dir else None,
            best_checkpoint=str(self.checkpoint_dir / "best.json")
            if self.checkpoint_dir and self.state.best_step is not None
            else None,
        )
        if self.run_dir is not None and self.ctx.is_main:
            atomic_write_json(self.run_dir / "fit_result.json", dataclasses.asdict(result))
        return result

    # -- set-up --------------------------------------------------------------------------------

    def _configure_backends(self) -> None:
        if self.config.deterministic:
            os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
            torch.use_deterministic_algorithms(True)
        elif self.device.type == "cuda":
            torch.backends.cudnn.benchmark = True  # fixed input sizes: let cuDNN pick the fastest kernels
            torch.set_float32_matmul_precision("high")  # TF32 for whatever runs outside bf16 autocast

    def _train_loader(self, data: Dataset | DataLoader) -> DataLoader:
        if isinstance(data, DataLoader):
            return data
        cfg = self.config
        return build_loader(
            data,
            batch_size=self.micro_batch,
            device=self.device,
            ctx=self.ctx,
            seed=self.seed,
            train=True,
            multiple_of=cfg.batch_size,
            num_workers=cfg.num_workers,
            prefetch_factor=cfg.prefetch_factor,
        )

    def _val_loader(self, data: Dataset | DataLoader | None) -> tuple[DataLoader | None, bool]:
        if data is None or isinstance(data, DataLoader):
            return data, False
        cfg = self.config
        loader = build_loader(
            data,
            batch_size=cfg.eval_batch_size or 2 * self.micro_batch,
            device=self.device,
            ctx=self.ctx,
            seed=self.seed,
            train=False,
            num_workers=cfg.num_workers,
            prefetch_factor=cfg.prefetch_factor,
        )
        return loader, True

    def _start(self, resume: bool, total_steps: int) -> bool:
        """Load ``last`` (resume) or seed a fresh run; save the config. True when resumed."""
        last = self.checkpoint_dir / "last.json" if self.checkpoint_dir else None
        if resume and last is None:
            raise ConfigError("resume needs a run folder (run_dir) to resume from")
        if last is not None and last.is_file():
            if not resume:
                raise CheckpointError(
                    f"{self.run_dir}: already holds a checkpoint ({last}); resume it (--resume) or choose a new run folder"
                )
            self._load_last(read_checkpoint(last), total_steps)
            return True
        seed_everything(derive_seed(self.seed, self.ctx.rank))
        if self.run_dir is not None and self.ctx.is_main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            if self.experiment is not None:
                save_config(self.experiment, self.run_dir / "config.yaml")
        return False

    def _load_last(self, checkpoint: Checkpoint, total_steps: int) -> None:
        saved_train = checkpoint.info.get("train", {})
        for key in ("batch_size", "grad_accum"):
            if saved_train.get(key) != getattr(self.config, key):
                raise CheckpointError(
                    f"{checkpoint.path}: was trained with train.{key}={saved_train.get(key)}, "
                    f"now {getattr(self.config, key)}; resuming would change the data order"
                )
        if checkpoint.info.get("seed") != self.seed:
            raise CheckpointError(
                f"{checkpoint.path}: was trained with seed {checkpoint.info.get('seed')}, now {self.seed}"
            )
        checkpoint.load_into(self.model)
        state = checkpoint.trainer_state()
        progress = TrainState(**state["progress"])
        if state["optimizer"] is None:  # the run had ended (see _save): it can be reported, not continued
            if progress.step < total_steps and not progress.stopped_early:
                raise CheckpointError(
                    f"{checkpoint.path}: this run ended at step {progress.step} and kept no optimizer state, so it "
                    f"cannot be continued to {total_steps} steps; train into a new run folder"
                )
        else:
            self.optimizer.load_state_dict(state["optimizer"])
        rng_states = state["rng"]
        if len(rng_states) == self.ctx.world_size:
            restore_rng_state(rng_states[self.ctx.rank])
        else:  # a different number of processes: data order is unchanged, dropout streams are new
            log.warning(
                "%s: saved by %d process(es), resumed by %d; model RNG streams are re-seeded",
                checkpoint.path,
                len(rng_states),
                self.ctx.world_size,
            )
            seed_everything(derive_seed(self.seed, self.ctx.rank, checkpoint.step))
        self.state = progress

    # -- the loop ------------------------------------------------------------------------------

    def _loop(
        self,
        loader: DataLoader,
        val_loader: DataLoader | None,
        val_sharded: bool,
        schedule: LRSchedule,
        steps_per_epoch: int,
        total_steps: int,
        logs: RunLogger,
    ) -> None:
        cfg, state, device = self.config, self.state, self.device
        accum = cfg.grad_accum
        batches_per_epoch = steps_per_epoch * accum
        stats = torch.zeros(2, device=device, dtype=torch.float64)  # loss x n and correct, since the last flush
        seen = [0]  # samples since the last flush: known on the host, no sync needed
        window = RunningTotals()
        since_eval = RunningTotals(*state.train_totals)
        self.train_module.train()
        while state.step < total_steps and not state.stopped_early:
            batches = self._epoch_batches(loader, state.epoch, state.batches_in_epoch)
            for inputs, target in batches:
                inputs = to_device(inputs, device, self.channels_last)
                target = target.to(device, non_blocking=True)
                last_micro = (state.batches_in_epoch + 1) % accum == 0
                # Accumulating micro-batches skip DDP's gradient all-reduce; the last one does it.
                with self._ddp.no_sync() if self._ddp is not None and not last_micro else contextlib.nullcontext():
                    with autocast(device, self.use_amp):
                        output = call_model(self.train_module, inputs)
                        loss = self.loss_fn(output, target)
                    (loss / accum).backward()
                stats += _batch_stats(loss, output, target)
                seen[0] += target.shape[0]
                state.batches_in_epoch += 1
                if not last_micro:
                    continue

                self.lr = schedule.lr_at(state.step)
                set_lr(self.optimizer, self.lr)
                if cfg.grad_clip is not None:
                    torch.nn.utils.clip_grad_norm_(self.model.parameters(), cfg.grad_clip)
                self.optimizer.step()
                self.optimizer.zero_grad(set_to_none=True)
                state.step += 1
                for callback in self.callbacks:
                    callback(self)

                end_of_epoch = state.batches_in_epoch >= batches_per_epoch
                if end_of_epoch:
                    state.epoch += 1
                    state.batches_in_epoch = 0
                finished = state.step >= total_steps
                if state.step % cfg.log_every == 0 or finished:
                    self._flush(stats, seen, window, since_eval)
                    logs.step(
                        state.step, state.step / steps_per_epoch, self.lr, {**window.means(), **window.throughput()}
                    )
                    window.reset()
                logs.advance(state.step)
                evaluate = finished or (state.step % cfg.eval_every == 0 if cfg.eval_every else end_of_epoch)
                if evaluate:
                    self._flush(stats, seen, window, since_eval)
                    self._evaluate(val_loader, val_sharded, since_eval.means(), steps_per_epoch, logs)
                    since_eval.reset()
                    state.train_totals = since_eval.as_list()
                    self._save("last", final=finished or state.stopped_early)
                elif cfg.checkpoint_every and state.step % cfg.checkpoint_every == 0:
                    self._flush(stats, seen, window, since_eval)
                    state.train_totals = since_eval.as_list()  # so a resumed run reports the same train loss
                    self._save("last")
                if finished or state.stopped_early or end_of_epoch:
                    break
            else:  # a foreign loader that ran out before its len(): end the epoch, drop partial gradients
                state.epoch += 1
                state.batches_in_epoch = 0
                self.optimizer.zero_grad(set_to_none=True)

    def _epoch_batches(self, loader: DataLoader, epoch: int, skip: int) -> Iterable[Any]:
        """The batches of ``epoch`` from micro-batch ``skip`` on (consumed ones are not loaded)."""
        sampler = loader.sampler
        if isinstance(sampler, EpochSampler):
            sampler.set_epoch(epoch)
            sampler.set_start(skip * loader.batch_size)  # type: ignore[operator]
            return loader
        if hasattr(sampler, "set_epoch"):
            sampler.set_epoch(epoch)  # e.g. torch's DistributedSampler
        iterator = iter(loader)
        for _ in range(skip):  # a foreign loader: replay its order to the resume point
            next(iterator)
        return iterator

    def _flush(self, stats: Tensor, seen: list[int], *totals: RunningTotals) -> None:
        """Move the on-device loss/accuracy sums to the host (one sync, summed over ranks)."""
        chunk = torch.cat([stats, stats.new_tensor([seen[0]])])
        loss_sum, correct, count = all_reduce_sum(chunk, self.ctx).tolist()
        stats.zero_()
        seen[0] = 0
        for t in totals:
            t.add(loss_sum, correct, count)

    def _evaluate(
        self,
        val_loader: DataLoader | None,
        sharded: bool,
        train_totals: dict[str, float],
        steps_per_epoch: int,
        logs: RunLogger,
    ) -> None:
        cfg, state = self.config, self.state
        metrics: dict[str, float] = {}
        if val_loader is not None:
            probs, targets = predict_probabilities(
                self.model, val_loader, self.device, self.use_amp, self.channels_last
            )
            if sharded:
                probs, targets = gather_sharded([probs, targets], self.ctx)
            metrics.update(classification_metrics(probs, targets, prefix="val_"))
        if self.validate is not None:
            metrics.update({k: float(v) for k, v in self.validate(self.model).items()})
            self.model.train()
        metrics = broadcast_object(metrics, self.ctx)
        row = {"step": state.step, "epoch": state.step / steps_per_epoch, "lr": self.lr, **train_totals, **metrics}
        improved = False
        if metrics:
            if cfg.select_metric not in metrics:
                raise ConfigError(
                    f"train.select_metric={cfg.select_metric!r} is not among the validation metrics {sorted(metrics)}"
                )
            value = metrics[cfg.select_metric]
            improved = state.best_value is None or (
                value < state.best_value if self._minimise else value > state.best_value
            )
            if improved:
                state.best_value, state.best_step, state.evals_since_best = value, state.step, 0
            else:
                state.evals_since_best += 1
                state.stopped_early = cfg.early_stopping is not None and state.evals_since_best >= cfg.early_stopping
        state.history.append(row)
        logs.evaluation(row, improved, cfg.select_metric)
        if improved:
            self._save_best(metrics)

    @property
    def _minimise(self) -> bool:
        mode = self.config.select_mode
        return self.config.select_metric.endswith("loss") if mode == "auto" else mode == "min"

    # -- checkpoints ---------------------------------------------------------------------------

    def _info(self, metrics: Mapping[str, float]) -> dict[str, Any]:
        return {
            **self.checkpoint_info,
            "epoch": self.state.epoch,
            "metrics": dict(metrics),
            "select_metric": self.config.select_metric,
            "best_value": self.state.best_value,
            "best_step": self.state.best_step,
            "world_size": self.ctx.world_size,
            "train": config_to_dict(self.config),
        }

    def _save(self, tag: str, final: bool = False) -> None:
        """Write ``tag`` with the trainer state (a collective: every rank calls it).

        A ``final`` checkpoint (the run has ended) keeps no optimizer state: nothing will step that
        optimizer again, and its moments cost twice the model (AdamW). System B's cross-fitting
        alone pre-trains nine encoders per fold.
        """
        rng = all_gather_objects(capture_rng_state(), self.ctx)
        if self.checkpoint_dir is None or not self.ctx.is_main:
            return
        optimizer = None if final else self.optimizer.state_dict()
        state = {"optimizer": optimizer, "rng": rng, "progress": dataclasses.asdict(self.state)}
        metrics = self.state.history[-1] if self.state.history else {}
        save_checkpoint(
            self.checkpoint_dir, tag, model=self.model, step=self.state.step, info=self._info(metrics), state=state
        )

    def _save_best(self, metrics: Mapping[str, float]) -> None:
        if not self.config.restore_best and self.checkpoint_dir is None:
            return
        if self.checkpoint_dir is None:
            self._best_weights = {k: v.detach().clone() for k, v in self.model.state_dict().items()}
        elif self.ctx.is_main:
            save_checkpoint(
                self.checkpoint_dir, "best", model=self.model, step=self.state.step, info=self._info(metrics)
            )

    def _restore_best(self) -> bool:
        """Load the best weights into the model if configured and a best exists."""
        if not self.config.restore_best or self.state.best_step is None:
            return False
        if self.checkpoint_dir is None:
            if self._best_weights is None:  # pragma: no cover - best_step implies a copy was kept
                return False
            self.model.load_state_dict(self._best_weights)
        else:
            if self.ctx.is_distributed:
                torch.distributed.barrier()  # rank 0 has finished writing best
            read_checkpoint(self.checkpoint_dir / "best.json").load_into(self.model)
        return True


# ---------------------------------------------------------------------------------------------


def build_optimizer(model: nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    """SGD (momentum, optional Nesterov) or AdamW over the trainable parameters.

    Weight decay applies to every parameter, as in Caffe's default solver (paper A) and torch's
    optimizers.
    """
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ConfigError("the model has no trainable parameters")
    if config.optimizer == "sgd":
        return torch.optim.SGD(
            params, lr=config.lr, momentum=config.momentum, nesterov=config.nesterov, weight_decay=config.weight_decay
        )
    return torch.optim.AdamW(params, lr=config.lr, betas=config.betas, weight_decay=config.weight_decay)


def classification_metrics(probs: np.ndarray, targets: np.ndarray, prefix: str = "") -> dict[str, float]:
    """Mean negative log-likelihood and accuracy of class probabilities against integer targets."""
    if len(targets) == 0:
        return {}
    picked = probs[np.arange(len(targets)), targets].astype(np.float64)
    return {
        f"{prefix}loss": float(-np.log(np.clip(picked, 1e-12, None)).mean()),
        f"{prefix}accuracy": float((probs.argmax(axis=1) == targets).mean()),
    }


def _batch_stats(loss: Tensor, output: Any, target: Tensor) -> Tensor:
    """(loss x n, correct) of one micro-batch, on device (no host sync)."""
    logits = main_logits(output)
    if logits.dim() == 2 and target.dim() == 1 and not target.is_floating_point():
        correct = (logits.argmax(dim=1) == target).sum()
    else:  # not a classification target: accuracy is not defined
        correct = torch.zeros((), device=target.device)
    return torch.stack([loss.detach().double() * target.shape[0], correct.double()])


@dataclass
class RunningTotals:
    """Sums of loss x n, correct and n over a stretch of training, with the wall time it took."""

    loss_sum: float = 0.0
    correct: float = 0.0
    count: float = 0.0
    started: float = field(default_factory=time.perf_counter)

    def add(self, loss_sum: float, correct: float, count: float) -> None:
        """Accumulate one flushed chunk."""
        self.loss_sum += loss_sum
        self.correct += correct
        self.count += count

    def means(self) -> dict[str, float]:
        """Mean train loss and accuracy over the stretch."""
        n = max(self.count, 1.0)
        return {"train_loss": self.loss_sum / n, "train_accuracy": self.correct / n}

    def throughput(self) -> dict[str, float]:
        """Training images per second (all processes) over the stretch."""
        elapsed = time.perf_counter() - self.started
        return {"images_per_s": self.count / elapsed if elapsed > 0 else math.nan}

    def as_list(self) -> list[float]:
        """The three sums, for a checkpoint."""
        return [self.loss_sum, self.correct, self.count]

    def reset(self) -> None:
        """Start a new stretch."""
        self.loss_sum = self.correct = self.count = 0.0
        self.started = time.perf_counter()


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
