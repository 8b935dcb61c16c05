"""Traffic of a serving replica: which routed experts a step touches, and the bytes its tokens send.

Pure Python (no torch). Under uniform routing a token's k experts are k distinct slots of the
S = E + redundant expert copies spread evenly over the G GPUs. Expert-parallel dispatch and combine cross
the network once per destination node and NVLink once per other destination GPU (DeepSeek's scheme);
tensor-parallel all-reduces stay inside a node when tp fits one. Bytes are bytes (1 GB = 1e9), times seconds.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from ..hardware import Hardware
from ..shapes import ModelShape
from .layout import Layout, bytes_per_element, need


# ----- expert coverage ------------------------------------------------------------------------------
def expected_distinct_experts(n_experts: int, top_k: int, tokens: float) -> float:
    """Expected distinct experts that ``tokens`` tokens touch in one MoE layer under uniform routing,
    ``E (1 - (1 - k/E)^B)`` (each expert is missed by one token with probability ``1 - k/E``).

    k at B = 1; tends to E once B is a few times E / k. Units: experts (a real number).
    """
    if n_experts < 1 or not 1 <= top_k <= n_experts:
        raise ValueError(f"need n_experts >= 1 and 1 <= top_k <= n_experts, got E={n_experts}, k={top_k}")
    if tokens < 0:
        raise ValueError(f"tokens must be >= 0, got {tokens}")
    return n_experts * (1.0 - (1.0 - top_k / n_experts) ** tokens)


def expected_distinct_experts_per_gpu(n_experts: int, top_k: int, tokens_per_gpu: float, gpus: int,
                                      redundant_experts: int = 0) -> float:
    """Expert copies owned by ONE GPU that a step touches under expert parallelism (experts).

    The EP group holds ``S = E + redundant_experts`` expert copies, ``S / G`` per GPU; the step routes the
    ``tokens_per_gpu x G`` tokens of all GPUs, each to k of the S copies uniformly (redundant copies share
    their expert's load). Each copy is touched with probability ``1 - (1 - k/S)^(tokens_per_gpu G)``.
    With G = 1 and no redundancy this is :func:`expected_distinct_experts`.
    """
    slots = n_experts + redundant_experts
    if gpus < 1 or slots % gpus:
        raise ValueError(f"{gpus} GPUs do not divide the {slots} expert copies "
                         f"({n_experts} experts + {redundant_experts} redundant)")
    return expected_distinct_experts(slots, top_k, tokens_per_gpu * gpus) / gpus


def expected_bins_reached(slots: int, bins: int, top_k: int) -> float:
    """Expected bins (GPUs or nodes) that ONE token's k routed experts reach, its experts k DISTINCT slots
    drawn uniformly from ``slots`` spread evenly over ``bins`` (``slots / bins`` each): a bin is missed with
    probability ``C(S - S/b, k) / C(S, k)``, so ``b (1 - C(S - S/b, k) / C(S, k))`` (bins, a real number).

    Drawing the k experts with replacement, ``b (1 - (1 - 1/b)^k)``, undercounts: 0.750 instead of 0.786 of
    the other GPU for S = 8, k = 2, b = 2 (the 2-rank EP measurement in docs/experiments.md counts 0.79).
    Where ``b`` does not divide ``slots`` (nodes of unequal size) that with-replacement form is returned.
    """
    if slots < 1 or bins < 1 or not 1 <= top_k <= slots:
        raise ValueError(f"need slots >= 1, bins >= 1 and 1 <= top_k <= slots, got S={slots}, b={bins}, k={top_k}")
    if slots % bins:
        return bins * (1.0 - (1.0 - 1.0 / bins) ** top_k)
    return bins * (1.0 - math.comb(slots - slots // bins, top_k) / math.comb(slots, top_k))


# ----- communication --------------------------------------------------------------------------------
def expert_parallel_bytes_per_token(shape: ModelShape, hw: Hardware, layout: Layout) -> dict[str, float]:
    """Bytes one token sends for expert parallelism per forward, summed over MoE layers: dispatch (the
    token's d activations in ``dispatch_dtype``) plus combine (d in ``combine_dtype`` back).

    Sent once per destination node over the network (to the GPU of the same index there), then forwarded
    over NVLink to each destination GPU that is not that one (DeepSeek's scheme). With the k distinct
    experts drawn uniformly from the S = E + redundant copies spread over the G GPUs
    (``nodes = ceil(G / gpus_per_node)``, g GPUs per node) a token reaches ``(nodes - 1) / nodes`` of the
    nodes and ``(g - 1) / g`` of the GPUs that :func:`expected_bins_reached` counts (nodes or GPUs as the
    bins). Forwarding is symmetric, so each GPU's NVLink traffic equals what it originates.
    Returns ``network`` and ``nvlink`` bytes; zero for a dense model or G = 1.
    """
    lay = layout.resolved(shape)
    if not shape.is_moe or lay.gpus == 1:
        return {"network": 0.0, "nvlink": 0.0}
    g_node = min(hw.gpus_per_node, lay.gpus)
    nodes = math.ceil(lay.gpus / g_node)
    per_dest = shape.d_model * (bytes_per_element(lay.dispatch_dtype) + bytes_per_element(lay.combine_dtype)) * shape.n_moe_layers
    k = shape.top_k
    slots = shape.n_experts + lay.redundant_experts
    remote_nodes = expected_bins_reached(slots, nodes, k) * (nodes - 1) / nodes if nodes > 1 else 0.0
    nvlink_hops = expected_bins_reached(slots, lay.gpus, k) * (g_node - 1) / g_node
    return {"network": remote_nodes * per_dest, "nvlink": nvlink_hops * per_dest}


def tensor_parallel_bytes_per_token(shape: ModelShape, layout: Layout) -> float:
    """Bytes one token's activations cost per GPU in tensor-parallel all-reduces per forward: two per
    layer (after attention, after the FFN) of d elements in bf16, a ring all-reduce sending
    ``2 (tp - 1) / tp`` of the buffer. Zero when tp = 1. (Bytes per token of the tp group's batch.)"""
    lay = layout.resolved(shape)
    if lay.tp == 1:
        return 0.0
    return 2 * shape.n_layers * shape.d_model * bytes_per_element("bf16") * 2 * (lay.tp - 1) / lay.tp


@dataclass(frozen=True)
class LinkTimes:
    """Bytes one GPU sends per step over the network and over NVLink, and the seconds each takes."""

    network_bytes: float
    nvlink_bytes: float
    network_s: float
    nvlink_s: float

    @property
    def communication_s(self) -> float:
        """Network and NVLink in parallel: the slower one (seconds)."""
        return max(self.network_s, self.nvlink_s)


def link_times_s(shape: ModelShape, hw: Hardware, lay: Layout, tokens_per_gpu: float,
                 efficiency: float) -> LinkTimes:
    """`LinkTimes` of ``tokens_per_gpu`` tokens per GPU: expert-parallel bytes, plus the tensor-parallel
    all-reduces (the tp group's ``tp x tokens_per_gpu`` tokens; over NVLink when tp fits one node)."""
    ep = expert_parallel_bytes_per_token(shape, hw, lay)
    net_bytes = tokens_per_gpu * ep["network"]
    nvl_bytes = tokens_per_gpu * ep["nvlink"]
    tp_bytes = lay.tp * tokens_per_gpu * tensor_parallel_bytes_per_token(shape, lay)
    if lay.tp > hw.gpus_per_node:
        net_bytes += tp_bytes
    else:
        nvl_bytes += tp_bytes
    net_s = net_bytes / (need(hw, "network_bytes_per_s") * efficiency) if net_bytes else 0.0
    nvl_s = nvl_bytes / (need(hw, "nvlink_bytes_per_s") * efficiency) if nvl_bytes else 0.0
    return LinkTimes(network_bytes=net_bytes, nvlink_bytes=nvl_bytes, network_s=net_s, nvlink_s=nvl_s)
