"""Serving economics: a roofline model of decode and prefill, memory fit, and $ per million tokens.

Pure Python (no torch). The model prices one *replica* of ``gpus`` GPUs serving a `ModelShape`:

* **Layout.** Routed experts are spread over all G GPUs (expert parallelism, EP = G; ``redundant_experts``
  extra copies as DeepSeek deploys them). Everything else (attention, dense FFNs, shared experts, router,
  embeddings, output head: the "non-expert" weights) is tensor-parallel over ``tp`` GPUs and replicated
  (data-parallel) G / tp times. Defaults: ``tp = 1`` for an MoE (DeepSeek's layout: attention and shared
  expert data-parallel), ``tp = G`` for a dense model (its weights are split over the replica).
* **Batch.** ``batch`` is concurrent sequences **per GPU** (may be a fraction below 1 when a tensor-parallel
  group serves fewer sequences than it has GPUs); a decode step produces one token per sequence (``1 + a``
  with multi-token prediction accepted at rate a).
* **Roofline.** Per GPU and per step: compute time = FLOP / peak (weights' dtype for matmuls with weights,
  bf16 for attention over the cache), memory time = bytes read from HBM / bandwidth, communication time =
  expert-parallel dispatch + combine bytes (and tensor-parallel all-reduce bytes) over the link that
  carries them. The three overlap fully (the bound): step time = the largest; ``bound`` names it.
  Efficiency factors (default 1.0 = the bound) divide each time; they are arguments, never constants.
* **What is read per decode step.** Non-expert weights once (/tp), the routed experts *touched*: the
  expected number of distinct expert copies this GPU holds that the step's tokens route to,
  ``E (1 - (1 - k/E)^B)`` per MoE layer on one GPU (:func:`expected_distinct_experts`), its EP version
  :func:`expected_distinct_experts_per_gpu`; the KV cache of every sequence (MLA's compressed latent where
  the shape has it). Activations, norms, the KV write of the new token and kernel launch latency are not
  priced (small at serving sizes; they are part of what "efficiency" absorbs).

Flop convention: every flop figure here is FLOP with TWO flops per multiply-add (``FLOP = 2``), as the
datasheet peaks it is divided by; field names end in ``_flops_fma2``. Bytes are bytes (1 GB = 1e9),
times are seconds, money is US dollars. Counts come from ``accounting.params``, ``flops`` and ``memory``;
no formula there is restated here.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any

from . import cost
from .flops import FLOP, decode_flops_per_token, ffn_macs_per_token, forward_flops, full_recompute_flops
from .hardware import Hardware, get_hardware
from .memory import BYTES_PER_ELEMENT, kv_cache_bytes
from .params import count_parameters, ffn_params, total_parameters
from .shapes import ModelShape

SECONDS_PER_HOUR = cost.SECONDS_PER_HOUR
DEFAULT_WORKSPACE_FRACTION = 0.10
"""Share of HBM kept for activations, communication buffers and allocator slack when no workspace is
given (a stated assumption, not a measurement)."""
PRECISIONS = ("bf16", "fp8", "fp16", "fp32")
BOUNDS = ("compute", "memory", "communication")


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


# ----- layout ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Layout:
    """How one replica is laid out on its GPUs, and the precisions it serves in.

    gpus: G, GPUs of the replica (EP degree of the routed experts).
    tp: tensor-parallel degree of the non-expert weights (None: G for a dense model, 1 for an MoE).
    redundant_experts: extra routed-expert copies spread over the G GPUs (DeepSeek: 32).
    weights_dtype: precision of all weights (bf16, fp8, fp16, fp32); matmuls with weights run at its peak.
    kv_dtype: precision of the KV cache.
    attention_dtype: precision of attention over the cache (scores and values; DeepSeek runs MLA in bf16).
    dispatch_dtype: precision of tokens sent to experts (None: the weights' dtype; DeepSeek: fp8).
    combine_dtype: precision of expert outputs sent back (DeepSeek: bf16).
    workspace_bytes: HBM kept for activations and buffers per GPU (None: 10% of capacity).
    """

    gpus: int = 1
    tp: int | None = None
    redundant_experts: int = 0
    weights_dtype: str = "bf16"
    kv_dtype: str = "bf16"
    attention_dtype: str = "bf16"
    dispatch_dtype: str | None = None
    combine_dtype: str = "bf16"
    workspace_bytes: float | None = None

    def resolved(self, shape: ModelShape) -> "Layout":
        """A copy with defaults filled in and checked against ``shape`` (ValueError names the problem)."""
        if isinstance(self.gpus, bool) or not isinstance(self.gpus, int) or self.gpus < 1:
            raise ValueError(f"gpus must be a positive integer, got {self.gpus!r}")
        for name in ("weights_dtype", "kv_dtype", "attention_dtype", "combine_dtype"):
            if getattr(self, name) not in PRECISIONS:
                raise ValueError(f"unknown precision {getattr(self, name)!r} for {name}; choose one of "
                                 f"{', '.join(PRECISIONS)}")
        dispatch = self.dispatch_dtype or self.weights_dtype
        if dispatch not in PRECISIONS:
            raise ValueError(f"unknown precision {dispatch!r} for dispatch_dtype")
        tp = self.tp if self.tp is not None else (1 if shape.is_moe else self.gpus)
        if tp < 1 or self.gpus % tp:
            raise ValueError(f"tensor-parallel degree {tp} must divide gpus={self.gpus}")
        if self.redundant_experts < 0:
            raise ValueError(f"redundant_experts must be >= 0, got {self.redundant_experts}")
        if shape.is_moe and (shape.n_experts + self.redundant_experts) % self.gpus:
            raise ValueError(f"gpus={self.gpus} does not divide the {shape.n_experts + self.redundant_experts} "
                             f"routed-expert copies ({shape.n_experts} experts + {self.redundant_experts} "
                             "redundant); expert parallelism needs an equal share per GPU")
        if not shape.is_moe and self.redundant_experts:
            raise ValueError("redundant_experts needs an MoE shape")
        if self.workspace_bytes is not None and self.workspace_bytes < 0:
            raise ValueError(f"workspace_bytes must be >= 0, got {self.workspace_bytes}")
        return replace(self, tp=tp, dispatch_dtype=dispatch)


def _bytes(dtype: str) -> float:
    return BYTES_PER_ELEMENT[dtype]


def _peak(hw: Hardware, dtype: str) -> float:
    try:
        return hw.peak(dtype)
    except ValueError:
        raise ValueError(f"{hw.name} has no {dtype} peak; pick another precision") from None


def _need(hw: Hardware, field: str) -> float:
    value = getattr(hw, field)
    if value is None:
        raise ValueError(f"hardware {hw.name!r} has no {field}; the roofline needs it")
    return value


# ----- weights and memory fit -----------------------------------------------------------------------
def expert_copies_per_gpu(shape: ModelShape, layout: Layout) -> int:
    """Routed-expert copies each GPU holds (per MoE layer): ``(E + redundant) / G``; 0 for a dense model."""
    lay = layout.resolved(shape)
    return (shape.n_experts + lay.redundant_experts) // lay.gpus if shape.is_moe else 0


def weight_params_per_gpu(shape: ModelShape, layout: Layout) -> dict[str, float]:
    """Parameters stored on one GPU (elements): ``non_expert`` (total minus routed experts, / tp) and
    ``routed_experts`` (the GPU's expert copies in every MoE layer), and ``total``."""
    lay = layout.resolved(shape)
    routed_total = count_parameters(shape).total_by_component["routed_experts"]
    non_expert = (total_parameters(shape) - routed_total) / lay.tp
    routed = expert_copies_per_gpu(shape, lay) * shape.n_moe_layers * ffn_params(shape, shape.d_expert)
    return {"non_expert": non_expert, "routed_experts": float(routed), "total": non_expert + routed}


def kv_cache_bytes_per_sequence_per_gpu(shape: ModelShape, context: int, layout: Layout) -> float:
    """KV cache one GPU holds per sequence of its batch at ``context`` tokens (bytes).

    From ``accounting.memory.kv_cache_bytes``. Under tensor parallelism MHA/GQA heads are split (each of
    the tp GPUs holds 1/tp of tp x batch sequences: one sequence's worth per unit of batch); MLA's latent
    is shared by all heads and so held whole by every tensor-parallel rank (tp x as much).
    """
    lay = layout.resolved(shape)
    per_seq = kv_cache_bytes(shape, context, 1, _bytes(lay.kv_dtype))
    return per_seq * (lay.tp if shape.attention == "mla" else 1)


def workspace_bytes(hw: Hardware, layout: Layout) -> float:
    """HBM reserved per GPU for activations and buffers (bytes): the layout's, or 10% of capacity."""
    if layout.workspace_bytes is not None:
        return layout.workspace_bytes
    return DEFAULT_WORKSPACE_FRACTION * _need(hw, "memory_bytes")


def memory_fit(shape: ModelShape, hw: Hardware, layout: Layout, batch: float, context: int) -> dict[str, Any]:
    """Whether weights + KV cache for ``batch`` sequences per GPU at ``context`` + workspace fit one GPU.

    Returns ``fits``, ``bytes_needed`` and ``bytes_available`` (per GPU), the parts (``weights_bytes``,
    ``kv_cache_bytes``, ``workspace_bytes``) and ``max_batch``: the largest batch per GPU that fits (a
    multiple of 1/G, so that the replica holds a whole number of sequences; 0 when even the weights do not;
    None at context 0, where the cache sets no limit).
    """
    lay = layout.resolved(shape)
    _check_batch_context(batch, context)
    weights = weight_params_per_gpu(shape, lay)["total"] * _bytes(lay.weights_dtype)
    per_seq = kv_cache_bytes_per_sequence_per_gpu(shape, context, lay)
    work = workspace_bytes(hw, lay)
    capacity = _need(hw, "memory_bytes")
    needed = weights + batch * per_seq + work
    room = capacity - weights - work
    if room <= 0:
        max_batch: float | None = 0.0
    elif per_seq:
        max_batch = math.floor(room / per_seq * lay.gpus) / lay.gpus
    else:
        max_batch = None  # an empty cache (context 0) sets no limit
    return {"fits": needed <= capacity, "bytes_needed": needed, "bytes_available": capacity,
            "weights_bytes": weights, "kv_cache_bytes": batch * per_seq, "workspace_bytes": work,
            "kv_cache_bytes_per_sequence": per_seq, "max_batch": max_batch}


def _check_batch_context(batch: float, context: int) -> None:
    if isinstance(batch, bool) or not isinstance(batch, (int, float)) or not batch > 0 or not math.isfinite(batch):
        raise ValueError(f"batch must be a number > 0 (sequences per GPU), got {batch!r}")
    if isinstance(context, bool) or not isinstance(context, int) or context < 0:
        raise ValueError(f"context must be an integer >= 0, got {context!r}")


# ----- flops ----------------------------------------------------------------------------------------
def decode_flops_by_part(shape: ModelShape, context: int) -> dict[str, float]:
    """FLOP (2 per multiply-add) to decode one token at ``context`` cached tokens, by part.

    Parts: ``attention_projections`` (MLA in its absorbed form), ``attention_cache`` (scores and values over
    the ``context + 1`` keys), ``dense_ffn``, ``router``, ``shared_experts``, ``routed_experts`` (k per
    token), ``output_head``. They sum to ``accounting.flops.decode_flops_per_token(shape, context, FLOP)``,
    from which the attention parts are taken; the FFN parts come from ``ffn_macs_per_token``.
    """
    out = dict.fromkeys(("dense_ffn", "router", "shared_experts", "routed_experts"), 0.0)
    for layer in range(shape.n_layers):
        for key, macs in ffn_macs_per_token(shape, layer).items():
            out[key] += macs * FLOP
    head = forward_flops(shape, 1, flops_per_mac=FLOP)["output_head"]
    at0 = decode_flops_per_token(shape, 0, flops_per_mac=FLOP)
    per_key = decode_flops_per_token(shape, 1, flops_per_mac=FLOP) - at0   # one more cached key, all layers
    ffn = sum(out.values())
    return {"attention_projections": at0 - per_key - ffn - head, "attention_cache": per_key * (context + 1),
            **out, "output_head": head}


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
    per_dest = shape.d_model * (_bytes(lay.dispatch_dtype) + _bytes(lay.combine_dtype)) * shape.n_moe_layers
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
    return 2 * shape.n_layers * shape.d_model * _bytes("bf16") * 2 * (lay.tp - 1) / lay.tp


def _link_times_s(shape: ModelShape, hw: Hardware, lay: Layout, tokens_per_gpu: float,
                  efficiency: float) -> dict[str, float]:
    ep = expert_parallel_bytes_per_token(shape, hw, lay)
    net_bytes = tokens_per_gpu * ep["network"]
    nvl_bytes = tokens_per_gpu * ep["nvlink"]
    # tensor-parallel group: tp x tokens_per_gpu tokens share each all-reduce; inside a node when tp fits
    tp_bytes = lay.tp * tokens_per_gpu * tensor_parallel_bytes_per_token(shape, lay)
    if lay.tp > hw.gpus_per_node:
        net_bytes += tp_bytes
    else:
        nvl_bytes += tp_bytes
    out = {"network_bytes": net_bytes, "nvlink_bytes": nvl_bytes, "network_s": 0.0, "nvlink_s": 0.0}
    if net_bytes:
        out["network_s"] = net_bytes / (_need(hw, "network_bytes_per_s") * efficiency)
    if nvl_bytes:
        out["nvlink_s"] = nvl_bytes / (_need(hw, "nvlink_bytes_per_s") * efficiency)
    return out


# ----- decode ---------------------------------------------------------------------------------------
def _check_eff(**values: float) -> None:
    for name, v in values.items():
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 < v <= 1:
            raise ValueError(f"{name} must be in (0, 1], got {v!r}")


def decode_step(shape: ModelShape, hw: Hardware, layout: Layout, batch: float, context: int, *,
                mtp_acceptance: float = 0.0, compute_efficiency: float = 1.0, memory_efficiency: float = 1.0,
                communication_efficiency: float = 1.0) -> dict[str, Any]:
    """Roofline of one decode step on one GPU of the replica, ``batch`` sequences per GPU at ``context``.

    Per part (``parts``: attention_projections, attention_cache = KV reads, dense_ffn, router,
    shared_experts, routed_experts, output_head, embedding): ``flops_fma2`` (2 per multiply-add),
    ``bytes`` read from HBM, ``compute_s`` and ``memory_s``. Then ``compute_s``, ``memory_s`` and
    ``communication_s`` (network and NVLink in parallel, the slower one), ``step_s`` = the largest (full
    overlap), ``bound``, ``tokens_per_step`` and ``tokens_per_s_per_gpu`` = batch (1 + a) / step_s.

    With ``mtp_acceptance`` a > 0 each step verifies 2 tokens per sequence (the next one and DeepSeek's
    MTP draft, accepted with probability a): token-proportional flops and expert coverage use 2 x batch
    tokens, the cache is read once. The MTP module's own weights and flops are not priced.
    Efficiency factors in (0, 1] divide the peaks (1.0 = the bound).
    """
    lay = layout.resolved(shape)
    _check_batch_context(batch, context)
    _check_eff(compute_efficiency=compute_efficiency, memory_efficiency=memory_efficiency,
               communication_efficiency=communication_efficiency)
    if not 0 <= mtp_acceptance <= 1:
        raise ValueError(f"mtp_acceptance must be in [0, 1], got {mtp_acceptance!r}")
    q = 2 if mtp_acceptance > 0 else 1
    tokens = batch * q                           # tokens processed per GPU per step
    wb = _bytes(lay.weights_dtype)
    flops = decode_flops_by_part(shape, context)
    counts = count_parameters(shape).total_by_component
    non_expert_share = 1.0 / lay.tp
    touched = (expected_distinct_experts_per_gpu(shape.n_experts, shape.top_k, tokens, lay.gpus,
                                                 lay.redundant_experts) if shape.is_moe else 0.0)
    expert_bytes = ffn_params(shape, shape.d_expert) * wb if shape.is_moe else 0.0
    kv_read = batch * kv_cache_bytes_per_sequence_per_gpu(shape, context, lay)
    byts = {
        "attention_projections": (counts["attention"] + counts["norms"]) * non_expert_share * wb,
        "attention_cache": kv_read,
        "dense_ffn": counts["dense_ffn"] * non_expert_share * wb,
        "router": counts["router"] * non_expert_share * wb,
        "shared_experts": counts["shared_experts"] * non_expert_share * wb,
        "routed_experts": touched * shape.n_moe_layers * expert_bytes,
        "output_head": (counts["output_head"] or counts["embedding"]) * non_expert_share * wb,
        "embedding": tokens * shape.d_model * wb,
    }
    flops = {**flops, "embedding": 0.0}
    peak_w = _peak(hw, lay.weights_dtype) * compute_efficiency
    peak_a = _peak(hw, lay.attention_dtype) * compute_efficiency
    bw = _need(hw, "memory_bandwidth_bytes_per_s") * memory_efficiency
    parts = {}
    for name in byts:
        f = flops[name] * tokens
        parts[name] = {"flops_fma2": f, "bytes": byts[name],
                       "compute_s": f / (peak_a if name == "attention_cache" else peak_w),
                       "memory_s": byts[name] / bw}
    compute_s = sum(p["compute_s"] for p in parts.values())
    memory_s = sum(p["memory_s"] for p in parts.values())
    link = _link_times_s(shape, hw, lay, tokens, communication_efficiency)
    comm_s = max(link["network_s"], link["nvlink_s"])
    times = {"compute": compute_s, "memory": memory_s, "communication": comm_s}
    bound = max(times, key=times.get)
    step_s = times[bound]
    out_tokens = batch * (1 + (mtp_acceptance if q == 2 else 0.0))
    return {"batch": batch, "context": context, "tokens_per_step": out_tokens, "parts": parts,
            "flops_fma2": sum(p["flops_fma2"] for p in parts.values()),
            "bytes": sum(p["bytes"] for p in parts.values()),
            "expected_distinct_experts_per_gpu": touched, "expert_copies_per_gpu": expert_copies_per_gpu(shape, lay),
            "compute_s": compute_s, "memory_s": memory_s, "communication_s": comm_s, **link,
            "step_s": step_s, "bound": bound, "tokens_per_s_per_gpu": out_tokens / step_s}


# ----- prefill --------------------------------------------------------------------------------------
def prefill_flops_per_token(shape: ModelShape, prompt_len: int) -> float:
    """FLOP (2 per multiply-add) per prompt token of a causal forward over ``prompt_len`` tokens with
    logits at the last position only: ``accounting.flops.full_recompute_flops(shape, prompt_len - 1) / p``."""
    if isinstance(prompt_len, bool) or not isinstance(prompt_len, int) or prompt_len < 1:
        raise ValueError(f"prompt_len must be an integer >= 1, got {prompt_len!r}")
    return full_recompute_flops(shape, prompt_len - 1, flops_per_mac=FLOP) / prompt_len


def prefill(shape: ModelShape, hw: Hardware, layout: Layout, prompt_len: int, *, prompts_per_gpu: int = 1,
            compute_efficiency: float = 1.0, memory_efficiency: float = 1.0,
            communication_efficiency: float = 1.0) -> dict[str, Any]:
    """Roofline of prefilling ``prompts_per_gpu`` prompts of ``prompt_len`` tokens on each GPU.

    Compute: :func:`prefill_flops_per_token` x tokens at the weights' peak (attention included; prefill
    runs the expanded form). Memory: every weight the GPU holds read once per step (all its experts are
    touched at prefill sizes) plus the KV cache written. Communication: expert-parallel bytes per token
    x tokens. Returns times, ``bound`` and ``tokens_per_s_per_gpu`` (prompt tokens computed per second).
    """
    lay = layout.resolved(shape)
    _check_eff(compute_efficiency=compute_efficiency, memory_efficiency=memory_efficiency,
               communication_efficiency=communication_efficiency)
    tokens = prompt_len * prompts_per_gpu
    flops = prefill_flops_per_token(shape, prompt_len) * tokens
    compute_s = flops / (_peak(hw, lay.weights_dtype) * compute_efficiency)
    byts = (weight_params_per_gpu(shape, lay)["total"] * _bytes(lay.weights_dtype)
            + prompts_per_gpu * kv_cache_bytes_per_sequence_per_gpu(shape, prompt_len, lay))
    memory_s = byts / (_need(hw, "memory_bandwidth_bytes_per_s") * memory_efficiency)
    link = _link_times_s(shape, hw, lay, tokens, communication_efficiency)
    comm_s = max(link["network_s"], link["nvlink_s"])
    times = {"compute": compute_s, "memory": memory_s, "communication": comm_s}
    bound = max(times, key=times.get)
    return {"prompt_len": prompt_len, "tokens": tokens, "flops_fma2": flops, "bytes": byts,
            "compute_s": compute_s, "memory_s": memory_s, "communication_s": comm_s, **link,
            "step_s": times[bound], "bound": bound, "tokens_per_s_per_gpu": tokens / times[bound]}


# ----- money ----------------------------------------------------------------------------------------
def usd_per_million_tokens(tokens_per_s_per_gpu: float, usd_per_gpu_hour: float) -> float:
    """Dollars per million tokens at ``tokens_per_s_per_gpu`` and ``usd_per_gpu_hour``:
    ``$/h / 3600 / (tokens/s) x 1e6``."""
    if not tokens_per_s_per_gpu > 0:
        raise ValueError(f"tokens_per_s_per_gpu must be > 0, got {tokens_per_s_per_gpu}")
    return usd_per_gpu_hour / SECONDS_PER_HOUR / tokens_per_s_per_gpu * 1e6


def usd_per_million_input_tokens(prefill_tokens_per_s_per_gpu: float, usd_per_gpu_hour: float,
                                 cache_hit_share: float = 0.0) -> float:
    """Dollars per million prompt tokens when ``cache_hit_share`` of them are served from a prompt cache
    at no GPU cost: ``(1 - h) x`` :func:`usd_per_million_tokens` of the prefill rate."""
    if not 0 <= cache_hit_share < 1:
        raise ValueError(f"cache_hit_share must be in [0, 1), got {cache_hit_share}")
    return (1 - cache_hit_share) * usd_per_million_tokens(prefill_tokens_per_s_per_gpu, usd_per_gpu_hour)


def note_method_usd_per_million_tokens(shape: ModelShape, hw: Hardware, context: int, usd_per_gpu_hour: float,
                                       dtype: str = "bf16") -> float:
    """The note's method, kept beside the roofline: decode FLOP per token (2 per multiply-add) at the
    datasheet ``dtype`` peak, 100% utilisation, no memory or communication: ``accounting.cost``."""
    rate = cost.GpuRate(hw.name, _peak(hw, dtype), FLOP, usd_per_gpu_hour)
    return cost.inference_usd_per_million_tokens(decode_flops_per_token(shape, context, flops_per_mac=FLOP), FLOP, rate)


# ----- one row: what `python -m accounting serve` prints --------------------------------------------
def serve(shape: ModelShape, hw: Hardware, layout: Layout, batch: float, context: int, *,
          prompt_len: int | None = None, usd_per_gpu_hour: float | None = None, efficiency: float = 1.0,
          mtp_acceptance: float = 0.0, cache_hit_share: float = 0.0) -> dict[str, Any]:
    """Decode and prefill rooflines, memory fit and money for one (shape, hardware, layout, batch, context).

    ``prompt_len`` defaults to ``context``; ``usd_per_gpu_hour`` to the preset's price; ``efficiency``
    (in (0, 1]) scales compute, memory and communication alike. The field names are the documented JSON
    interface of ``serve`` (docs/accounting.md).
    """
    lay = layout.resolved(shape)
    price = hw.usd_per_hour if usd_per_gpu_hour is None else usd_per_gpu_hour
    if price is None or price < 0:
        raise ValueError(f"hardware {hw.name!r} has no price; pass usd_per_gpu_hour")
    p = context if prompt_len is None else prompt_len
    if p < 1:
        raise ValueError(f"prompt_len must be >= 1, got {p} (set --prompt-len when --context is 0)")
    eff = dict(compute_efficiency=efficiency, memory_efficiency=efficiency, communication_efficiency=efficiency)
    fit = memory_fit(shape, hw, lay, batch, context)
    dec = decode_step(shape, hw, lay, batch, context, mtp_acceptance=mtp_acceptance, **eff)
    pre = prefill(shape, hw, lay, p, **eff)
    c = count_parameters(shape)
    return {
        "name": shape.name, "gpu": hw.name, "gpus": lay.gpus, "tp": lay.tp, "ep": lay.gpus if shape.is_moe else 1,
        "expert_copies_per_gpu": expert_copies_per_gpu(shape, lay), "redundant_experts": lay.redundant_experts,
        "weights_dtype": lay.weights_dtype, "kv_dtype": lay.kv_dtype, "batch": batch, "context": context,
        "prompt_len": p, "efficiency": efficiency, "mtp_acceptance": mtp_acceptance,
        "cache_hit_share": cache_hit_share, "usd_per_gpu_hour": price,
        "total_params": c.total, "active_params": c.active,
        "fits": fit["fits"], "bytes_needed_per_gpu": fit["bytes_needed"],
        "bytes_available_per_gpu": fit["bytes_available"], "weights_bytes_per_gpu": fit["weights_bytes"],
        "kv_cache_bytes_per_gpu": fit["kv_cache_bytes"], "workspace_bytes_per_gpu": fit["workspace_bytes"],
        "max_batch": fit["max_batch"],
        "expected_distinct_experts_per_gpu": dec["expected_distinct_experts_per_gpu"],
        "decode_flops_fma2_per_step": dec["flops_fma2"], "decode_bytes_per_step": dec["bytes"],
        "decode_compute_s": dec["compute_s"], "decode_memory_s": dec["memory_s"],
        "decode_communication_s": dec["communication_s"], "decode_step_s": dec["step_s"], "bound": dec["bound"],
        "decode_tokens_per_s_per_gpu": dec["tokens_per_s_per_gpu"],
        "prefill_tokens_per_s_per_gpu": pre["tokens_per_s_per_gpu"], "prefill_bound": pre["bound"],
        "usd_per_million_output_tokens": usd_per_million_tokens(dec["tokens_per_s_per_gpu"], price),
        "usd_per_million_input_tokens": usd_per_million_input_tokens(pre["tokens_per_s_per_gpu"], price,
                                                                     cache_hit_share),
        "note_method_usd_per_million_output_tokens": note_method_usd_per_million_tokens(shape, hw, context, price),
        "decode_parts": {k: {"bytes": v["bytes"], "flops_fma2": v["flops_fma2"]} for k, v in dec["parts"].items()},
    }


# ----- comparisons: dense equivalents, layouts that fit ----------------------------------------------
def dense_equivalent(shape: ModelShape, params: float, name: str | None = None) -> ModelShape:
    """A dense shape with ``shape``'s attention, widths and depth whose FFN width ``d_ff`` makes its total
    parameters as close as possible to ``params`` (elements); e.g. the MoE's active or total count."""
    base = shape.replace(n_experts=0, top_k=0, n_shared_experts=0, first_dense_layers=0, moe_layer_pattern="",
                         expert_bias=False, router_bias=False, d_expert=None,
                         d_shared_expert=None, d_ff=1, mtp_modules=0, name=name or f"dense {shape.name}")
    slope = total_parameters(base.replace(d_ff=2)) - total_parameters(base)
    d_ff = max(1, round(1 + (params - total_parameters(base)) / slope))
    return base.replace(d_ff=d_ff, d_expert=d_ff, d_shared_expert=d_ff)


def smallest_fitting_gpus(shape: ModelShape, hw: Hardware, layout: Layout, context: int,
                          batch: float | None = 1.0, max_gpus: int = 1024) -> int:
    """The smallest power-of-two G (that divides the expert copies for an MoE) at which ``batch``
    sequences per GPU at ``context`` fit (``batch=None``: one sequence in the whole replica);
    ValueError when none up to ``max_gpus`` does."""
    g = 1
    while g <= max_gpus:
        lay = replace(layout, gpus=g)
        try:
            if memory_fit(shape, hw, lay, 1.0 / g if batch is None else batch, context)["fits"]:
                return g
        except ValueError:
            pass
        g *= 2
    raise ValueError(f"{shape.name} does not fit {batch} sequence(s) per GPU at context {context} on up to "
                     f"{max_gpus} x {hw.name}")


# ----- checks against the world -------------------------------------------------------------------
DEEPSEEK_SERVING = {
    "source": "DeepSeek, 'DeepSeek-V3/R1 Inference System Overview' (Open Infra Index, day 6, 1 March 2025); "
              "MTP acceptance: DeepSeek-V3 report (arXiv 2412.19437) section 5.4.3",
    "gpus_per_node": 8, "usd_per_gpu_hour": 2.0,
    "decode_ep": 144, "decode_nodes": 18, "decode_routed_per_gpu": 2,
    "prefill_ep": 32, "prefill_nodes": 4, "prefill_routed_per_gpu": 9, "redundant_experts": 32,
    "decode_output_tokens_per_s_per_node": 14.8e3, "prefill_input_tokens_per_s_per_node": 73.7e3,
    "prompt_cache_hit_share": 0.563, "output_tokens_per_s_per_user": (20.0, 22.0),
    "input_tokens_per_day": 608e9, "output_tokens_per_day": 168e9, "usd_per_day": 87_072.0,
    "average_nodes": 226.75, "mtp_acceptance": (0.85, 0.90),
}
"""DeepSeek's disclosed serving layout and statistics (H800, FP8 matmuls and dispatch, BF16 MLA and combine)."""


def deepseek_disclosed_check(context: int = 4096, prompt_len: int = 4096, hw_name: str = "h800") -> dict[str, Any]:
    """DeepSeek-V3 priced in DeepSeek's disclosed decode (EP144, 18 nodes, 2 routed experts per GPU) and
    prefill (EP32, 4 nodes, 9 per GPU) layouts, compared with what they achieved.

    Decode batch per GPU is derived from the disclosure: node throughput / 8 / per-user speed (midpoint
    21 tokens/s). Context and prompt length are NOT disclosed: ``context`` and ``prompt_len`` are
    assumptions (default 4096). The bound uses the favourable end (MTP acceptance 0.90); the fraction
    achieved = disclosed / bound. Input throughput is compared cache hits included, as disclosed:
    computed-prefill bound / (1 - hit share).
    """
    from .press2025 import deepseek_v3_shape
    d = DEEPSEEK_SERVING
    hw = get_hardware(hw_name)
    shape = deepseek_v3_shape(context)
    speed = sum(d["output_tokens_per_s_per_user"]) / 2
    achieved_dec_gpu = d["decode_output_tokens_per_s_per_node"] / d["gpus_per_node"]
    batch = achieved_dec_gpu / speed
    dec_layout = Layout(gpus=d["decode_ep"], redundant_experts=d["redundant_experts"], weights_dtype="fp8",
                        kv_dtype="bf16", attention_dtype="bf16", dispatch_dtype="fp8", combine_dtype="bf16")
    pre_layout = replace(dec_layout, gpus=d["prefill_ep"])
    a = d["mtp_acceptance"][1]
    dec = decode_step(shape, hw, dec_layout, batch, context, mtp_acceptance=a)
    dec_plain = decode_step(shape, hw, dec_layout, batch, context)
    fit = memory_fit(shape, hw, dec_layout, batch, context)
    pre = prefill(shape, hw, pre_layout, prompt_len)
    h = d["prompt_cache_hit_share"]
    pre_incl_hits = pre["tokens_per_s_per_gpu"] / (1 - h)
    achieved_pre_gpu = d["prefill_input_tokens_per_s_per_node"] / d["gpus_per_node"]
    price = d["usd_per_gpu_hour"]
    # what the disclosure implies, all cost attributed to one phase at a time
    disclosed_out_usd = usd_per_million_tokens(achieved_dec_gpu, price)
    disclosed_in_usd = usd_per_million_tokens(achieved_pre_gpu, price)
    day_usd_per_out = d["usd_per_day"] / (d["output_tokens_per_day"] / 1e6)
    parts = dec["parts"]
    sensitivity = {}
    for n in (1024, 4096, 8192):  # the context is not disclosed: how much the verdict depends on it
        r = decode_step(deepseek_v3_shape(n), hw, dec_layout, batch, n, mtp_acceptance=a)
        sensitivity[n] = {"fits": memory_fit(shape, hw, dec_layout, batch, n)["fits"],
                          "bound_tokens_per_s_per_node": r["tokens_per_s_per_gpu"] * d["gpus_per_node"],
                          "bound": r["bound"], "fraction_of_bound": achieved_dec_gpu / r["tokens_per_s_per_gpu"]}
    return {
        "source": d["source"], "hardware": hw.name, "context_assumed": context, "prompt_len_assumed": prompt_len,
        "decode_batch_per_gpu": batch, "decode_layout": {"gpus": dec_layout.gpus, "expert_copies_per_gpu":
                                                         expert_copies_per_gpu(shape, dec_layout)},
        "prefill_layout": {"gpus": pre_layout.gpus, "expert_copies_per_gpu": expert_copies_per_gpu(shape, pre_layout)},
        "mtp_acceptance_bound": a, "fits": fit["fits"], "bytes_needed_per_gpu": fit["bytes_needed"],
        "max_batch": fit["max_batch"],
        "decode_bound_tokens_per_s_per_gpu": dec["tokens_per_s_per_gpu"],
        "decode_bound_tokens_per_s_per_node": dec["tokens_per_s_per_gpu"] * d["gpus_per_node"],
        "decode_bound_no_mtp_tokens_per_s_per_node": dec_plain["tokens_per_s_per_gpu"] * d["gpus_per_node"],
        "decode_bound": dec["bound"], "decode_compute_s": dec["compute_s"], "decode_memory_s": dec["memory_s"],
        "decode_communication_s": dec["communication_s"], "decode_network_s": dec["network_s"],
        "decode_nvlink_s": dec["nvlink_s"],
        "decode_memory_weights_s": sum(p["memory_s"] for k, p in parts.items() if k != "attention_cache"),
        "decode_memory_kv_s": parts["attention_cache"]["memory_s"],
        "decode_compute_attention_cache_s": parts["attention_cache"]["compute_s"],
        "decode_achieved_tokens_per_s_per_node": d["decode_output_tokens_per_s_per_node"],
        "decode_fraction_of_bound": achieved_dec_gpu / dec["tokens_per_s_per_gpu"],
        "prefill_bound_tokens_per_s_per_node": pre["tokens_per_s_per_gpu"] * d["gpus_per_node"],
        "prefill_bound_with_cache_hits_tokens_per_s_per_node": pre_incl_hits * d["gpus_per_node"],
        "prefill_bound": pre["bound"], "prefill_compute_s_per_token": pre["compute_s"] / pre["tokens"],
        "prefill_communication_s_per_token": pre["communication_s"] / pre["tokens"],
        "prefill_achieved_tokens_per_s_per_node": d["prefill_input_tokens_per_s_per_node"],
        "prefill_fraction_of_bound": achieved_pre_gpu / pre_incl_hits,
        "usd_per_million_output_tokens_bound": usd_per_million_tokens(dec["tokens_per_s_per_gpu"], price),
        "usd_per_million_output_tokens_disclosed": disclosed_out_usd,
        "usd_per_million_input_tokens_bound": usd_per_million_input_tokens(pre["tokens_per_s_per_gpu"], price, h),
        "usd_per_million_input_tokens_disclosed": disclosed_in_usd,
        "usd_per_million_output_tokens_day_total": day_usd_per_out,
        "usd_per_million_output_tokens_note_method": note_method_usd_per_million_tokens(shape, hw, context, price),
        "usd_per_gpu_hour": price, "decode_by_context": sensitivity,
    }


def note_case_d_roofline(hw_name: str = "h100-sxm", usd_per_gpu_hour: float | None = None) -> list[dict[str, Any]]:
    """The note's case D ("$1-2 per million tokens") recomputed with the roofline: its dense MHA shape at
    its own context (100K / 200K tokens), bf16 weights and cache, tensor-parallel over the smallest
    power-of-two replica that holds one sequence, decoded at the largest batch that fits.

    Returns one row per case with the note's figure (its rounded $1e-18 per multiply-add) beside ours, and
    the floor set by reading the KV cache alone (GPU-seconds per token = cache bytes / bandwidth).
    """
    from .press2025 import inference_usd_per_million_tokens_case, USE_CASES
    hw = get_hardware(hw_name)
    price = hw.usd_per_hour if usd_per_gpu_hour is None else usd_per_gpu_hour
    rows = []
    for case in ("D low", "D high"):
        shape = USE_CASES[case].shape()
        n = shape.seq_len
        base = Layout(weights_dtype="bf16", kv_dtype="bf16")
        g = smallest_fitting_gpus(shape, hw, base, n, batch=None, max_gpus=4096)
        lay = replace(base, gpus=g)
        b = memory_fit(shape, hw, lay, 1.0, n)["max_batch"]
        dec = decode_step(shape, hw, lay, b, n)
        kv_seq = kv_cache_bytes(shape, n, 1, 2)
        kv_floor = usd_per_million_tokens(hw.memory_bandwidth_bytes_per_s / kv_seq, price)
        rows.append({"case": case, "context": n, "total_params": total_parameters(shape), "gpus": g,
                     "batch_per_gpu": b, "sequences_per_replica": b * g, "bound": dec["bound"],
                     "kv_cache_bytes_per_sequence": kv_seq,
                     "decode_tokens_per_s_per_gpu": dec["tokens_per_s_per_gpu"],
                     "usd_per_million_output_tokens": usd_per_million_tokens(dec["tokens_per_s_per_gpu"], price),
                     "usd_per_million_output_tokens_kv_floor": kv_floor,
                     "note_usd_per_million_tokens": inference_usd_per_million_tokens_case(case),
                     "usd_per_gpu_hour": price, "hardware": hw.name})
    return rows
