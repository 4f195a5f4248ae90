"""Deterministic sharding, per-sample seeding, and a real 2-process gloo DDP run.

Run as a script with torchrun's environment (RANK, LOCAL_RANK, WORLD_SIZE, MASTER_ADDR,
MASTER_PORT; the test sets them itself, which saves the launcher's start-up on a 2-core machine;
``torchrun --standalone --nproc_per_node=2 tests/test_engine_distributed.py OUT`` works the same)
this file is the DDP worker: it trains the tiny run fresh into ``OUT/ddp`` and resumes a
single-process checkpoint in ``OUT/resume``.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import Dataset

from histobreast.engine.checkpoint import read_checkpoint
from histobreast.engine.distributed import (
    DistributedContext,
    EpochSampler,
    SeededSamples,
    build_loader,
    context_from_env,
    gather_sharded,
)
from histobreast.engine.trainer import Trainer
from histobreast.errors import ConfigError
from test_engine_trainer import (
    Interrupted,
    NoisyBlobs,
    assert_same_weights,
    crash_at,
    make_model,
    tiny_config,
    weights_of,
)

CPU = torch.device("cpu")


def ddp_config():
    """Batch 8 = 2 processes x 4; no dropout (each process has its own dropout stream)."""
    return tiny_config(epochs=2, checkpoint_every=2, restore_best=False)


def test_epoch_order_is_a_pure_function_of_seed_and_epoch() -> None:
    a, b = EpochSampler(10, seed=3), EpochSampler(10, seed=3)
    a.set_epoch(1)
    b.set_epoch(1)
    assert list(a) == list(b) and sorted(a) == list(range(10))
    b.set_epoch(2)
    assert list(a) != list(b)
    assert list(EpochSampler(10, seed=4)) != list(EpochSampler(10, seed=3))


def test_shards_deal_the_same_steps_to_any_number_of_processes() -> None:
    single = EpochSampler(21, seed=0, multiple_of=8)
    order = list(single)
    assert len(order) == 16 == len(single)  # truncated to whole optimizer steps of 8
    ranks = [EpochSampler(21, seed=0, rank=r, world_size=2, multiple_of=8) for r in range(2)]
    shards = [list(s) for s in ranks]
    for step in range(2):  # per-process batch 4: the union of the ranks' batches is the global batch
        union = shards[0][4 * step : 4 * step + 4] + shards[1][4 * step : 4 * step + 4]
        assert sorted(union) == sorted(order[8 * step : 8 * step + 8])
    ranks[1].set_start(4)
    assert list(ranks[1]) == shards[1][4:] and len(ranks[1]) == 4
    with pytest.raises(ValueError, match="multiple of world_size"):
        EpochSampler(5, world_size=2, multiple_of=3)


def test_unshuffled_shards_gather_back_in_dataset_order() -> None:
    shards = [list(EpochSampler(7, shuffle=False, rank=r, world_size=3)) for r in range(3)]
    assert shards == [[0, 3, 6], [1, 4], [2, 5]]
    assert gather_sharded([np.arange(4)], DistributedContext())[0].tolist() == [0, 1, 2, 3]


class RandomItems(Dataset):
    """Each item is a fresh draw from the global torch, numpy and python generators."""

    def __len__(self) -> int:
        return 6

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        import random

        return torch.tensor([torch.rand(()).item(), float(np.random.rand()), random.random()]), i


def test_seeded_samples_depend_on_seed_epoch_index_only_and_keep_main_rng() -> None:
    data = SeededSamples(RandomItems(), seed=5)
    torch.manual_seed(1)
    expected_next = torch.rand(3)
    torch.manual_seed(1)
    first = data[(0, 2)][0]
    assert torch.equal(torch.rand(3), expected_next)  # the main process stream was not disturbed
    assert torch.equal(data[(0, 2)][0], first)
    assert not torch.equal(data[(1, 2)][0], first) and not torch.equal(data[(0, 3)][0], first)


def test_loader_batches_do_not_depend_on_worker_count() -> None:
    def batches(workers: int) -> list[torch.Tensor]:
        loader = build_loader(
            RandomItems(), batch_size=2, device=CPU, ctx=DistributedContext(), seed=9, num_workers=workers
        )
        loader.sampler.set_epoch(1)  # type: ignore[attr-defined]
        return [x for x, _ in loader]

    in_process, in_worker = batches(0), batches(1)
    assert len(in_process) == 3
    for a, b in zip(in_process, in_worker):
        assert torch.equal(a, b)


def test_torchrun_environment_is_read_and_checked(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("LOCAL_RANK", "1")
    ctx = context_from_env()
    assert (ctx.rank, ctx.world_size, ctx.local_rank, ctx.is_main, ctx.is_distributed) == (1, 4, 1, False, True)
    monkeypatch.setenv("RANK", "4")
    with pytest.raises(ConfigError, match="RANK=4 is not within WORLD_SIZE=4"):
        context_from_env()
    monkeypatch.setenv("WORLD_SIZE", "two")
    with pytest.raises(ConfigError, match="WORLD_SIZE='two' is not an integer"):
        context_from_env()


def test_two_process_gloo_ddp_matches_one_process(tmp_path: Path) -> None:
    reference = make_model()
    ref = Trainer(reference, ddp_config()).fit(NoisyBlobs(), NoisyBlobs(seed=1))
    with pytest.raises(Interrupted):  # a single-process run interrupted mid-epoch (checkpoint at step 8)
        Trainer(make_model(), ddp_config(), run_dir=tmp_path / "resume", callbacks=[crash_at(9)]).fit(
            NoisyBlobs(), NoisyBlobs(seed=1)
        )
    assert read_checkpoint(tmp_path / "resume", "last").step == 8

    with socket.socket() as probe:  # a free port for the rendezvous
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [os.environ.get("PYTHONPATH"), *sys.path])),
        "WORLD_SIZE": "2",
        "MASTER_ADDR": "127.0.0.1",
        "MASTER_PORT": str(port),
        "OMP_NUM_THREADS": "1",
    }
    workers = [
        subprocess.Popen(
            [sys.executable, __file__, str(tmp_path)],
            env={**env, "RANK": str(r), "LOCAL_RANK": str(r)},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for r in range(2)
    ]
    outputs = [w.communicate(timeout=240)[0] for w in workers]
    assert [w.returncode for w in workers] == [0, 0], "\n".join(o[-3000:] for o in outputs)

    ddp = read_checkpoint(tmp_path / "ddp", "last")
    assert ddp.info["world_size"] == 2 and ddp.step == ref.steps == 12
    assert_same_weights(ddp.state_dict(), weights_of(reference), atol=1e-5)
    ddp_history = ddp.trainer_state()["progress"]["history"]
    for mine, theirs in zip(ddp_history, ref.history, strict=True):  # metrics gathered over both ranks
        for key in ("step", "lr", "train_loss", "train_accuracy", "val_loss", "val_accuracy"):
            assert mine[key] == pytest.approx(theirs[key], abs=1e-5), key
    rows = (tmp_path / "ddp" / "eval_log.csv").read_text().splitlines()
    assert len(rows) == 1 + 2  # header + one row per epoch: only rank 0 writes
    resumed = read_checkpoint(tmp_path / "resume", "last")
    assert resumed.info["world_size"] == 2 and resumed.step == 12
    assert_same_weights(resumed.state_dict(), weights_of(reference), atol=1e-5)


def ddp_worker(out: Path) -> None:
    """torchrun half of the DDP test: fresh 2-process run, then resume of a 1-process checkpoint."""
    torch.set_num_threads(1)
    Trainer(make_model(), ddp_config(), run_dir=out / "ddp").fit(NoisyBlobs(), NoisyBlobs(seed=1))
    Trainer(make_model(seed=7), ddp_config(), run_dir=out / "resume").fit(NoisyBlobs(), NoisyBlobs(seed=1), resume=True)
    # Leave the group together: a rank tearing gloo down while the other still has a collective in
    # flight can abort that process at exit ("terminate called without an active exception").
    torch.distributed.barrier()
    torch.distributed.destroy_process_group()


if __name__ == "__main__":
    ddp_worker(Path(sys.argv[1]))
