"""``python -m accounting serve`` and ``serving-check``: the serving roofline (`accounting.serving`) and
DeepSeek's disclosed serving with the note's case D (`accounting.reproduce`), rendered as text."""
from __future__ import annotations

import argparse
from typing import Any

from .. import api
from ..formatting import flatten, grid, rows_csv, si
from ..hardware import HARDWARE
from .base import (Command, config_argument, fraction, gpus_or_auto, nonneg, nonneg_int, positive_int,
                   positive_number, register, unit_interval)


def serve_arguments(ps: argparse.ArgumentParser) -> None:
    config_argument(ps)
    ps.add_argument("--gpu", required=True, choices=sorted(k for k, h in HARDWARE.items() if h.memory_bytes),
                    help="hardware preset (peaks, HBM, NVLink, network)")
    ps.add_argument("--gpus", type=gpus_or_auto, default=1,
                    help="GPUs of one replica, G (expert-parallel degree); 'auto': the smallest power of two that "
                         "holds the weights and the KV cache of the largest --batch")
    ps.add_argument("--batch", type=positive_number, nargs="+", required=True,
                    help="concurrent sequences per GPU; several values give a sweep table")
    ps.add_argument("--context", type=nonneg_int, required=True, help="tokens already in each sequence's cache")
    ps.add_argument("--prompt-len", type=positive_int, default=None, help="prefill prompt length (default: --context)")
    ps.add_argument("--weights", choices=("bf16", "fp8"), default="bf16", help="weights precision (default bf16)")
    ps.add_argument("--kv-dtype", choices=("bf16", "fp8"), default="bf16", help="KV cache precision (default bf16)")
    ps.add_argument("--usd-per-hour", type=nonneg, default=None, help="$ per GPU-hour (default: the preset's)")
    ps.add_argument("--efficiency", type=fraction, default=1.0,
                    help="achieved fraction of every peak (compute, HBM, links), in (0, 1]; default 1.0 = the bound")
    ps.add_argument("--tp", type=positive_int, default=None,
                    help="tensor-parallel degree of the non-expert weights (default: G for dense, 1 for MoE)")
    ps.add_argument("--redundant-experts", type=nonneg_int, default=0, help="extra routed-expert copies (DeepSeek: 32)")
    ps.add_argument("--mtp-acceptance", type=unit_interval, default=0.0,
                    help="multi-token-prediction acceptance rate (0 = no speculative decoding)")
    ps.add_argument("--cache-hit-share", type=unit_interval, default=0.0,
                    help="share of prompt tokens served from a prompt cache (priced at 0)")
    ps.add_argument("--dense-equivalent", choices=("active", "total"), default=None,
                    help="price instead a dense model with the config's attention and widths whose FFN makes its "
                         "parameters equal the MoE's active or total count")


def serve_result(args: argparse.Namespace) -> api.ServeResult:
    return api.serve(args.config, args.gpu, args.batch, args.context, gpus=args.gpus, prompt_len=args.prompt_len,
                     weights=args.weights, kv_dtype=args.kv_dtype, usd_per_hour=args.usd_per_hour,
                     efficiency=args.efficiency, tp=args.tp, redundant_experts=args.redundant_experts,
                     mtp_acceptance=args.mtp_acceptance, cache_hit_share=args.cache_hit_share,
                     dense_equivalent=args.dense_equivalent)


