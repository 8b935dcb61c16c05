"""The serving roofline: decode and prefill times on one GPU of a replica, and $ per million tokens.

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

from dataclasses import dataclass
from typing import Any

from .. import cost
from ..flops import FLOP, decode_flops_per_token, ffn_macs_per_token, forward_flops, full_recompute_flops
from ..hardware import Hardware
from ..params import count_parameters, ffn_params
from ..shapes import ModelShape
from .layout import (Layout, MemoryFit, bytes_per_element, check_batch_context, expert_copies_per_gpu,
                     kv_cache_bytes_per_sequence_per_gpu, memory_fit, need, peak, weight_params_per_gpu)
from .traffic import LinkTimes, expected_distinct_experts_per_gpu, link_times_s

BOUNDS = ("compute", "memory", "communication")


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


# ----- one step: compute, memory and link times, the slowest binds ------------------------------------
@dataclass(frozen=True)
class StepTimes(LinkTimes):
    """Times of one step on one GPU (seconds): compute, HBM reads, and the links (`LinkTimes`). They overlap
    fully (the bound): ``step_s`` is the largest and ``bound`` names it (compute, memory, communication)."""

    compute_s: float
    memory_s: float

    @property
    def times(self) -> dict[str, float]:
        """``{"compute": s, "memory": s, "communication": s}``, in the order `BOUNDS` lists them."""
        return dict(zip(BOUNDS, (self.compute_s, self.memory_s, self.communication_s)))

    @property
    def bound(self) -> str:
        times = self.times
        return max(times, key=times.get)

    @property
    def step_s(self) -> float:
        return self.times[self.bound]


def _check_eff(**values: float) -> None:
    for name, v in values.items():
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 < v <= 1:
            raise ValueError(f"{name} must be in (0, 1], got {v!r}")


# ----- decode ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class DecodePart:
    """One part of a decode step on one GPU: FLOP (2 per multiply-add), bytes read from HBM, and seconds."""

    flops_fma2: float
    bytes: float
    compute_s: float
    memory_s: float


@dataclass(frozen=True)
class DecodeStep(StepTimes):
    """Roofline of one decode step on one GPU (`decode_step`); ``parts`` by `DecodePart`, times in seconds."""

    batch: float
    context: int
    tokens_per_step: float
    parts: dict[str, DecodePart]
    expected_distinct_experts_per_gpu: float
    expert_copies_per_gpu: int

    @property
    def flops_fma2(self) -> float:
        return sum(p.flops_fma2 for p in self.parts.values())

    @property
    def bytes(self) -> float:
        return sum(p.bytes for p in self.parts.values())

    @property
    def tokens_per_s_per_gpu(self) -> float:
        """Output tokens per second per GPU: ``tokens_per_step / step_s``."""
        return self.tokens_per_step / self.step_s


def _decode_bytes_by_part(shape: ModelShape, lay: Layout, batch: float, context: int, tokens: float,
                          touched: float) -> dict[str, float]:
    """HBM bytes one GPU reads per decode step, by part: the non-expert weights (/tp), the ``touched``
    routed-expert copies in every MoE layer, the KV cache of ``batch`` sequences, one embedding row a token."""
    wb = bytes_per_element(lay.weights_dtype)
    counts = count_parameters(shape).total_by_component
    non_expert_share = 1.0 / lay.tp
    expert_bytes = ffn_params(shape, shape.d_expert) * wb if shape.is_moe else 0.0
    return {
        "attention_projections": (counts["attention"] + counts["norms"]) * non_expert_share * wb,
        "attention_cache": batch * kv_cache_bytes_per_sequence_per_gpu(shape, context, lay),
        "dense_ffn": counts["dense_ffn"] * non_expert_share * wb,
        "router": counts["router"] * non_expert_share * wb,
        "shared_experts": counts["shared_experts"] * non_expert_share * wb,
        "routed_experts": touched * shape.n_moe_layers * expert_bytes,
        "output_head": (counts["output_head"] or counts["embedding"]) * non_expert_share * wb,
        "embedding": tokens * shape.d_model * wb,
    }


def decode_step(shape: ModelShape, hw: Hardware, layout: Layout, batch: float, context: int, *,
                mtp_acceptance: float = 0.0, compute_efficiency: float = 1.0, memory_efficiency: float = 1.0,
                communication_efficiency: float = 1.0) -> DecodeStep:
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
    check_batch_context(batch, context)
    _check_eff(compute_efficiency=compute_efficiency, memory_efficiency=memory_efficiency,
               communication_efficiency=communication_efficiency)
    if not 0 <= mtp_acceptance <= 1:
        raise ValueError(f"mtp_acceptance must be in [0, 1], got {mtp_acceptance!r}")
    q = 2 if mtp_acceptance > 0 else 1
    tokens = batch * q                           # tokens processed per GPU per step
    touched = (expected_distinct_experts_per_gpu(shape.n_experts, shape.top_k, tokens, lay.gpus,
                                                 lay.redundant_experts) if shape.is_moe else 0.0)
    byts = _decode_bytes_by_part(shape, lay, batch, context, tokens, touched)
    flops = {**decode_flops_by_part(shape, context), "embedding": 0.0}
    peak_w = peak(hw, lay.weights_dtype) * compute_efficiency
    peak_a = peak(hw, lay.attention_dtype) * compute_efficiency
    bw = need(hw, "memory_bandwidth_bytes_per_s") * memory_efficiency
    parts = {}
    for name in byts:
        f = flops[name] * tokens
        parts[name] = DecodePart(flops_fma2=f, bytes=byts[name],
                                 compute_s=f / (peak_a if name == "attention_cache" else peak_w),
                                 memory_s=byts[name] / bw)
    link = link_times_s(shape, hw, lay, tokens, communication_efficiency)
    return DecodeStep(**vars(link), compute_s=sum(p.compute_s for p in parts.values()),
                      memory_s=sum(p.memory_s for p in parts.values()), batch=batch, context=context,
                      tokens_per_step=batch * (1 + (mtp_acceptance if q == 2 else 0.0)), parts=parts,
                      expected_distinct_experts_per_gpu=touched,
                      expert_copies_per_gpu=expert_copies_per_gpu(shape, lay))


# ----- prefill --------------------------------------------------------------------------------------
def prefill_flops_per_token(shape: ModelShape, prompt_len: int) -> float:
    """FLOP (2 per multiply-add) per prompt token of a causal forward over ``prompt_len`` tokens with
    logits at the last position only: ``accounting.flops.full_recompute_flops(shape, prompt_len - 1) / p``."""
    if isinstance(prompt_len, bool) or not isinstance(prompt_len, int) or prompt_len < 1:
        raise ValueError(f"prompt_len must be an integer >= 1, got {prompt_len!r}")
    return full_recompute_flops(shape, prompt_len - 1, flops_per_mac=FLOP) / prompt_len


@dataclass(frozen=True)
class PrefillStep(StepTimes):
    """Roofline of prefilling prompts on one GPU (`prefill`): FLOP (2 per multiply-add), bytes, seconds."""

    prompt_len: int
    tokens: int
    flops_fma2: float
    bytes: float

    @property
    def tokens_per_s_per_gpu(self) -> float:
        """Prompt tokens computed per second per GPU: ``tokens / step_s``."""
        return self.tokens / self.step_s


def prefill(shape: ModelShape, hw: Hardware, layout: Layout, prompt_len: int, *, prompts_per_gpu: int = 1,
            compute_efficiency: float = 1.0, memory_efficiency: float = 1.0,
            communication_efficiency: float = 1.0) -> PrefillStep:
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
    byts = (weight_params_per_gpu(shape, lay)["total"] * bytes_per_element(lay.weights_dtype)
            + prompts_per_gpu * kv_cache_bytes_per_sequence_per_gpu(shape, prompt_len, lay))
    link = link_times_s(shape, hw, lay, tokens, communication_efficiency)
    return PrefillStep(**vars(link), compute_s=flops / (peak(hw, lay.weights_dtype) * compute_efficiency),
                       memory_s=byts / (need(hw, "memory_bandwidth_bytes_per_s") * memory_efficiency),
                       prompt_len=prompt_len, tokens=tokens, flops_fma2=flops, bytes=byts)


# ----- money ----------------------------------------------------------------------------------------
def usd_per_million_tokens(tokens_per_s_per_gpu: float, usd_per_gpu_hour: float) -> float:
    """Dollars per million tokens at ``tokens_per_s_per_gpu`` and ``usd_per_gpu_hour``:
    ``$/h / 3600 / (tokens/s) x 1e6``."""
    if not tokens_per_s_per_gpu > 0:
        raise ValueError(f"tokens_per_s_per_gpu must be > 0, got {tokens_per_s_per_gpu}")
    return usd_per_gpu_hour / cost.SECONDS_PER_HOUR / tokens_per_s_per_gpu * 1e6


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
    rate = cost.GpuRate(hw.name, peak(hw, dtype), FLOP, usd_per_gpu_hour)
    return cost.inference_usd_per_million_tokens(decode_flops_per_token(shape, context, flops_per_mac=FLOP), FLOP, rate)


# ----- one row: what `python -m accounting serve` prints --------------------------------------------
@dataclass(frozen=True)
class ServeRow:
    """One (shape, hardware, layout, batch, context) priced by `serve`. The field names are the documented
    JSON interface of ``serve`` (docs/accounting.md): flops 2 per multiply-add, bytes per GPU, seconds per
    decode step, tokens/s per GPU, US dollars."""

    name: str
    gpu: str
    gpus: int
    tp: int
    ep: int
    expert_copies_per_gpu: int
    redundant_experts: int
    weights_dtype: str
    kv_dtype: str
    batch: float
    context: int
    prompt_len: int
    efficiency: float
    mtp_acceptance: float
    cache_hit_share: float
    usd_per_gpu_hour: float
    total_params: int
    active_params: int
    fits: bool
    bytes_needed_per_gpu: float
    bytes_available_per_gpu: float
    weights_bytes_per_gpu: float
    kv_cache_bytes_per_gpu: float
    workspace_bytes_per_gpu: float
    max_batch: float | None
    expected_distinct_experts_per_gpu: float
    decode_flops_fma2_per_step: float
    decode_bytes_per_step: float
    decode_compute_s: float
    decode_memory_s: float
    decode_communication_s: float
    decode_step_s: float
    bound: str
    decode_tokens_per_s_per_gpu: float
    prefill_tokens_per_s_per_gpu: float
    prefill_bound: str
    usd_per_million_output_tokens: float
    usd_per_million_input_tokens: float
    note_method_usd_per_million_output_tokens: float
    decode_parts: dict[str, dict[str, float]]


def _fit_fields(fit: MemoryFit) -> dict[str, Any]:
    return {"fits": fit.fits, "bytes_needed_per_gpu": fit.bytes_needed, "bytes_available_per_gpu": fit.bytes_available,
            "weights_bytes_per_gpu": fit.weights_bytes, "kv_cache_bytes_per_gpu": fit.kv_cache_bytes,
            "workspace_bytes_per_gpu": fit.workspace_bytes, "max_batch": fit.max_batch}


def _decode_fields(dec: DecodeStep) -> dict[str, Any]:
    return {"expected_distinct_experts_per_gpu": dec.expected_distinct_experts_per_gpu,
            "decode_flops_fma2_per_step": dec.flops_fma2, "decode_bytes_per_step": dec.bytes,
            "decode_compute_s": dec.compute_s, "decode_memory_s": dec.memory_s,
            "decode_communication_s": dec.communication_s, "decode_step_s": dec.step_s, "bound": dec.bound,
            "decode_tokens_per_s_per_gpu": dec.tokens_per_s_per_gpu}


def serve(shape: ModelShape, hw: Hardware, layout: Layout, batch: float, context: int, *,
          prompt_len: int | None = None, usd_per_gpu_hour: float | None = None, efficiency: float = 1.0,
          mtp_acceptance: float = 0.0, cache_hit_share: float = 0.0) -> ServeRow:
    """Decode and prefill rooflines, memory fit and money for one (shape, hardware, layout, batch, context).

    ``prompt_len`` defaults to ``context``; ``usd_per_gpu_hour`` to the preset's price; ``efficiency``
    (in (0, 1]) scales compute, memory and communication alike.
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
    return ServeRow(
        name=shape.name, gpu=hw.name, gpus=lay.gpus, tp=lay.tp, ep=lay.gpus if shape.is_moe else 1,
        expert_copies_per_gpu=expert_copies_per_gpu(shape, lay), redundant_experts=lay.redundant_experts,
        weights_dtype=lay.weights_dtype, kv_dtype=lay.kv_dtype, batch=batch, context=context,
        prompt_len=p, efficiency=efficiency, mtp_acceptance=mtp_acceptance,
        cache_hit_share=cache_hit_share, usd_per_gpu_hour=price,
        total_params=c.total, active_params=c.active, **_fit_fields(fit), **_decode_fields(dec),
        prefill_tokens_per_s_per_gpu=pre.tokens_per_s_per_gpu, prefill_bound=pre.bound,
        usd_per_million_output_tokens=usd_per_million_tokens(dec.tokens_per_s_per_gpu, price),
        usd_per_million_input_tokens=usd_per_million_input_tokens(pre.tokens_per_s_per_gpu, price, cache_hit_share),
        note_method_usd_per_million_output_tokens=note_method_usd_per_million_tokens(shape, hw, context, price),
        decode_parts={k: {"bytes": v.bytes, "flops_fma2": v.flops_fma2} for k, v in dec.parts.items()},
    )
