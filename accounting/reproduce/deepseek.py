"""DeepSeek-V3 against DeepSeek's own disclosures: its pretraining compute and cost (technical report, arXiv
2412.19437) and its serving throughput in the disclosed layouts (Open Infra Index, day 6, 1 March 2025).

Flops: ``_flops_mac`` counts a multiply-add as ONE flop (the note's), ``_flops_fma2`` as TWO (datasheet
peaks, MFU); the serving check counts TWO. Dollars are US dollars, GPU-hours H800-hours, tokens/s per GPU
or per node of 8. The shape is the shipped ``accounting/configs/deepseek-v3.json``.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from .. import cost
from ..flops import FLOP, MAC, training_flops
from ..hardware import HARDWARE, Hardware, get_hardware
from ..hf_config import load_shipped
from ..params import count_parameters
from ..serving import (DecodeStep, Layout, decode_step, expert_copies_per_gpu, memory_fit,
                       note_method_usd_per_million_tokens, prefill, usd_per_million_input_tokens,
                       usd_per_million_tokens)
from ..shapes import ModelShape
from .note import K, note_training_macs_per_token

DEEPSEEK_REPORTED = {
    "total_params": 671e9, "active_params": 37e9, "pretrain_tokens": 14.8e12, "pretrain_seq_len": 4096,
    "gpu_hours_pretrain": 2.664e6, "gpu_hours_context_extension": 0.119e6, "gpu_hours_post_training": 0.005e6,
    "gpu_hours_total": 2.788e6, "usd_per_gpu_hour": 2.0, "usd_total": 5.576e6,
    "train_flops_per_token_reported": 250e9, "peak_bf16_flops_per_s": HARDWARE["h800"].peak_bf16_flops_per_s,
}
"""DeepSeek-V3 technical report (arXiv 2412.19437): H800 GPU-hours, $2/GPU-hour, 14.8T tokens at 4K."""


# ----- pretraining ---------------------------------------------------------------------------------
def deepseek_v3_shape(seq_len: int = 4096) -> ModelShape:
    """DeepSeek-V3 from the shipped ``configs/deepseek-v3.json`` at its 4K pretraining window."""
    return load_shipped("deepseek-v3", seq_len=seq_len)


def deepseek_v3_estimates(shape: ModelShape | None = None, tokens: float | None = None,
                          seq_len: int = 4096) -> dict[str, Any]:
    """DeepSeek-V3's pretraining compute three ways, in both conventions, with the MFU each implies
    against the reported 2.664M H800-hours at 989 TFLOP/s (bf16 dense, 2 per multiply-add).

    Methods: the note's ``(6 n d + 36 d^2) L`` per token (at its n = 32K and at the real 4K);
    ``6 N_active D`` (our exact active count, and the published 37B); the exact architecture
    (`accounting.flops`: MLA, 3 dense + 58 MoE layers with 8 routed + 1 shared expert, causal attention,
    output head; MTP module excluded, and included as a separate line).
    """
    shape = shape if shape is not None else deepseek_v3_shape(seq_len)
    tokens = DEEPSEEK_REPORTED["pretrain_tokens"] if tokens is None else tokens
    counts = count_parameters(shape)
    d, L = shape.d_model, shape.n_layers
    peak, hours = DEEPSEEK_REPORTED["peak_bf16_flops_per_s"], DEEPSEEK_REPORTED["gpu_hours_pretrain"]
    h800 = cost.gpu_rate("h800", usd_per_hour=DEEPSEEK_REPORTED["usd_per_gpu_hour"])  # bf16 dense peak
    macs_per_token = {
        "note_formula_n32768": float(note_training_macs_per_token(d, L, 32 * K)),
        f"note_formula_n{seq_len}": float(note_training_macs_per_token(d, L, seq_len)),
        "six_n_active_d": 3.0 * counts.active,
        "six_n_active_d_published_37b": 3.0 * DEEPSEEK_REPORTED["active_params"],
        f"exact_causal_n{seq_len}": training_flops(shape, 1, seq_len, flops_per_mac=MAC, causal=True),
        f"exact_causal_n{seq_len}_with_mtp": training_flops(shape, 1, seq_len, flops_per_mac=MAC, causal=True,
                                                            include_mtp=True),
    }
    methods = {}
    for name, mpt in macs_per_token.items():
        total_mac = mpt * tokens
        methods[name] = {
            "flops_mac_per_token": mpt, "flops_fma2_per_token": mpt * FLOP,
            "flops_mac": total_mac, "flops_fma2": total_mac * FLOP,
            "implied_mfu_bf16": cost.implied_mfu(total_mac, MAC, hours, peak),
            "h800_hours_at_peak": cost.gpu_hours(total_mac, MAC, h800),
            "cost_usd_h800_at_peak": cost.cost_usd(total_mac, MAC, h800),
            "cost_usd_note_gpu_exact_rate": cost.cost_usd(total_mac, MAC),
            "cost_usd_note_rounded_rate": cost.note_rounded_cost_usd(total_mac),
        }
    return {
        "tokens": tokens, "seq_len": seq_len,
        "total_params": counts.total, "active_params": counts.active, "mtp_params": counts.mtp_total,
        "published_total_params": DEEPSEEK_REPORTED["total_params"],
        "published_active_params": DEEPSEEK_REPORTED["active_params"],
        "reported_gpu_hours_pretrain": hours, "reported_gpu_hours_total": DEEPSEEK_REPORTED["gpu_hours_total"],
        "reported_usd_total": DEEPSEEK_REPORTED["usd_total"], "peak_bf16_flops_per_s": peak,
        "methods": methods,
    }


# ----- serving in the disclosed layouts -----------------------------------------------------------
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



DEEPSEEK_SERVING_LAYOUT = Layout(gpus=DEEPSEEK_SERVING["decode_ep"],
                                 redundant_experts=DEEPSEEK_SERVING["redundant_experts"], weights_dtype="fp8",
                                 kv_dtype="bf16", attention_dtype="bf16", dispatch_dtype="fp8", combine_dtype="bf16")
"""DeepSeek's disclosed decode layout (EP144 with 32 redundant experts, FP8 matmuls and dispatch, BF16 MLA and
combine); prefill is the same at ``gpus = prefill_ep`` (EP32)."""


@dataclass(frozen=True)
class DisclosedServingCheck:
    """DeepSeek-V3 in DeepSeek's disclosed serving layouts against what it achieved (`deepseek_disclosed_check`):
    tokens/s per GPU or per node of 8, seconds per decode step, US dollars; ``_assumed`` inputs are not disclosed.
    ``decode_by_context``: the decode bound at contexts 1024, 4096, 8192 (``fits``, ``bound_tokens_per_s_per_node``,
    ``bound``, ``fraction_of_bound``). The field names are the JSON of ``serving-check``'s ``deepseek``."""

    source: str
    hardware: str
    context_assumed: int
    prompt_len_assumed: int
    decode_batch_per_gpu: float
    decode_layout: dict[str, int]
    prefill_layout: dict[str, int]
    mtp_acceptance_bound: float
    fits: bool
    bytes_needed_per_gpu: float
    max_batch: float | None
    decode_bound_tokens_per_s_per_gpu: float
    decode_bound_tokens_per_s_per_node: float
    decode_bound_no_mtp_tokens_per_s_per_node: float
    decode_bound: str
    decode_compute_s: float
    decode_memory_s: float
    decode_communication_s: float
    decode_network_s: float
    decode_nvlink_s: float
    decode_memory_weights_s: float
    decode_memory_kv_s: float
    decode_compute_attention_cache_s: float
    decode_achieved_tokens_per_s_per_node: float
    decode_fraction_of_bound: float
    prefill_bound_tokens_per_s_per_node: float
    prefill_bound_with_cache_hits_tokens_per_s_per_node: float
    prefill_bound: str
    prefill_compute_s_per_token: float
    prefill_communication_s_per_token: float
    prefill_achieved_tokens_per_s_per_node: float
    prefill_fraction_of_bound: float
    usd_per_million_output_tokens_bound: float
    usd_per_million_output_tokens_disclosed: float
    usd_per_million_input_tokens_bound: float
    usd_per_million_input_tokens_disclosed: float
    usd_per_million_output_tokens_day_total: float
    usd_per_million_output_tokens_note_method: float
    usd_per_gpu_hour: float
    decode_by_context: dict[int, dict[str, Any]]


