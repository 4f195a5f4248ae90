"""Learning-rate schedules against hand-computed values, and the training losses."""

from __future__ import annotations

import math

import pytest
import torch

from histobreast.engine.config import ScheduleConfig
from histobreast.engine.losses import ClassificationLoss, main_logits
from histobreast.engine.schedules import LRSchedule, set_lr


def test_paper_a_step_decay_every_10k_iterations() -> None:
    schedule = LRSchedule(
        ScheduleConfig(name="step", unit="iteration", step_size=10000, gamma=0.1),
        4e-4,
        steps_per_epoch=137,
        total_steps=40000,
    )
    expected = {0: 4e-4, 9999: 4e-4, 10000: 4e-5, 19999: 4e-5, 20000: 4e-6, 30000: 4e-7, 39999: 4e-7}
    for step, lr in expected.items():
        assert schedule.lr_at(step) == pytest.approx(lr, rel=1e-12), step


def test_paper_b_literal_batches_schedule() -> None:
    cfg = ScheduleConfig(name="step", unit="iteration", first_step=30, step_size=10, gamma=0.1, min_lr=1e-4)
    schedule = LRSchedule(cfg, 0.01, steps_per_epoch=50, total_steps=27000)
    lrs = [schedule.lr_at(s) for s in range(60)]
    assert lrs[:30] == [0.01] * 30
    assert lrs[30:40] == pytest.approx([1e-3] * 10)
    assert lrs[40:] == pytest.approx([1e-4] * 20)
    assert schedule.lr_at(26999) == pytest.approx(1e-4)  # the floor holds for the remaining 26,960 steps


def test_paper_b_per_epoch_variant_changes_only_at_epoch_boundaries() -> None:
    cfg = ScheduleConfig(name="step", unit="epoch", first_step=30, step_size=10, gamma=0.1, min_lr=1e-4)
    schedule = LRSchedule(cfg, 0.01, steps_per_epoch=5, total_steps=300)
    assert schedule.lr_at(149) == 0.01  # last step of epoch 29
    assert schedule.lr_at(150) == pytest.approx(1e-3)  # first step of epoch 30
    assert schedule.lr_at(199) == pytest.approx(1e-3)
    assert schedule.lr_at(200) == pytest.approx(1e-4)
    assert schedule.lr_at(299) == pytest.approx(1e-4)


def test_cosine_with_warmup() -> None:
    cfg = ScheduleConfig(name="cosine", unit="iteration", warmup=4, min_lr=0.0)
    schedule = LRSchedule(cfg, 1.0, steps_per_epoch=10, total_steps=104)
    assert [schedule.lr_at(s) for s in range(4)] == pytest.approx([0.25, 0.5, 0.75, 1.0])
    assert schedule.lr_at(4) == pytest.approx(1.0)  # cosine starts after warm-up
    assert schedule.lr_at(54) == pytest.approx(0.5)  # half-way through the 100 cosine steps
    assert schedule.lr_at(104 - 1) == pytest.approx(0.5 * (1 + math.cos(math.pi * 99 / 100)))


def test_cosine_per_epoch_and_constant() -> None:
    schedule = LRSchedule(
        ScheduleConfig(name="cosine", unit="epoch", min_lr=0.1), 1.1, steps_per_epoch=3, total_steps=12
    )
    assert [schedule.lr_at(s) for s in (0, 2, 3, 6)] == pytest.approx(
        [1.1, 1.1, 0.1 + 0.5 * (1 + math.cos(math.pi / 4)), 0.6]
    )
    assert LRSchedule(ScheduleConfig(), 0.3, 1, 10).lr_at(9) == 0.3


def test_set_lr_sets_every_group() -> None:
    a, b = torch.nn.Parameter(torch.zeros(1)), torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([{"params": [a]}, {"params": [b], "lr": 5.0}], lr=1.0)
    set_lr(opt, 0.25)
    assert [g["lr"] for g in opt.param_groups] == [0.25, 0.25]


def test_cross_entropy_on_uniform_logits_is_log_c() -> None:
    loss = ClassificationLoss()(torch.zeros(4, 3), torch.tensor([0, 1, 2, 0]))
    assert loss.item() == pytest.approx(math.log(3))


def test_aux_heads_add_weighted_cross_entropy() -> None:
    target = torch.tensor([1, 0])
    logits = torch.tensor([[0.0, 2.0], [1.0, 0.0]])
    ce_main = (math.log(1 + math.exp(-2)) + math.log(1 + math.exp(-1))) / 2
    output = {"logits": logits, "aux": [torch.zeros(2, 2), torch.zeros(2, 2)]}
    assert ClassificationLoss()(output, target).item() == pytest.approx(ce_main + 2 * 0.3 * math.log(2))
    assert ClassificationLoss(aux_weight=1.0)(output, target).item() == pytest.approx(ce_main + 2 * math.log(2))
    assert torch.equal(main_logits(output), logits)
    with pytest.raises(TypeError, match="without 'logits'"):
        main_logits({"aux": []})
