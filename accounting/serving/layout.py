"""One serving replica's layout on its GPUs, what each GPU holds, and whether it fits in HBM.

Pure Python (no torch). Routed experts are spread over all G GPUs of the replica (expert parallelism,
EP = G, plus ``redundant_experts`` copies); everything else (the "non-expert" weights) is tensor-parallel
over ``tp`` GPUs and replicated G / tp times. Bytes are bytes (1 GB = 1e9); parameter counts are elements.
Counts come from ``accounting.params`` and ``accounting.memory``; no formula there is restated here.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace

from ..hardware import Hardware
from ..memory import BYTES_PER_ELEMENT, kv_cache_bytes
from ..params import count_parameters, ffn_params, total_parameters
from ..shapes import ModelShape

DEFAULT_WORKSPACE_FRACTION = 0.10
"""Share of HBM kept for activations, communication buffers and allocator slack when no workspace is
given (a stated assumption, not a measurement)."""
PRECISIONS = ("bf16", "fp8", "fp16", "fp32")


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


def bytes_per_element(dtype: str) -> float:
    """Bytes of one element in ``dtype`` (bf16, fp8, fp16, fp32)."""
    return BYTES_PER_ELEMENT[dtype]


def peak(hw: Hardware, dtype: str) -> float:
    """``hw``'s dense ``dtype`` peak (FLOP/s, 2 per multiply-add); ValueError when it has none."""
    try:
        return hw.peak(dtype)
    except ValueError:
        raise ValueError(f"{hw.name} has no {dtype} peak; pick another precision") from None


def need(hw: Hardware, field: str) -> float:
    """``hw.<field>``; ValueError when the preset does not record it."""
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
    per_seq = kv_cache_bytes(shape, context, 1, bytes_per_element(lay.kv_dtype))
    return per_seq * (lay.tp if shape.attention == "mla" else 1)


def workspace_bytes(hw: Hardware, layout: Layout) -> float:
    """HBM reserved per GPU for activations and buffers (bytes): the layout's, or 10% of capacity."""
    if layout.workspace_bytes is not None:
        return layout.workspace_bytes
    return DEFAULT_WORKSPACE_FRACTION * need(hw, "memory_bytes")


@dataclass(frozen=True)
class MemoryFit:
    """Whether one GPU holds its weights, the KV cache of its batch and the workspace (bytes per GPU).

    ``max_batch``: the largest batch per GPU that fits (a multiple of 1/G, so that the replica holds a whole
    number of sequences; 0 when even the weights do not; None at context 0, where the cache sets no limit).
    """

    bytes_available: float
    weights_bytes: float
    kv_cache_bytes: float
    workspace_bytes: float
    kv_cache_bytes_per_sequence: float
    max_batch: float | None

    @property
    def bytes_needed(self) -> float:
        """Weights + KV cache + workspace (bytes per GPU)."""
        return self.weights_bytes + self.kv_cache_bytes + self.workspace_bytes

    @property
    def fits(self) -> bool:
        return self.bytes_needed <= self.bytes_available


def memory_fit(shape: ModelShape, hw: Hardware, layout: Layout, batch: float, context: int) -> MemoryFit:
    """Whether weights + KV cache for ``batch`` sequences per GPU at ``context`` + workspace fit one GPU
    (a `MemoryFit`, bytes per GPU)."""
    lay = layout.resolved(shape)
    check_batch_context(batch, context)
    weights = weight_params_per_gpu(shape, lay)["total"] * bytes_per_element(lay.weights_dtype)
    per_seq = kv_cache_bytes_per_sequence_per_gpu(shape, context, lay)
    work = workspace_bytes(hw, lay)
    capacity = need(hw, "memory_bytes")
    room = capacity - weights - work
    if room <= 0:
        max_batch: float | None = 0.0
    elif per_seq:
        max_batch = math.floor(room / per_seq * lay.gpus) / lay.gpus
    else:
        max_batch = None  # an empty cache (context 0) sets no limit
    return MemoryFit(bytes_available=capacity, weights_bytes=weights, kv_cache_bytes=batch * per_seq,
                     workspace_bytes=work, kv_cache_bytes_per_sequence=per_seq, max_batch=max_batch)


def check_batch_context(batch: float, context: int) -> None:
    """ValueError unless ``batch`` is a number > 0 (sequences per GPU) and ``context`` an integer >= 0."""
    if isinstance(batch, bool) or not isinstance(batch, (int, float)) or not batch > 0 or not math.isfinite(batch):
        raise ValueError(f"batch must be a number > 0 (sequences per GPU), got {batch!r}")
    if isinstance(context, bool) or not isinstance(context, int) or context < 0:
        raise ValueError(f"context must be an integer >= 0, got {context!r}")


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
            if memory_fit(shape, hw, lay, 1.0 / g if batch is None else batch, context).fits:
                return g
        except ValueError:
            pass
        g *= 2
    raise ValueError(f"{shape.name} does not fit {batch} sequence(s) per GPU at context {context} on up to "
                     f"{max_gpus} x {hw.name}")


