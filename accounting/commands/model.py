"""``python -m accounting scaling``, ``params``, ``cost`` and ``train-memory``: one model's laws, counts,
price and training memory (`accounting.api`), rendered as text."""
from __future__ import annotations

import argparse
from typing import Any

from .. import api, cost, gpu_count, scaling_cli, train_memory_cli
from ..chinchilla import TOKENS_PER_PARAMETER
from ..formatting import grid, si
from ..hardware import HARDWARE
from .base import (CliError, Command, check_finite, config_argument, fraction, gpus_or_auto, nonneg, parse_count,
                   positive_int, register, year_argument)


def scaling_arguments(p: argparse.ArgumentParser) -> None:
    config_argument(p)
    p.add_argument("--tokens", required=True, help="training tokens D, e.g. 14.8e12 or 14.8T")
    p.add_argument("--seq-len", type=positive_int, default=None,
                   help="training window (DeepSeek LLM's attention term; default: the config's context)")


def scaling_result(args: argparse.Namespace) -> api.ScalingResult:
    return api.scaling_laws(args.config, parse_count(args.tokens, "--tokens"), args.seq_len)


register(Command("scaling", "published dense and MoE scaling laws put to one model", scaling_arguments,
                 scaling_result, scaling_cli.scaling_text, csv=scaling_cli.csv))


# ----- params ------------------------------------------------------------------------------------------
def params_arguments(p: argparse.ArgumentParser) -> None:
    config_argument(p)
    p.add_argument("--seq-len", type=positive_int, default=None, help="override the context length")


def params_text(d: dict[str, Any]) -> str:
    s = d["shape"]
    out = [f"{d['name']} ({d['config']}): V={s['vocab_size']} d={s['d_model']} L={s['n_layers']} "
           f"H={s['n_heads']} attention={s['attention']} ffn={s['ffn_kind']} E={s['n_experts']} "
           f"k={s['top_k']} shared={s['n_shared_experts']} dense_layers={(s['moe_layer_pattern'].count('D') if s.get('moe_layer_pattern') else s['first_dense_layers']) if s['n_experts'] else s['n_layers']}",
           grid(["component", "total", "active"],
                 [[k, si(v["total_params"]), si(v["active_params"])] for k, v in d["components"].items()]
                 + [["TOTAL", si(d["total_params"]), si(d["active_params"])]])]
    out.append(f"exact: total {d['total_params']:,}  active {d['active_params']:,} "
               f"({d['active_fraction']:.2%}); active with the whole input embedding "
               f"{d['active_with_input_embedding_params']:,}")
    if d["mtp_params"]:
        out.append(f"MTP modules (not in total): {d['mtp_params']:,}; total with MTP {d['total_with_mtp_params']:,}")
    out.append(f"Chinchilla ({TOKENS_PER_PARAMETER:g} tokens/param): {si(d['chinchilla_total_basis_tokens'])} tokens on total, "
               f"{si(d['chinchilla_active_basis_tokens'])} on active")
    out.append(f"KV cache: {d['kv_cache_elements_per_token']:,} elements per token ({si(d['kv_cache_bytes_per_token_bf16'])}B in bf16)")
    if "published" in d:
        p = d["published"]
        out.append(f"published: total {si(p['total_params'])} (ours/published {d['total_params'] / p['total_params']:.4f}), "
                   f"active {si(p['active_params'])} -- {p['source']}")
    return "\n".join(out)


register(Command("params", "parameter counts of a config", params_arguments,
                 lambda args: api.parameters(args.config, args.seq_len), params_text))


# ----- cost --------------------------------------------------------------------------------------------
def cost_arguments(pc: argparse.ArgumentParser) -> None:
    config_argument(pc)
    pc.add_argument("--tokens", required=True, help="training tokens D, e.g. 14.8e12 or 14.8T")
    pc.add_argument("--seq-len", type=positive_int, default=None,
                    help="training window n in tokens (default: the config's context length, e.g. an HF "
                         "config's max_position_embeddings)")
    pc.add_argument("--gpu", default="press2025", choices=sorted(HARDWARE),
                    help=f"hardware preset (default press2025: the note's {cost.NOTE_PEAK_MACS_TEXT} multiply-adds/s at "
                         f"{cost.NOTE_USD_PER_GPU_YEAR_TEXT}/year)")
    pc.add_argument("--usd-per-hour", type=nonneg, default=None, help="override the preset's $/GPU-hour")
    pc.add_argument("--mfu", type=fraction, default=None, help="model flops utilisation in (0, 1] (default 1.0)")
    pc.add_argument("--gpus", type=gpus_or_auto, default=None,
                    help="GPUs: adds the wall-clock days at this MFU; 'auto': the smallest count whose training "
                         "memory fits --gpu (micro-batch 1 at --seq-len, train-memory's defaults)")
    pc.add_argument("--full-attention", action="store_true", help="count the full n x n scores (default: causal)")
    pc.add_argument("--year", type=year_argument, default=cost.NOTE_BASE_YEAR,
                    help=f"price year (cost halves every {cost.COST_HALVING_YEARS:g} years from {cost.NOTE_BASE_YEAR})")


