"""The training loop on tiny models: learning, aux heads, dict inputs, accumulation, selection,
early stopping, logs, and exact resumption after an interruption (in process and a real SIGKILL).

Run as a script (``python tests/test_engine_trainer.py RUN_DIR KILL_AT``) it trains the tiny
reference run and SIGKILLs itself after optimizer step ``KILL_AT``: the subprocess half of the
hard-kill test.
"""

from __future__ import annotations

import contextlib
import csv
import json
import os
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset

from histobreast.engine.checkpoint import read_checkpoint
from histobreast.engine.config import TrainConfig
from histobreast.engine.trainer import Trainer
from histobreast.errors import CheckpointError, ConfigError


class NoisyBlobs(Dataset):
    """Two Gaussian blobs; each item adds fresh noise from the global torch RNG (a random augmentation)."""

    def __init__(self, n: int = 48, dim: int = 6, noise: float = 0.3, seed: int = 0) -> None:
        g = torch.Generator().manual_seed(seed)
        self.y = torch.arange(n) % 2
        self.x = torch.randn(n, dim, generator=g) * 0.5 + (self.y[:, None] * 2 - 1).float()
        self.noise = noise

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i: int) -> tuple[Tensor, Tensor]:
        return self.x[i] + self.noise * torch.randn(self.x.shape[1]), self.y[i]


class TinyNet(nn.Module):
    """MLP with optional dropout and, like GoogLeNet, an auxiliary head used in train mode only."""

    def __init__(self, dim: int = 6, classes: int = 2, dropout: float = 0.0, aux: bool = False) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Linear(dim, 16), nn.ReLU(), nn.Dropout(dropout))
        self.head = nn.Linear(16, classes)
        self.aux = nn.Linear(16, classes) if aux else None

    def forward(self, x: Tensor) -> Tensor | dict[str, Any]:
        h = self.body(x)
        if self.training and self.aux is not None:
            return {"logits": self.head(h), "aux": [self.aux(h)]}
        return self.head(h)


def tiny_config(**overrides: Any) -> TrainConfig:
    """48 samples / batch 8 = 6 optimizer steps per epoch; no workers, bars or TensorBoard."""
    values: dict[str, Any] = dict(
        epochs=2, batch_size=8, lr=0.1, momentum=0.9, num_workers=0, log_every=1, progress=False, tensorboard=False
    )
    values.update(overrides)
    return TrainConfig(**values)


def make_model(seed: int = 0, **kwargs: Any) -> TinyNet:
    torch.manual_seed(seed)
    return TinyNet(**kwargs)


def weights_of(model: nn.Module) -> dict[str, Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def assert_same_weights(a: dict[str, Tensor], b: dict[str, Tensor], atol: float = 0.0) -> None:
    assert a.keys() == b.keys()
    for key in a:
        if atol == 0.0:
            assert torch.equal(a[key], b[key]), key
        else:
            torch.testing.assert_close(a[key], b[key], atol=atol, rtol=0.0, msg=key)


class Interrupted(Exception):
    """Stands in for a crash in the middle of training."""


def crash_at(step: int):
    def callback(trainer: Trainer) -> None:
        if trainer.state.step == step:
            raise Interrupted(step)

    return callback


def resume_run_config() -> TrainConfig:
    """Dropout, momentum, checkpoints every 4 steps (mid-epoch: 6 steps per epoch), 3 epochs."""
    return tiny_config(epochs=3, checkpoint_every=4)


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as fh:
        return list(csv.DictReader(fh))


@contextlib.contextmanager
def one_thread() -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


# --- learning --------------------------------------------------------------------------------


def test_a_few_steps_lower_the_loss() -> None:
    model = make_model()
    result = Trainer(model, tiny_config(epochs=4, restore_best=False)).fit(NoisyBlobs(), NoisyBlobs(seed=1))
    losses = [row["train_loss"] for row in result.history]
    assert result.steps == 24 and len(losses) == 4
    assert losses[-1] < 0.5 * losses[0]
    assert result.history[-1]["val_accuracy"] >= 0.9


def test_aux_head_model_trains_and_validates_on_main_logits() -> None:
    model = make_model(aux=True)
    aux_before = model.aux.weight.detach().clone()  # type: ignore[union-attr]
    result = Trainer(model, tiny_config(epochs=3)).fit(NoisyBlobs(), NoisyBlobs(seed=1))
    assert not torch.equal(aux_before, model.aux.weight)  # type: ignore[union-attr]  # the aux loss reached it
    # Train loss includes 0.3 x the aux CE, so it exceeds the validation NLL of the main head at the start.
    assert result.history[0]["train_loss"] > result.history[0]["val_loss"]
    assert result.history[-1]["val_accuracy"] >= 0.9


class DictInputs(Dataset):
    """Inputs as a dict of tensors, like the hybrid model's {"global", "patches"}."""

    def __init__(self) -> None:
        self.base = NoisyBlobs(n=32)

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, i: int) -> tuple[dict[str, Tensor], Tensor]:
        x, y = self.base[i]
        return {"whole": x, "parts": torch.stack([x, -x])}, y


class TwoInputNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a, self.b = nn.Linear(6, 2), nn.Linear(6, 2)

    def forward(self, whole: Tensor, parts: Tensor) -> Tensor:
        return self.a(whole) + self.b(parts[:, 0] - parts[:, 1]) / 2


def test_dict_inputs_are_passed_as_keyword_arguments() -> None:
    torch.manual_seed(0)
    result = Trainer(TwoInputNet(), tiny_config(epochs=3)).fit(DictInputs(), DictInputs())
    assert result.history[-1]["val_accuracy"] >= 0.9


def test_gradient_accumulation_equals_the_larger_batch() -> None:
    data = NoisyBlobs()
    big = make_model()
    Trainer(big, tiny_config(epochs=2, grad_accum=1, restore_best=False)).fit(data)
    accumulated = make_model()
    Trainer(accumulated, tiny_config(epochs=2, grad_accum=4, restore_best=False)).fit(data)
    assert_same_weights(weights_of(big), weights_of(accumulated), atol=1e-6)
    other = make_model()
    Trainer(other, tiny_config(epochs=2, batch_size=2, restore_best=False)).fit(data)
    assert not torch.allclose(weights_of(other)["head.weight"], weights_of(big)["head.weight"], atol=1e-3)


def test_iteration_based_run_stops_at_the_step_count_and_evaluates_every_n() -> None:
    model = make_model()
    result = Trainer(model, tiny_config(epochs=None, iterations=9, eval_every=4)).fit(NoisyBlobs(), NoisyBlobs())
    assert result.steps == 9
    assert [row["step"] for row in result.history] == [4, 8, 9]  # every 4 steps, and at the end
    assert result.epochs == pytest.approx(1.5)


def test_weight_decay_and_clipping_are_applied() -> None:
    model = make_model()
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(100.0)
    before = weights_of(model)
    cfg = tiny_config(epochs=None, iterations=1, momentum=0.0, lr=1.0, grad_clip=1e-3, weight_decay=0.5)
    Trainer(model, cfg).fit(NoisyBlobs())
    # One SGD step: w <- w - lr * (clipped grad + wd * w); the clipped part moves w by at most 1e-3 in norm.
    for key, w0 in before.items():
        expected = w0 * (1 - 0.5)
        assert (model.state_dict()[key] - expected).norm() <= 1e-3 + 1e-6


# --- selection, early stopping, logs ------------------------------------------------------------


def test_best_checkpoint_and_early_stopping(tmp_path: Path) -> None:
    scores = iter([0.5, 0.8, 0.7, 0.6, 0.9, 0.95])
    snapshots: dict[int, dict[str, Tensor]] = {}
    model = make_model()
    trainer = Trainer(
        model,
        tiny_config(epochs=6, early_stopping=2, select_metric="score"),
        run_dir=tmp_path,
        validate=lambda m: {"score": next(scores)},
        callbacks=[lambda t: snapshots.__setitem__(t.state.step, weights_of(t.model))],
    )
    result = trainer.fit(NoisyBlobs())
    assert result.stopped_early and result.steps == 4 * 6  # no improvement at evaluations 3 and 4
    assert result.best_value == 0.8 and result.best_step == 12
    assert [row["score"] for row in result.history] == [0.5, 0.8, 0.7, 0.6]
    assert result.restored_best
    assert_same_weights(weights_of(model), snapshots[12])
    best = read_checkpoint(tmp_path, "best")
    assert best.step == 12 and best.info["metrics"]["score"] == 0.8
    assert_same_weights(best.state_dict(), snapshots[12])
    assert read_checkpoint(tmp_path, "last").step == 24
    rows = read_csv(tmp_path / "eval_log.csv")
    assert [r["step"] for r in rows] == ["6", "12", "18", "24"]
    assert json.loads((tmp_path / "fit_result.json").read_text())["best_step"] == 12