def serve_text(d: dict[str, Any]) -> str:
    r0 = d["rows"][0]
    out = [f"{d['name']} ({d['config']}) on {r0['gpus']} x {r0['gpu']} (tp {r0['tp']}, ep {r0['ep']}, "
           f"{r0['expert_copies_per_gpu']} expert copies/GPU), weights {r0['weights_dtype']}, KV {r0['kv_dtype']}, "
           f"context {r0['context']}, efficiency {r0['efficiency']:g}, ${r0['usd_per_gpu_hour']:.4g}/GPU-hour"
           + (f", MTP acceptance {r0['mtp_acceptance']:g}" if r0["mtp_acceptance"] else ""),
           f"params: total {si(r0['total_params'])}, active {si(r0['active_params'])}; "
           f"largest batch that fits: {si(r0['max_batch'])} sequences/GPU"]
    rows = []
    for r in d["rows"]:
        fits = "yes" if r["fits"] else f"NO ({r['bytes_needed_per_gpu'] / 1e9:.1f} of {r['bytes_available_per_gpu'] / 1e9:.0f} GB)"
        rows.append([si(r["batch"]), fits, f"{r['expected_distinct_experts_per_gpu']:.3g}" if r["ep"] > 1 or
                     r["expected_distinct_experts_per_gpu"] else "-",
                     f"{1e3 * r['decode_compute_s']:.3g}", f"{1e3 * r['decode_memory_s']:.3g}",
                     f"{1e3 * r['decode_communication_s']:.3g}", r["bound"], si(r["decode_tokens_per_s_per_gpu"]),
                     f"{r['usd_per_million_output_tokens']:.3g}", f"{r['note_method_usd_per_million_output_tokens']:.3g}"])
    out.append(grid(["batch/GPU", "fits", "experts read/GPU", "compute ms", "memory ms", "comm ms", "bound",
                      "decode tok/s/GPU", "$/Mtok out", "note's $/Mtok"], rows))
    out.append(f"prefill ({r0['prompt_len']}-token prompts): {si(r0['prefill_tokens_per_s_per_gpu'])} tokens/s/GPU "
               f"({r0['prefill_bound']}-bound) -> ${r0['usd_per_million_input_tokens']:.3g} per million input tokens"
               + (f" with {r0['cache_hit_share']:.0%} prompt-cache hits" if r0["cache_hit_share"] else ""))
    out.append("note's $/Mtok: decode FLOP at the datasheet peak only (the note's method, kept for comparison); "
               "experts read/GPU: expected distinct routed experts per MoE layer on one GPU; times per decode step")
    if d.get("gpus_auto"):
        out.append(f"--gpus auto: {d['gpus_auto']['reason']}")
    return "\n".join(out)


register(Command("serve", "roofline of decode and prefill, memory fit and $ per Mtok", serve_arguments,
                 serve_result, serve_text, csv=lambda data: rows_csv([dict(flatten(r)) for r in data["rows"]])))


def serving_check_arguments(pk: argparse.ArgumentParser) -> None:
    pk.add_argument("--context", type=positive_int, default=4096, help="assumed decode context (not disclosed)")
    pk.add_argument("--prompt-len", type=positive_int, default=4096, help="assumed prompt length (not disclosed)")


