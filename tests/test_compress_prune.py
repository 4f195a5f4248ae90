"""Physical SEP channel pruning: the ratio schedule, channel selection, exactness, save/load/train."""

from __future__ import annotations

import copy
import json
import math

import pytest
import torch

from histobreast.compress.importance import compute_channel_importance
from histobreast.compress.profile import count_macs, count_parameters
from histobreast.compress.prune import (
    INTERNAL_LAYERS,
    apply_channel_plan,
    channels_to_remove,
    per_loop_fraction,
    plan_channel_pruning,
    plan_internal_pruning,
    prune_channels,
    prune_hybrid_channels,
    select_channels,
)
from histobreast.errors import ConfigError
from histobreast.models import create_model
from histobreast.models.googlenet_sep import INCEPTION_NAMES, GoogLeNetSEP
from histobreast.models.layers import InceptionBN
from histobreast.models.weights import save_weights

SMALL = 64


def _random_importance(model: GoogLeNetSEP, seed: int = 0) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return {f"se.{n}": torch.rand(model.widths[n].out_channels, generator=generator) for n in INCEPTION_NAMES}


@pytest.fixture(scope="module")
def trained_like() -> GoogLeNetSEP:
    """A GoogLeNetSEP with non-trivial BatchNorm statistics and affine parameters, as after training."""
    torch.manual_seed(1)
    model = GoogLeNetSEP(num_classes=3)
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 2.0)
            module.weight.data.uniform_(0.5, 1.5)
            module.bias.data.uniform_(-0.2, 0.2)
    return model.eval()


def _zero_removed_channels(
    model: GoogLeNetSEP, plan: dict[str, torch.Tensor], internal: dict[str, torch.Tensor] | None = None
) -> GoogLeNetSEP:
    """The reference: the unpruned network with the removed channels' BN scale and shift at 0,
    so those channels are exactly 0 after ReLU (independent of the pruner's slicing code)."""
    zeroed = copy.deepcopy(model)
    for path, kept in (internal or {}).items():
        bn = zeroed.get_submodule(path).bn
        removed = [c for c in range(bn.num_features) if c not in set(kept.tolist())]
        bn.weight.data[removed] = 0.0
        bn.bias.data[removed] = 0.0
    for name in INCEPTION_NAMES:
        kept = set(plan[name].tolist())
        block = zeroed.inception[name]
        start = 0
        for layer, width in zip(InceptionBN.OUTPUT_LAYERS, block.widths.branch_widths):
            bn = block.get_submodule(layer).bn
            removed = [c for c in range(width) if start + c not in kept]
            bn.weight.data[removed] = 0.0
            bn.bias.data[removed] = 0.0
            start += width
    return zeroed


# ---------------------------------------------------------------------------------------------
# Ratio schedule and counting
# ---------------------------------------------------------------------------------------------


def test_per_loop_fraction_matches_paper_formula_and_fig10() -> None:
    assert per_loop_fraction(0.5, 1) == pytest.approx(0.5)
    assert per_loop_fraction(0.75, 2) == pytest.approx(0.5)  # 1 - 0.25 ** (1/2)
    # Paper A, Fig. 10 caption: O = 80 % gives X = [0.8, 0.55, 0.42, 0.33] for R = 1..4.
    assert [round(per_loop_fraction(0.8, r), 2) for r in (1, 2, 3, 4)] == [0.8, 0.55, 0.42, 0.33]
    for loops in (1, 2, 3, 4):  # X + (1-X)X + ... + (1-X)^(R-1) X = O  (paper A, eq. 7)
        x = per_loop_fraction(0.8, loops)
        assert sum((1 - x) ** k * x for k in range(loops)) == pytest.approx(0.8)
    assert per_loop_fraction(0.0, 3) == 0.0


@pytest.mark.parametrize(("ratio", "loops"), [(1.0, 1), (-0.1, 1), (0.5, 0)])
def test_per_loop_fraction_rejects_bad_settings(ratio: float, loops: int) -> None:
    with pytest.raises(ConfigError):
        per_loop_fraction(ratio, loops)


def test_channels_to_remove_rounds_half_up_and_keeps_one() -> None:
    assert channels_to_remove(256, 0.5) == 128
    assert channels_to_remove(528, 0.25) == 132
    assert channels_to_remove(10, 0.25) == 3  # 2.5 rounds up
    assert channels_to_remove(10, 0.24) == 2
    assert channels_to_remove(4, 0.95) == 3  # never all of them


def test_select_channels_removes_the_lowest_importance() -> None:
    importance = torch.tensor([0.5, 0.1, 0.9, 0.3, 0.2, 0.8])
    # remove 3: channels 1 (0.1), 4 (0.2), 3 (0.3)
    assert select_channels(importance, (2, 2, 2), 0.5).tolist() == [0, 2, 5]


