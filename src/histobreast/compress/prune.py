"""Physical SEP channel pruning of GoogLeNetSEP (paper A, "Compact model design").

Target ratio O over R loops: each loop removes the fraction ``X = 1 - (1 - O)^(1/R)`` (paper A,
eq. 8) of the lowest-importance channels of every SEP-followed layer (the concatenated output of
each Inception module), then the caller retrains
(:func:`histobreast.pipelines.pruning.prune_model_folder` runs the loops). Removal is physical: a NEW, smaller
:class:`GoogLeNetSEP` is built from edited widths and its weights are sliced from the old one:

- producers: the last conv + BatchNorm of the branch that makes each removed channel;
- the SE block: the removed channels' inputs of FC1 and outputs (weights, biases) of FC2. The
  hidden width (C/16 of the unpruned layer) is kept: the pruned SE then computes exactly the
  gates it computed before for the kept channels, and its cost (2 * C' * hidden) still shrinks
  with C'; the widths are recorded in ``se_hidden`` so the checkpoint rebuilds it;
- consumers: the input channels of the next Inception module's 1x1 convs and pool projection,
  the auxiliary head's 1x1 conv (after 4a and 4d), and the classifier FC's columns of the
  concat head (4e, 4b, 4c, 4d).

Exactness: in eval mode the pruned network computes the same function as the unpruned one with
the removed channels' BatchNorm scale and shift set to zero (the channel is then exactly 0 after
ReLU, contributes 0 to the SE squeeze and to every consumer, and its SE scale multiplies 0).

Internal layers (``internal=True``, beyond the paper): the convs whose outputs no SE block
follows -- the stem's ``conv2_reduce`` and ``conv2`` and each Inception module's 3x3 and 5x5 reduce
convs -- lose the same per-loop fraction, ranked by the magnitude of their BatchNorm scale
(|gamma|, the channel criterion of "network slimming", Liu et al. 2017). The paper prunes only
the SEP-followed outputs, which leaves the stem and the reduce convs (about a third of the MACs)
at full width; pruning them too is what brings the speed-up at O = 0.5 past 1.6x. ``conv1``
(3 -> 64 channels, the first features of everything) keeps its width. Removal and exactness are
as above: a removed internal channel equals that channel with its BatchNorm scale and shift zeroed.

Counting, deterministically: a layer of C channels loses ``floor(X * C + 1/2)`` channels, at most
C - 1; channels are ranked by importance with ties broken by the lower channel index going first;
a branch that would lose all its channels keeps its most important one (so a layer can keep one
channel more per such branch). Rounding repeats in each loop, so R loops remove about, not
exactly, O of the channels.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import torch
from torch import Tensor

from histobreast.errors import ConfigError
from histobreast.models.googlenet_sep import AUX_SOURCES, HEAD_SOURCES, INCEPTION_NAMES, GoogLeNetSEP
from histobreast.models.hybrid import HybridCNN
from histobreast.models.layers import InceptionBN, InceptionWidths

ChannelPlan = dict[str, Tensor]  # Inception module name -> sorted indices of the channels kept
InternalPlan = dict[str, Tensor]  # internal conv path (e.g. "stem.conv2") -> sorted indices kept


def per_loop_fraction(target_ratio: float, loops: int) -> float:
    """Per-loop pruning fraction ``X = 1 - (1 - O)^(1/R)`` so that R loops remove O (paper A, eq. 8)."""
    if not 0.0 <= target_ratio < 1.0:
        raise ConfigError(f"pruning ratio must be in [0, 1), got {target_ratio}")
    if loops < 1:
        raise ConfigError(f"pruning loops must be >= 1, got {loops}")
    return 1.0 - (1.0 - target_ratio) ** (1.0 / loops)


def channels_to_remove(channels: int, fraction: float) -> int:
    """How many of ``channels`` a loop with pruning ``fraction`` removes (rounded half up, <= C - 1)."""
    if not 0.0 <= fraction < 1.0:
        raise ConfigError(f"pruning fraction must be in [0, 1), got {fraction}")
    return min(math.floor(fraction * channels + 0.5), channels - 1)


def select_channels(importance: Tensor, branch_widths: Sequence[int], fraction: float) -> Tensor:
    """Sorted indices of the channels one layer keeps: all but its lowest-importance fraction,
    with at least one channel left in every branch of ``branch_widths`` (concatenation order)."""
    channels = sum(branch_widths)
    if importance.shape != (channels,):
        raise ValueError(f"importance has shape {tuple(importance.shape)}, the layer has {channels} channels")
    order = torch.argsort(importance.detach().cpu(), stable=True)
    keep = torch.ones(channels, dtype=torch.bool)
    keep[order[: channels_to_remove(channels, fraction)]] = False
    start = 0
    for width in branch_widths:
        if not keep[start : start + width].any():
            keep[start + int(torch.argmax(importance[start : start + width]))] = True
        start += width
    return keep.nonzero().flatten()


def plan_channel_pruning(
    model: GoogLeNetSEP, importance: Mapping[str, Tensor], fraction: float, prefix: str = ""
) -> ChannelPlan:
    """The channels every SEP-followed layer keeps; importance keys are ``f"{prefix}se.{name}"``."""
    if not model.has_se:
        raise ConfigError("channel pruning needs SE blocks: the model was built with se=False")
    plan = {}
    for name in INCEPTION_NAMES:
        key = f"{prefix}se.{name}"
        if key not in importance:
            raise ConfigError(f"channel importance has no entry {key!r} (entries: {sorted(importance)[:8]})")
        plan[name] = select_channels(importance[key], model.widths[name].branch_widths, fraction)
    return plan


#: The internal convs (no SE after them) by module path, each with the convs that read its output.
INTERNAL_LAYERS: dict[str, tuple[str, ...]] = {
    "stem.conv2_reduce": ("stem.conv2",),
    "stem.conv2": tuple(f"inception.{INCEPTION_NAMES[0]}.{layer}" for layer in InceptionBN.INPUT_LAYERS),
    **{
        f"inception.{name}.{branch}.reduce": (f"inception.{name}.{branch}.conv",)
        for name in INCEPTION_NAMES
        for branch in ("branch3x3", "branch5x5")
    },
}


def plan_internal_pruning(model: GoogLeNetSEP, fraction: float) -> InternalPlan:
    """The channels every internal conv keeps: all but its ``fraction`` of smallest |BatchNorm gamma|."""
    modules = dict(model.named_modules())
    return {
        path: select_channels(modules[path].bn.weight.detach().abs(), [modules[path].bn.num_features], fraction)
        for path in INTERNAL_LAYERS
    }


def _select(state: dict[str, Tensor], prefix: str, dim: int, index: Tensor) -> None:
    # Slice every tensor under ``prefix`` (a conv + its BatchNorm, or one parameter) along ``dim``.
    for key in [k for k in state if k.startswith(prefix)]:
        if state[key].ndim > dim:
            state[key] = state[key].index_select(dim, index.to(state[key].device))


def _segments(model: GoogLeNetSEP, name: str) -> list[tuple[int, int]]:
    starts, start = [], 0
    for width in model.widths[name].branch_widths:
        starts.append((start, width))
        start += width
    return starts


def apply_channel_plan(
    model: GoogLeNetSEP, plan: Mapping[str, Tensor], internal: Mapping[str, Tensor] | None = None
) -> GoogLeNetSEP:
    """A new GoogLeNetSEP keeping only ``plan``'s channels (and ``internal``'s channels of the
    internal convs it names), with the weights sliced from ``model``."""
    missing = sorted(set(INCEPTION_NAMES) - set(plan))
    if missing:
        raise ValueError(f"channel plan has no entry for Inception modules {missing}")
    unknown = sorted(set(internal or {}) - set(INTERNAL_LAYERS))
    if unknown:
        raise ValueError(f"internal plan names unknown layers {unknown}; prunable: {list(INTERNAL_LAYERS)}")
    state = dict(model.state_dict())
    widths = {}
    for position, name in enumerate(INCEPTION_NAMES):
        kept = plan[name].to(torch.long)
        branch_widths = []
        for layer, (start, width) in zip(InceptionBN.OUTPUT_LAYERS, _segments(model, name)):
            local = kept[(kept >= start) & (kept < start + width)] - start
            _select(state, f"inception.{name}.{layer}.", 0, local)
            branch_widths.append(len(local))
        widths[name] = list(model.widths[name].with_branch_widths(branch_widths))
        _select(state, f"se.{name}.fc1.weight", 1, kept)
        _select(state, f"se.{name}.fc2.", 0, kept)
        if position + 1 < len(INCEPTION_NAMES):
            following = INCEPTION_NAMES[position + 1]
            for layer in InceptionBN.INPUT_LAYERS:
                _select(state, f"inception.{following}.{layer}.conv.weight", 1, kept)
        for aux, source in AUX_SOURCES.items():
            if source == name and model.aux_logits:
                _select(state, f"{aux}.conv.conv.weight", 1, kept)
    head_columns, offset = [], 0
    for name in HEAD_SOURCES:
        head_columns.append(plan[name].to(torch.long) + offset)
        offset += model.widths[name].out_channels
    _select(state, "fc.weight", 1, torch.cat(head_columns))
    stem_widths = list(model.stem_widths)
    for path, kept in (internal or {}).items():
        kept = kept.to(torch.long)
        _select(state, f"{path}.", 0, kept)
        for consumer in INTERNAL_LAYERS[path]:
            _select(state, f"{consumer}.conv.weight", 1, kept)
        if path.startswith("stem."):
            stem_widths[("stem.conv2_reduce", "stem.conv2").index(path) + 1] = len(kept)
        else:
            _, name, branch, _ = path.split(".")
            field_name = "ch3x3red" if branch == "branch3x3" else "ch5x5red"
            widths[name] = list(InceptionWidths(*widths[name])._replace(**{field_name: len(kept)}))
    pruned = GoogLeNetSEP(**{**model.model_kwargs, "widths": widths, "stem_widths": stem_widths})
    pruned.load_state_dict(state)
    first = next(model.parameters())
    return pruned.to(device=first.device, dtype=first.dtype).train(model.training)


def prune_channels(
    model: GoogLeNetSEP, importance: Mapping[str, Tensor], fraction: float, prefix: str = "", internal: bool = False
) -> GoogLeNetSEP:
    """Remove the ``fraction`` of lowest-importance channels of every SEP-followed layer (and, with
    ``internal``, of every internal conv by |BatchNorm gamma|).

    Returns a new, physically smaller network (the input is left unchanged); its
    ``model_kwargs`` rebuild it, e.g. for a checkpoint.
    """
    return apply_channel_plan(
        model,
        plan_channel_pruning(model, importance, fraction, prefix),
        plan_internal_pruning(model, fraction) if internal else None,
    )


def prune_hybrid_channels(
    hybrid: HybridCNN, importance: Mapping[str, Tensor], fraction: float, internal: bool = False
) -> HybridCNN:
    """Prune both branches of a hybrid model, each by its own importances (keys
    ``"global_branch.se.3a"`` ..., as :func:`compute_channel_importance` names them on a hybrid)."""
    return HybridCNN(
        prune_channels(hybrid.global_branch, importance, fraction, prefix="global_branch.", internal=internal),
        prune_channels(hybrid.local_branch, importance, fraction, prefix="local_branch.", internal=internal),
        fusion_weight=hybrid.fusion_weight,
        patch_rule=hybrid.patch_rule,
        min_spread=hybrid.min_spread,
        mode=hybrid.mode,
    )
