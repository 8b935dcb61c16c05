"""Section 2: the note's DeepSeek-V3 estimate, reproduced and then corrected step by step.

One source of truth: the note's arithmetic and printed values are :func:`accounting.reproduce.note_section6.section6`,
DeepSeek's reported figures are ``accounting.reproduce.deepseek.DEEPSEEK_REPORTED``, and the exact-architecture
estimates are :func:`accounting.reproduce.deepseek.deepseek_v3_estimates` (shipped ``accounting/configs/deepseek-v3.json``).
Every step of the chain is a factor computed from those; it runs from the note's $2.9M to DeepSeek's
reported $5.576M.
"""
from __future__ import annotations

from dataclasses import dataclass

from accounting import cost as accounting_cost
from accounting.reproduce import deepseek, note_section6
from accounting.flops import FLOP, MAC
from accounting.hardware import get_hardware
from accounting.hf_config import CONFIG_DIR

REPORTED = deepseek.DEEPSEEK_REPORTED
"""DeepSeek-V3's reported figures (arXiv 2412.19437), as accounting records them."""
CONFIG = CONFIG_DIR / "deepseek-v3.json"


@dataclass
class Step:
    label: str
    factor: float
    usd: float       # cost after this step
    why: str


def h800_rate() -> accounting_cost.GpuRate:
    """The H800 preset (bf16 dense datasheet peak) at DeepSeek's reported $/GPU-hour, 100% utilisation."""
    return accounting_cost.gpu_rate("h800", usd_per_hour=REPORTED["usd_per_gpu_hour"])


def corrections() -> dict:
    """The note reproduced (``section6``), DeepSeek-V3 estimated (``deepseek_v3_estimates``) and the
    chain of computed correction factors from the note's dollars to DeepSeek's reported dollars."""
    s6 = note_section6.section6()
    n4k = int(REPORTED["pretrain_seq_len"])
    shape = deepseek.deepseek_v3_shape(n4k)
    est = deepseek.deepseek_v3_estimates(shape, seq_len=n4k)
    m = est["methods"]
    note32k, note4k = m[f"note_formula_n{s6['train_seq_len']}"], m[f"note_formula_n{n4k}"]
    exact, exact_mtp = m[f"exact_causal_n{n4k}"], m[f"exact_causal_n{n4k}_with_mtp"]
    hours_pre, hours_all = est["reported_gpu_hours_pretrain"], est["reported_gpu_hours_total"]
    h800, h800_hw = h800_rate(), get_hardware("h800")
    peak = est["peak_bf16_flops_per_s"]

    steps = [Step(f"the note: (6nd+36d²)L x {s6['reported_tokens'] / 1e12:g}T at n={s6['train_seq_len'] // 1024}K, "
                  f"${accounting_cost.NOTE_ROUNDED_USD_PER_MAC:g}/flop", 1.0, s6["cost_usd_rounded_rate"],
                  f"multiply-adds at the note's rounded {accounting_cost.NOTE_USD_PER_MAC_TEXT} per flop (note_section6.section6)")]

    def add(label, factor, why):
        steps.append(Step(label, factor, steps[-1].usd * factor, why))

    add("multiply-add = 2 FLOP", FLOP / MAC, "GPU peaks count two flops per multiply-add")
    add(f"sequence length {n4k // 1024}K, not {s6['train_seq_len'] // 1024}K",
        note4k["flops_mac_per_token"] / note32k["flops_mac_per_token"],
        f"DeepSeek-V3 pretrained at {n4k // 1024}K; the 32K/128K context extension took only "
        f"{REPORTED['gpu_hours_context_extension'] / 1e6:.3g}M of {hours_all / 1e6:.4g}M GPU-hours")
    add("exact MLA + MoE accounting (causal)", exact["flops_mac_per_token"] / note4k["flops_mac_per_token"],
        "accounting.flops on the shipped config: MLA, 8 routed + 1 shared expert, 3 dense layers, causal halving")
    add("+ multi-token prediction (MTP) module", exact_mtp["flops_mac_per_token"] / exact["flops_mac_per_token"],
        "the depth-1 MTP module trained alongside")
    add(f"H800 at ${h800.usd_per_hour:g}/h and {peak / 1e12:g} TFLOP/s peak",
        accounting_cost.usd_per_flop(h800, FLOP) / accounting_cost.NOTE_ROUNDED_USD_PER_MAC,
        "the reported rental price over the datasheet bf16 peak, at 100% utilisation")
    add("implied utilisation (MFU)", 1.0 / exact_mtp["implied_mfu_bf16"],
        f"the computed flops spread over the reported {hours_pre / 1e6:.4g}M pretraining H800-hours")
    add("context extension + post-training", hours_all / hours_pre,
        f"{hours_all / 1e6:.4g}M GPU-hours in all vs {hours_pre / 1e6:.4g}M pretraining")

    return {"note": s6, "estimates": est, "shape": shape, "config": CONFIG, "steps": steps,
            "peak": peak, "hardware": h800.name, "n_pretrain": n4k,
            "total_params": est["total_params"], "active_params": est["active_params"], "mtp_params": est["mtp_params"],
            "exact_flops_per_token": exact["flops_fma2_per_token"],
            "exact_mtp_flops_per_token": exact_mtp["flops_fma2_per_token"],
            "flops": exact_mtp["flops_fma2"], "flops_per_token": exact_mtp["flops_fma2_per_token"],
            "mfu": exact_mtp["implied_mfu_bf16"], "mfu_no_mtp": exact["implied_mfu_bf16"],
            "mfu_fp8": accounting_cost.implied_mfu(exact_mtp["flops_fma2"], FLOP, hours_pre, h800_hw.peak("fp8")),
            "reported_usd": est["reported_usd_total"], "reported_gpu_hours": hours_all,
            "reported_gpu_hours_pretrain": hours_pre,
            "six_n_d": m["six_n_active_d_published_37b"]["flops_fma2"],
            "reported_flops_per_token": REPORTED["train_flops_per_token_reported"],
            "note_flop": s6["train_flops_fma2"]}
