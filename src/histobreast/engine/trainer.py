"""The one training loop of histobreast: every model, every system, one process or many.

``Trainer(model, train_config, ...).fit(train_data, val_data)`` trains any ``nn.Module`` on
batches ``(inputs, target)`` (``inputs`` a tensor or a dict of tensors passed as keyword
arguments). It does SGD/AdamW with the papers' schedules, bf16 autocast and channels_last on GPU,
gradient accumulation and clipping, DDP under torchrun, best-on-validation selection and early
stopping, atomic checkpoints (``last`` and ``best``) and exact resumption, CSV/TensorBoard logs
and a rich progress bar. See docs/engine.md.

This module holds the loop; beside it: checkpoints and resumption (``run_checkpoints.py``), logs
(``run_log.py``), loss/accuracy sums (``train_stats.py``), the optimizer (``optimizer.py``) and the
run's counters (``train_state.py``).

Exact resumption: data order and augmentation are pure functions of ``(seed, epoch, index)``
(``engine.distributed``), the learning rate a pure function of the step (``engine.schedules``),
and a ``last`` checkpoint stores weights, optimizer tensors, every generator's state and the
position inside the epoch; a resumed run skips the consumed batches and continues bit for bit.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Dataset

from histobreast.atomic import atomic_write_json
from histobreast.config import build_dataclass, config_to_dict
from histobreast.engine.config import TrainConfig
from histobreast.engine.distributed import (
    DistributedContext,
    EpochSampler,
    all_reduce_sum,
    broadcast_object,
    build_loader,
    context_from_env,
    gather_sharded,
    init_distributed,
    resolve_device,
)
from histobreast.engine.inference import autocast, call_model, predict_probabilities, resolve_flag, to_device
from histobreast.engine.losses import ClassificationLoss
from histobreast.engine.optimizer import build_optimizer
from histobreast.engine.run_checkpoints import RunCheckpoints
from histobreast.engine.run_log import RunLogger
from histobreast.engine.schedules import LRSchedule, set_lr
from histobreast.engine.train_state import FitResult, TrainState
from histobreast.engine.train_stats import RunningTotals, batch_stats, classification_metrics
from histobreast.errors import ConfigError

LossFn = Callable[[Any, Tensor], Tensor]
ValidateFn = Callable[[nn.Module], Mapping[str, float]]
StepCallback = Callable[["Trainer"], None]


class Trainer(RunCheckpoints):
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
            batch_size=cfg.eval_batch(self.ctx.world_size),
            device=self.device,
            ctx=self.ctx,
            seed=self.seed,
            train=False,
            num_workers=cfg.num_workers,
            prefetch_factor=cfg.prefetch_factor,
        )
        return loader, True

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
                stats += batch_stats(loss, output, target)
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
