"""Model compression for System A: SE channel importance, physical SEP channel pruning, Dynamic
Network Surgery, and cost counting (parameters, MACs, size, latency)."""

from histobreast.compress.dns import DNSConfig, DynamicNetworkSurgery, load_sparse_weights, save_sparse_weights
from histobreast.compress.importance import compute_channel_importance, load_importance, save_importance, se_blocks
from histobreast.compress.profile import (
    checkpoint_size_bytes,
    count_macs,
    count_nonzero_parameters,
    count_parameters,
    measure_latency,
    measure_throughput,
)
from histobreast.compress.prune import (
    INTERNAL_LAYERS,
    apply_channel_plan,
    per_loop_fraction,
    plan_channel_pruning,
    plan_internal_pruning,
    prune_channels,
    prune_hybrid_channels,
)

__all__ = [
    "DNSConfig",
    "DynamicNetworkSurgery",
    "INTERNAL_LAYERS",
    "apply_channel_plan",
    "checkpoint_size_bytes",
    "compute_channel_importance",
    "count_macs",
    "count_nonzero_parameters",
    "count_parameters",
    "load_importance",
    "load_sparse_weights",
    "measure_latency",
    "measure_throughput",
    "per_loop_fraction",
    "plan_channel_pruning",
    "plan_internal_pruning",
    "prune_channels",
    "prune_hybrid_channels",
    "save_importance",
    "save_sparse_weights",
    "se_blocks",
]