def test_select_channels_keeps_one_channel_per_branch() -> None:
    importance = torch.tensor([0.1, 0.5, 0.6, 0.9, 0.8, 0.7])
    # Removing the 3 lowest (0, 1, 2) would empty branch 0 ([0]) and branch 1 ([1, 2]); each keeps
    # its best channel, so 5 channels stay.
    assert select_channels(importance, (1, 2, 3), 0.5).tolist() == [0, 2, 3, 4, 5]


def test_select_channels_breaks_ties_by_lower_index_first() -> None:
    assert select_channels(torch.full((6,), 0.5), (6,), 0.5).tolist() == [3, 4, 5]


# ---------------------------------------------------------------------------------------------
# Exactness: pruned network == unpruned network with the removed channels zeroed
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("fraction", [0.3, 0.5, 0.9])
def test_pruned_output_equals_unpruned_with_removed_channels_zeroed(
    trained_like: GoogLeNetSEP, fraction: float
) -> None:
    plan = plan_channel_pruning(trained_like, _random_importance(trained_like), fraction)
    pruned = apply_channel_plan(trained_like, plan).eval()
    reference = _zero_removed_channels(trained_like, plan).eval()
    x = torch.randn(2, 3, SMALL, SMALL)
    with torch.no_grad():
        expected, got, unpruned = reference(x), pruned(x), trained_like(x)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=0)
    assert (unpruned - expected).abs().max() > 1e-3  # the removed channels did matter
    for name in INCEPTION_NAMES:
        assert pruned.inception[name].out_channels == len(plan[name])
        assert pruned.se[name].fc1.out_features == trained_like.se[name].fc1.out_features  # SE hidden kept


@pytest.mark.parametrize("fraction", [0.5, 0.9])
def test_internal_pruning_is_exact_too(trained_like: GoogLeNetSEP, fraction: float) -> None:
    plan = plan_channel_pruning(trained_like, _random_importance(trained_like, seed=5), fraction)
    internal = plan_internal_pruning(trained_like, fraction)
    assert set(internal) == set(INTERNAL_LAYERS) and len(internal) == 2 + 2 * len(INCEPTION_NAMES)
    pruned = apply_channel_plan(trained_like, plan, internal).eval()
    reference = _zero_removed_channels(trained_like, plan, internal).eval()
    x = torch.randn(2, 3, SMALL, SMALL)
    with torch.no_grad():
        torch.testing.assert_close(pruned(x), reference(x), atol=1e-5, rtol=0)
    assert pruned.stem_widths == (64, len(internal["stem.conv2_reduce"]), len(internal["stem.conv2"]))
    if fraction == 0.5:
        assert pruned.stem_widths == (64, 32, 96)
    for name in INCEPTION_NAMES:
        assert pruned.widths[name].ch3x3red == len(internal[f"inception.{name}.branch3x3.reduce"])
        assert pruned.widths[name].ch5x5red == len(internal[f"inception.{name}.branch5x5.reduce"])
        assert pruned.inception[name].out_channels == len(plan[name])


def test_internal_pruning_ranks_by_batchnorm_scale_and_cuts_more_macs(trained_like: GoogLeNetSEP) -> None:
    model = copy.deepcopy(trained_like)
    model.stem.conv2_reduce.bn.weight.data = torch.linspace(-1.0, 0.9, 64)  # |gamma| smallest near 0.0
    kept = plan_internal_pruning(model, 0.5)["stem.conv2_reduce"]
    smallest = torch.argsort(model.stem.conv2_reduce.bn.weight.abs(), stable=True)[:32]
    assert set(kept.tolist()).isdisjoint(smallest.tolist()) and len(kept) == 32
    importance = _random_importance(model)
    x = torch.randn(1, 3, SMALL, SMALL)
    paper = count_macs(prune_channels(model, importance, 0.5), x)
    deeper = count_macs(prune_channels(model, importance, 0.5, internal=True), x)
    assert deeper < 0.8 * paper  # the stem and the reduce convs hold a large share of the cost
    with pytest.raises(ValueError, match="unknown layers"):
        apply_channel_plan(model, plan_channel_pruning(model, importance, 0.5), {"stem.conv1": kept})


def test_auxiliary_heads_are_pruned_exactly_too(trained_like: GoogLeNetSEP) -> None:
    plan = plan_channel_pruning(trained_like, _random_importance(trained_like, seed=3), 0.5)
    pruned = apply_channel_plan(trained_like, plan)
    reference = _zero_removed_channels(trained_like, plan)
    x = torch.randn(2, 3, SMALL, SMALL)
    outputs = []
    for model in (reference, pruned):
        model.train()  # batch statistics: a zeroed channel stays exactly zero there too
        torch.manual_seed(7)  # the same dropout masks in the auxiliary heads
        with torch.no_grad():
            outputs.append(model(x))
    torch.testing.assert_close(outputs[1]["logits"], outputs[0]["logits"], atol=1e-5, rtol=0)
    for got, expected in zip(outputs[1]["aux"], outputs[0]["aux"]):
        torch.testing.assert_close(got, expected, atol=1e-5, rtol=0)