def serving_check_text(d: dict[str, Any]) -> str:
    k = d["deepseek"]
    out = [f"DeepSeek-V3 on {k['hardware']} in DeepSeek's disclosed layouts ({k['source']}).",
           f"Assumed (not disclosed): context {k['context_assumed']}, prompt length {k['prompt_len_assumed']}. "
           f"Decode batch from the disclosure: {k['decode_batch_per_gpu']:.1f} sequences/GPU "
           f"(14.8k tokens/s/node / 8 / 21 tokens/s per user); MTP acceptance {k['mtp_acceptance_bound']:g} "
           "(the favourable end of 0.85-0.90).",
           grid(["phase", "layout", "bound (tok/s/node)", "binding", "achieved (tok/s/node)", "achieved/bound",
                  "$/Mtok at bound", "$/Mtok achieved"], [
               ["decode", f"EP{k['decode_layout']['gpus']}, {k['decode_layout']['expert_copies_per_gpu']} experts/GPU, FP8",
                si(k["decode_bound_tokens_per_s_per_node"]), k["decode_bound"],
                si(k["decode_achieved_tokens_per_s_per_node"]), f"{k['decode_fraction_of_bound']:.1%}",
                f"{k['usd_per_million_output_tokens_bound']:.3g}", f"{k['usd_per_million_output_tokens_disclosed']:.3g}"],
               ["prefill", f"EP{k['prefill_layout']['gpus']}, {k['prefill_layout']['expert_copies_per_gpu']} experts/GPU, FP8",
                si(k["prefill_bound_with_cache_hits_tokens_per_s_per_node"]), k["prefill_bound"],
                si(k["prefill_achieved_tokens_per_s_per_node"]), f"{k['prefill_fraction_of_bound']:.1%}",
                f"{k['usd_per_million_input_tokens_bound']:.3g}", f"{k['usd_per_million_input_tokens_disclosed']:.3g}"]]),
           f"decode step at the bound: communication {1e3 * k['decode_communication_s']:.1f} ms (network "
           f"{1e3 * k['decode_network_s']:.1f}, NVLink {1e3 * k['decode_nvlink_s']:.1f}), compute "
           f"{1e3 * k['decode_compute_s']:.1f} ms (attention over the cache {1e3 * k['decode_compute_attention_cache_s']:.1f}), "
           f"memory {1e3 * k['decode_memory_s']:.1f} ms (weights {1e3 * k['decode_memory_weights_s']:.1f}, KV cache "
           f"{1e3 * k['decode_memory_kv_s']:.1f}); without MTP the bound is "
           f"{si(k['decode_bound_no_mtp_tokens_per_s_per_node'])} tok/s/node.",
           "the context is not disclosed; decode bound (fraction achieved) at context " + ", ".join(
               f"{n}: {si(v['bound_tokens_per_s_per_node'])} tok/s/node, {v['bound']}-bound ({v['fraction_of_bound']:.0%}"
               + ("" if v["fits"] else f"; {k['decode_batch_per_gpu']:.0f} sequences do not fit") + ")"
               for n, v in k["decode_by_context"].items()) + ".",
           f"prefill input tokens/s include {DEEPSEEK_HIT_TEXT}: computed-prefill bound "
           f"{si(k['prefill_bound_tokens_per_s_per_node'])} tok/s/node / (1 - hit share).",
           f"$ per million output tokens: roofline bound ${k['usd_per_million_output_tokens_bound']:.3g}; DeepSeek's "
           f"throughput ${k['usd_per_million_output_tokens_disclosed']:.3g}; their whole day's cost over output "
           f"tokens ${k['usd_per_million_output_tokens_day_total']:.3g}; the note's method (FLOP at peak) "
           f"${k['usd_per_million_output_tokens_note_method']:.3g} (all at ${k['usd_per_gpu_hour']:g}/GPU-hour).",
           "",
           "The note's case D ('$1-2 per million tokens') with the roofline: dense MHA at its own context, bf16, "
           "tensor-parallel over the smallest power-of-two replica holding one sequence:",
           grid(["case", "context", "params", "GPUs", "sequences", "bound", "$/Mtok roofline", "$/Mtok KV floor",
                  "note's $/Mtok"],
                 [[r["case"], si(r["context"]), si(r["total_params"]), r["gpus"], f"{r['sequences_per_replica']:g}",
                   r["bound"], f"{r['usd_per_million_output_tokens']:.4g}",
                   f"{r['usd_per_million_output_tokens_kv_floor']:.4g}", f"{r['note_usd_per_million_tokens']:.3g}"]
                  for r in d["note_case_d"]]),
           f"(case D on {d['note_case_d'][0]['hardware']} at ${d['note_case_d'][0]['usd_per_gpu_hour']:g}/GPU-hour; "
           "KV floor: reading one sequence's cache per token, whatever the batch)"]
    return "\n".join(out)


DEEPSEEK_HIT_TEXT = "prompt-cache hits (56.3% of input tokens, disclosed)"


register(Command("serving-check", "DeepSeek-V3 in DeepSeek's disclosed layouts vs what it achieved; the note's case D",
                 serving_check_arguments, lambda args: api.serving_check(args.context, args.prompt_len),
                 serving_check_text))
