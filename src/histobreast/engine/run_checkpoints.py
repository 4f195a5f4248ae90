"""Checkpoints of a Trainer's run: start fresh or resume ``last`` exactly, save ``last`` and ``best``,
restore the best weights at the end. A mixin of :class:`~histobreast.engine.trainer.Trainer`, whose
attributes (declared below) it reads and whose ``state`` it replaces on resumption.

Every rank calls :meth:`RunCheckpoints._save` (it gathers every process's RNG state); only the main
process writes, atomically.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from histobreast.config import config_to_dict, save_config
from histobreast.engine.checkpoint import CHECKPOINT_DIR, Checkpoint, read_checkpoint, save_checkpoint
from histobreast.engine.config import TrainConfig
from histobreast.engine.distributed import DistributedContext, all_gather_objects
from histobreast.engine.train_state import TrainState
from histobreast.errors import CheckpointError, ConfigError
from histobreast.seeding import capture_rng_state, derive_seed, restore_rng_state, seed_everything

log = logging.getLogger(__name__)


class RunCheckpoints:
    """Saving, resuming and restoring the best of a training run (mixed into ``Trainer``)."""

    config: TrainConfig
    seed: int
    run_dir: Path | None
    ctx: DistributedContext
    model: nn.Module
    optimizer: torch.optim.Optimizer
    state: TrainState
    experiment: Any | None  # the whole experiment config dataclass (pipelines.config.ExperimentConfig)
    checkpoint_info: dict[str, Any]
    _best_weights: dict[str, Tensor] | None

    @property
    def checkpoint_dir(self) -> Path | None:
        """``run_dir/checkpoints`` (None when training in memory)."""
        return self.run_dir / CHECKPOINT_DIR if self.run_dir is not None else None

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