def _decode_fields(dec: DecodeStep, dec_plain: DecodeStep, achieved_gpu: float) -> dict[str, Any]:
    """The decode columns of `deepseek_disclosed_check`: the bound (with and without MTP), its times, and
    the fraction DeepSeek achieved (tokens/s per GPU -> per node of ``gpus_per_node``)."""
    per_node = DEEPSEEK_SERVING["gpus_per_node"]
    parts = dec.parts
    return {
        "decode_bound_tokens_per_s_per_gpu": dec.tokens_per_s_per_gpu,
        "decode_bound_tokens_per_s_per_node": dec.tokens_per_s_per_gpu * per_node,
        "decode_bound_no_mtp_tokens_per_s_per_node": dec_plain.tokens_per_s_per_gpu * per_node,
        "decode_bound": dec.bound, "decode_compute_s": dec.compute_s, "decode_memory_s": dec.memory_s,
        "decode_communication_s": dec.communication_s, "decode_network_s": dec.network_s,
        "decode_nvlink_s": dec.nvlink_s,
        "decode_memory_weights_s": sum(p.memory_s for k, p in parts.items() if k != "attention_cache"),
        "decode_memory_kv_s": parts["attention_cache"].memory_s,
        "decode_compute_attention_cache_s": parts["attention_cache"].compute_s,
        "decode_achieved_tokens_per_s_per_node": DEEPSEEK_SERVING["decode_output_tokens_per_s_per_node"],
        "decode_fraction_of_bound": achieved_gpu / dec.tokens_per_s_per_gpu,
    }


