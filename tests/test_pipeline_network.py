"""One seed rule and one eval batch-size rule for every pipeline's networks."""

from __future__ import annotations

from histobreast.pipelines.config import parse_config
from histobreast.pipelines.network import eval_batch_size, network_seed
from histobreast.seeding import derive_seed


def _cfg(train, evaluate=None):
    return parse_config({"name": "t", "model": {"name": "resnet18"}, "train": train, "evaluate": evaluate or {}})


def test_eval_batch_size_is_the_engines_rule_unless_evaluate_sets_it():
    assert eval_batch_size(_cfg({"epochs": 1, "batch_size": 8, "grad_accum": 2})) == 8  # 2 x micro-batch of 4
    assert _cfg({"epochs": 1, "batch_size": 8, "grad_accum": 2}).train.eval_batch(world_size=2) == 4
    assert eval_batch_size(_cfg({"epochs": 1, "batch_size": 8, "eval_batch_size": 3})) == 3
    assert eval_batch_size(_cfg({"epochs": 1, "eval_batch_size": 3}, {"batch_size": 5})) == 5


def test_network_seed_is_derived_from_the_seed():
    assert network_seed(7) == derive_seed(7) != 7
    assert network_seed(7, 2) == derive_seed(7, 2) != network_seed(7, 1)