def cost_result(args: argparse.Namespace) -> api.CostResult:
    tokens = parse_count(args.tokens, "--tokens")
    result = api.price(args.config, tokens, args.seq_len, gpu=args.gpu, usd_per_hour=args.usd_per_hour,
                       mfu=args.mfu, causal=not args.full_attention, year=args.year, gpus=args.gpus)
    check_finite(result.to_dict(), f"cost of --tokens {args.tokens} at --seq-len {result.seq_len}")
    return result


def cost_text(d: dict[str, Any]) -> str:
    g = d["gpu"]
    return "\n".join([
        f"{d['name']} ({d['config']}): {si(d['tokens'])} tokens at seq_len {d['seq_len']} "
        f"({'causal' if d['causal_attention'] else 'full'} attention)",
        f"GPU: {g['name']}, peak {si(g['peak_flops_per_s'])}flop/s ({g['peak_convention']}), "
        f"mfu {g['mfu']:g}, ${g['usd_per_hour']:.4g}/GPU-hour",
        f"params: total {si(d['total_params'])}, active {si(d['active_params'])}; Chinchilla tokens "
        f"{si(d['chinchilla_total_basis_tokens'])} (total) / {si(d['chinchilla_active_basis_tokens'])} (active)",
        f"training: {si(d['training_flops_fma2_per_token'])} FLOP/token (2 per MAC) -> {si(d['training_flops_fma2'])} FLOP "
        f"= {si(d['training_flops_mac'])} multiply-adds; 6 N_active D = {si(d['six_n_active_d_flops_fma2'])} FLOP",
        f"time and money: {si(d['gpu_hours'])} GPU-hours = {si(d['gpu_years'])} GPU-years -> ${si(d['cost_usd'])}"
        f" (${si(d['cost_usd_at_year'])} at {d['year']:g} with cost halving every {cost.COST_HALVING_YEARS:g} years)",
        f"inference: {si(d['decode_flops_fma2_per_token'])} FLOP per generated token at context {d['seq_len']} "
        f"-> ${d['inference_usd_per_million_tokens']:.3g} per million tokens",
        "compute-optimal at this budget (C = 6ND): " + "; ".join(
            f"{k}: N={si(v['params'])}, D={si(v['tokens'])}" for k, v in d["compute_optimal"].items()),
    ]) + gpu_count.wall_clock_line(d) + _cost_gpus_auto_line(d)


def _cost_gpus_auto_line(d: dict[str, Any]) -> str:
    """The line ``cost --gpus auto`` adds: the layout chosen and why."""
    a = d.get("gpus_auto")
    if not a:
        return ""
    lay, b = a["layout"], a["per_gpu_bytes"]
    return (f"\n--gpus auto: {lay['gpus']} x {a['gpu']} (tp {lay['tp']}, pp {lay['pp']}, ep {lay['ep']}, dp {lay['dp']}, "
            f"ZeRO {lay['zero']}): training memory {b['total'] / 1e9:,.1f} of {a['capacity_bytes'] / 1e9:g} GB per GPU "
            f"(micro-batch {a['micro_batch']} x {a['seq_len']} tokens); {a['reason']}")


register(Command("cost", "training and inference cost of a config", cost_arguments, cost_result, cost_text))


# ----- train-memory (accounting.training_memory) -------------------------------------------------------
def train_memory_arguments(p: argparse.ArgumentParser) -> None:
    config_argument(p)
    train_memory_cli.train_memory_arguments(p)


def train_memory_result(args: argparse.Namespace) -> train_memory_cli.TrainMemoryReport:
    if args.seq_len < 1:
        raise CliError(f"--seq-len must be a positive integer, got {args.seq_len}")
    settings = {k: v for k, v in vars(train_memory_cli.settings_from_args(args)).items()
                if k not in ("seq_len", "micro_batch")}
    return api.train_memory(args.config, args.seq_len, args.micro_batch, args.gpus, tp=args.tp, pp=args.pp,
                            ep=args.ep, zero=args.zero, sp=args.sp, gpu=args.gpu, **settings)


register(Command("train-memory", "training memory per GPU and the GPU count that fits", train_memory_arguments,
                 train_memory_result, train_memory_cli.text))