def _decode_by_context(shape: ModelShape, hw: Hardware, batch: float, achieved_gpu: float,
                       mtp_acceptance: float) -> dict[int, dict[str, Any]]:
    """The decode bound at contexts 1024, 4096 and 8192: the context is not disclosed, so how much the
    verdict depends on it (memory fit checked with ``shape``, the check's own shape)."""
    out = {}
    for n in (1024, 4096, 8192):
        r = decode_step(deepseek_v3_shape(n), hw, DEEPSEEK_SERVING_LAYOUT, batch, n, mtp_acceptance=mtp_acceptance)
        out[n] = {"fits": memory_fit(shape, hw, DEEPSEEK_SERVING_LAYOUT, batch, n).fits,
                  "bound_tokens_per_s_per_node": r.tokens_per_s_per_gpu * DEEPSEEK_SERVING["gpus_per_node"],
                  "bound": r.bound, "fraction_of_bound": achieved_gpu / r.tokens_per_s_per_gpu}
    return out


def deepseek_disclosed_check(context: int = 4096, prompt_len: int = 4096,
                             hw_name: str = "h800") -> DisclosedServingCheck:
    """DeepSeek-V3 priced in DeepSeek's disclosed decode (EP144, 18 nodes, 2 routed experts per GPU) and
    prefill (EP32, 4 nodes, 9 per GPU) layouts, compared with what they achieved.

    Decode batch per GPU is derived from the disclosure: node throughput / 8 / per-user speed (midpoint
    21 tokens/s). Context and prompt length are NOT disclosed: ``context`` and ``prompt_len`` are
    assumptions (default 4096). The bound uses the favourable end (MTP acceptance 0.90); the fraction
    achieved = disclosed / bound. Input throughput is compared cache hits included, as disclosed:
    computed-prefill bound / (1 - hit share).
    """
    d = DEEPSEEK_SERVING
    hw = get_hardware(hw_name)
    shape = deepseek_v3_shape(context)
    achieved_dec_gpu = d["decode_output_tokens_per_s_per_node"] / d["gpus_per_node"]
    batch = achieved_dec_gpu / (sum(d["output_tokens_per_s_per_user"]) / 2)
    dec_layout, pre_layout = DEEPSEEK_SERVING_LAYOUT, replace(DEEPSEEK_SERVING_LAYOUT, gpus=d["prefill_ep"])
    a = d["mtp_acceptance"][1]
    dec = decode_step(shape, hw, dec_layout, batch, context, mtp_acceptance=a)
    fit = memory_fit(shape, hw, dec_layout, batch, context)
    pre = prefill(shape, hw, pre_layout, prompt_len)
    h = d["prompt_cache_hit_share"]
    pre_incl_hits = pre.tokens_per_s_per_gpu / (1 - h)
    achieved_pre_gpu = d["prefill_input_tokens_per_s_per_node"] / d["gpus_per_node"]
    price = d["usd_per_gpu_hour"]
    return DisclosedServingCheck(
        source=d["source"], hardware=hw.name, context_assumed=context, prompt_len_assumed=prompt_len,
        decode_batch_per_gpu=batch,
        decode_layout={"gpus": dec_layout.gpus, "expert_copies_per_gpu": expert_copies_per_gpu(shape, dec_layout)},
        prefill_layout={"gpus": pre_layout.gpus, "expert_copies_per_gpu": expert_copies_per_gpu(shape, pre_layout)},
        mtp_acceptance_bound=a, fits=fit.fits, bytes_needed_per_gpu=fit.bytes_needed,
        max_batch=fit.max_batch,
        **_decode_fields(dec, decode_step(shape, hw, dec_layout, batch, context), achieved_dec_gpu),
        prefill_bound_tokens_per_s_per_node=pre.tokens_per_s_per_gpu * d["gpus_per_node"],
        prefill_bound_with_cache_hits_tokens_per_s_per_node=pre_incl_hits * d["gpus_per_node"],
        prefill_bound=pre.bound, prefill_compute_s_per_token=pre.compute_s / pre.tokens,
        prefill_communication_s_per_token=pre.communication_s / pre.tokens,
        prefill_achieved_tokens_per_s_per_node=d["prefill_input_tokens_per_s_per_node"],
        prefill_fraction_of_bound=achieved_pre_gpu / pre_incl_hits,
        usd_per_million_output_tokens_bound=usd_per_million_tokens(dec.tokens_per_s_per_gpu, price),
        usd_per_million_output_tokens_disclosed=usd_per_million_tokens(achieved_dec_gpu, price),
        usd_per_million_input_tokens_bound=usd_per_million_input_tokens(pre.tokens_per_s_per_gpu, price, h),
        usd_per_million_input_tokens_disclosed=usd_per_million_tokens(achieved_pre_gpu, price),
        usd_per_million_output_tokens_day_total=d["usd_per_day"] / (d["output_tokens_per_day"] / 1e6),
        usd_per_million_output_tokens_note_method=note_method_usd_per_million_tokens(shape, hw, context, price),
        usd_per_gpu_hour=price, decode_by_context=_decode_by_context(shape, hw, batch, achieved_dec_gpu, a),
    )