def test_pruning_leaves_the_input_model_unchanged(trained_like: GoogLeNetSEP) -> None:
    before = {k: v.clone() for k, v in trained_like.state_dict().items()}
    prune_channels(trained_like, _random_importance(trained_like), 0.5)
    after = trained_like.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_macs_and_parameters_fall_monotonically_with_ratio() -> None:
    model = GoogLeNetSEP()
    importance = _random_importance(model)
    x = torch.randn(1, 3, 32, 32)
    macs, params = [], []
    for ratio in (0.0, 0.25, 0.5, 0.7, 0.9, 0.95):
        pruned = prune_channels(model, importance, per_loop_fraction(ratio, 1))
        macs.append(count_macs(pruned, x))
        params.append(count_parameters(pruned))
    assert all(a > b for a, b in zip(macs, macs[1:])), macs
    assert all(a > b for a, b in zip(params, params[1:])), params
    # The stem is never pruned (no SEP follows it), so costs do not reach zero (paper A, Fig. 12b).
    assert macs[-1] > 0.05 * macs[0]


def test_half_of_every_sep_layer_goes_at_ratio_one_half() -> None:
    model = GoogLeNetSEP()
    pruned = prune_channels(model, _random_importance(model), 0.5)
    for name in INCEPTION_NAMES:
        assert pruned.inception[name].out_channels == model.inception[name].out_channels // 2
        assert pruned.widths[name].ch3x3red == model.widths[name].ch3x3red  # reduce convs untouched


def test_pruned_model_saves_loads_and_trains(tmp_path, trained_like: GoogLeNetSEP) -> None:
    pruned = prune_channels(trained_like, _random_importance(trained_like), 0.5)
    kwargs = json.loads(json.dumps(pruned.model_kwargs))  # what a checkpoint JSON stores
    path = save_weights(pruned, tmp_path / "pruned.safetensors")
    loaded = create_model("googlenet_sep", weights=path, **kwargs)
    x = torch.randn(2, 3, SMALL, SMALL)
    pruned.eval()
    loaded.eval()
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), pruned(x))
    loaded.train()
    optimizer = torch.optim.SGD(loaded.parameters(), lr=0.01, momentum=0.9)
    target = torch.tensor([0, 2])
    output = loaded(x)
    loss = torch.nn.functional.cross_entropy(output["logits"], target) + sum(
        0.3 * torch.nn.functional.cross_entropy(aux, target) for aux in output["aux"]
    )
    before = loaded.fc.weight.detach().clone()
    loss.backward()
    optimizer.step()
    assert math.isfinite(loss.item())
    assert not torch.equal(before, loaded.fc.weight)


def test_hybrid_branches_are_pruned_by_their_own_importance() -> None:
    hybrid = create_model(
        "hybrid_googlenet_sep", fusion_weight=0.7, patch_rule="max", local_kwargs={"aux_logits": False}
    )
    batches = [({"global": torch.randn(2, 3, SMALL, SMALL), "patches": torch.randn(2, 2, 3, 32, 32)}, None)]
    importance = compute_channel_importance(hybrid, batches)
    # Local 3a ranks channels by index: 0..127 go, but its 1x1 branch (channels 0..63) keeps its best, 63.
    importance["local_branch.se.3a"] = torch.arange(256.0)
    pruned = prune_hybrid_channels(hybrid, importance, 0.5)
    assert pruned.global_branch.inception["3a"].out_channels == 128
    kept = torch.tensor([63, *range(128, 256)])
    torch.testing.assert_close(pruned.local_branch.se["3a"].fc2.bias, hybrid.local_branch.se["3a"].fc2.bias[kept])
    assert (pruned.fusion_weight, pruned.patch_rule) == (0.7, "max")
    assert pruned.local_branch.aux1 is None
    hybrid.mode = "local"  # the global branch is then never run, so it has no importance
    with pytest.raises(ValueError, match="global_branch.se.3a"):
        compute_channel_importance(hybrid, batches)


def test_pruning_needs_se_blocks_and_complete_importance() -> None:
    with pytest.raises(ConfigError, match="se=False"):
        prune_channels(create_model("googlenet_bn"), {}, 0.5)
    model = GoogLeNetSEP()
    importance = _random_importance(model)
    del importance["se.4c"]
    with pytest.raises(ConfigError, match="se.4c"):
        prune_channels(model, importance, 0.5)