def test_minimised_metric_and_in_memory_best() -> None:
    losses = iter([0.9, 0.4, 0.6])
    snapshots: dict[int, dict[str, Tensor]] = {}
    model = make_model()
    result = Trainer(
        model,
        tiny_config(epochs=3, select_metric="my_loss"),
        validate=lambda m: {"my_loss": next(losses)},
        callbacks=[lambda t: snapshots.__setitem__(t.state.step, weights_of(t.model))],
    ).fit(NoisyBlobs())
    assert result.best_step == 12 and result.best_value == 0.4 and result.best_checkpoint is None
    assert_same_weights(weights_of(model), snapshots[12])


def test_unknown_select_metric_and_early_stopping_without_validation_are_errors() -> None:
    with pytest.raises(ConfigError, match=r"train\.select_metric='val_f1' is not among"):
        Trainer(make_model(), tiny_config(select_metric="val_f1")).fit(NoisyBlobs(), NoisyBlobs())
    with pytest.raises(ConfigError, match="early_stopping needs validation"):
        Trainer(make_model(), tiny_config(early_stopping=1)).fit(NoisyBlobs())


def test_run_folder_logs_and_tensorboard(tmp_path: Path) -> None:
    Trainer(make_model(), tiny_config(tensorboard=True, log_every=2), run_dir=tmp_path).fit(NoisyBlobs(), NoisyBlobs())
    steps = read_csv(tmp_path / "train_log.csv")
    assert [r["step"] for r in steps] == ["2", "4", "6", "8", "10", "12"]
    assert {"lr", "train_loss", "train_accuracy", "images_per_s"} <= steps[0].keys()
    assert list(read_csv(tmp_path / "eval_log.csv")[0])[:3] == ["step", "epoch", "lr"]
    assert list((tmp_path / "tensorboard").glob("events.out.tfevents.*"))


def test_invalid_setups_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="fewer than one optimizer step"):
        Trainer(make_model(), tiny_config(batch_size=64)).fit(NoisyBlobs())
    with pytest.raises(ConfigError, match=rf"^{re.escape(str(tmp_path / 'fold5'))}: train\.batch_size=64: .*lower"):
        Trainer(make_model(), tiny_config(batch_size=64), run_dir=tmp_path / "fold5").fit(NoisyBlobs())
    with pytest.raises(ConfigError, match=r"train\.epochs: set exactly one"):
        Trainer(make_model(), TrainConfig())
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="CUDA is not available"):
            Trainer(make_model(), tiny_config(device="cuda"))
    Trainer(make_model(), tiny_config(epochs=1), run_dir=tmp_path).fit(NoisyBlobs())
    with pytest.raises(CheckpointError, match="already holds a checkpoint"):
        Trainer(make_model(), tiny_config(epochs=1), run_dir=tmp_path).fit(NoisyBlobs())
    with pytest.raises(CheckpointError, match=r"train\.batch_size=8, now 4"):
        Trainer(make_model(), tiny_config(epochs=1, batch_size=4), run_dir=tmp_path).fit(NoisyBlobs(), resume=True)


# --- exact resumption --------------------------------------------------------------------------


@pytest.mark.parametrize("optimizer", ["sgd", "adamw"])
def test_interrupted_run_resumes_to_identical_weights(tmp_path: Path, optimizer: str) -> None:
    cfg = resume_run_config()
    cfg.optimizer = optimizer
    cfg.lr = 0.1 if optimizer == "sgd" else 0.01
    reference = make_model(dropout=0.3)
    ref_result = Trainer(reference, cfg, run_dir=tmp_path / "ref").fit(NoisyBlobs(), NoisyBlobs(seed=1))

    with pytest.raises(Interrupted):  # crash after step 11; the last checkpoint is step 8 (epoch 2, batch 2)
        Trainer(make_model(dropout=0.3), cfg, run_dir=tmp_path / "run", callbacks=[crash_at(11)]).fit(
            NoisyBlobs(), NoisyBlobs(seed=1)
        )
    assert read_checkpoint(tmp_path / "run", "last").step == 8
    resumed = make_model(seed=123, dropout=0.3)  # a different init: everything must come from the checkpoint
    result = Trainer(resumed, cfg, run_dir=tmp_path / "run").fit(NoisyBlobs(), NoisyBlobs(seed=1), resume=True)

    assert_same_weights(weights_of(resumed), weights_of(reference))
    assert_same_weights(
        read_checkpoint(tmp_path / "run", "last").state_dict(), read_checkpoint(tmp_path / "ref", "last").state_dict()
    )
    assert result.history == ref_result.history  # train loss since the last evaluation included
    logged = [r["step"] for r in read_csv(tmp_path / "run" / "train_log.csv")]
    assert logged == [str(s) for s in range(1, 19)]  # rows after the checkpoint were dropped, not duplicated


def test_resume_of_a_finished_run_changes_nothing(tmp_path: Path) -> None:
    model = make_model()
    Trainer(model, tiny_config(), run_dir=tmp_path).fit(NoisyBlobs())
    again = make_model(seed=5)
    result = Trainer(again, tiny_config(), run_dir=tmp_path).fit(NoisyBlobs(), resume=True)
    assert result.steps == 12
    assert_same_weights(weights_of(again), weights_of(model))


def test_a_finished_run_keeps_no_optimizer_state_and_cannot_be_stretched(tmp_path: Path) -> None:
    cfg = tiny_config(optimizer="adamw", checkpoint_every=4)
    run = tmp_path / "run"
    with pytest.raises(Interrupted):
        Trainer(make_model(), cfg, callbacks=[crash_at(10)], run_dir=run).fit(NoisyBlobs())
    interrupted = read_checkpoint(run, "last")
    assert interrupted.trainer_state()["optimizer"] is not None  # resumable
    with_moments = interrupted.state_path.stat().st_size  # type: ignore[union-attr]
    Trainer(make_model(), cfg, run_dir=run).fit(NoisyBlobs(), resume=True)
    last = read_checkpoint(run, "last")
    assert last.step == 12 and last.trainer_state()["optimizer"] is None
    # AdamW's two moments per weight are gone; the RNG states are left
    moments = 2 * last.weights_path.stat().st_size
    assert last.state_path is not None and last.state_path.stat().st_size < with_moments - moments * 0.8
    with pytest.raises(CheckpointError, match="ended at step 12 and kept no optimizer state.*18 steps"):
        Trainer(make_model(), tiny_config(optimizer="adamw", epochs=3), run_dir=run).fit(NoisyBlobs(), resume=True)


def test_resume_with_nothing_to_resume_starts_fresh(tmp_path: Path) -> None:
    a, b = make_model(), make_model()
    Trainer(a, tiny_config(), run_dir=tmp_path / "a").fit(NoisyBlobs(), resume=True)
    Trainer(b, tiny_config()).fit(NoisyBlobs())
    assert_same_weights(weights_of(a), weights_of(b))


def test_foreign_dataloader_is_used_as_given() -> None:
    data = NoisyBlobs()
    loader = DataLoader(data, batch_size=4, shuffle=False)
    model = make_model()
    result = Trainer(model, tiny_config(batch_size=8, grad_accum=2, epochs=1)).fit(
        loader, DataLoader(data, batch_size=16)
    )
    assert result.steps == 6  # 12 micro-batches of 4, two per step
    assert result.history[-1]["val_accuracy"] > 0.5


def run_until_killed(run_dir: Path, kill_at: int) -> None:
    """Script half of the hard-kill test: train the resume reference run, SIGKILL after ``kill_at``."""

    def kill(trainer: Trainer) -> None:
        if trainer.state.step == kill_at:
            os.kill(os.getpid(), signal.SIGKILL)

    torch.set_num_threads(1)
    Trainer(make_model(dropout=0.3), resume_run_config(), run_dir=run_dir, callbacks=[kill]).fit(
        NoisyBlobs(), NoisyBlobs(seed=1)
    )


def test_sigkilled_process_resumes_to_identical_weights(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [os.environ.get("PYTHONPATH"), *sys.path]))}
    proc = subprocess.run(
        [sys.executable, __file__, str(tmp_path / "run"), "10"], env=env, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    assert read_checkpoint(tmp_path / "run", "last").step == 8
    with one_thread():
        resumed = make_model(seed=99, dropout=0.3)
        Trainer(resumed, resume_run_config(), run_dir=tmp_path / "run").fit(
            NoisyBlobs(), NoisyBlobs(seed=1), resume=True
        )
        reference = make_model(dropout=0.3)
        Trainer(reference, resume_run_config()).fit(NoisyBlobs(), NoisyBlobs(seed=1))
    assert_same_weights(weights_of(resumed), weights_of(reference))


if __name__ == "__main__":
    run_until_killed(Path(sys.argv[1]), int(sys.argv[2]))
