"""Section 6 of the note (DeepSeek-V3) as the note computes it, beside its printed values and DeepSeek's reported
figures: the note's convention (a multiply-add is ONE flop), its n = 32K window, its rounded $1e-18 per flop.
"""
from __future__ import annotations

from typing import Any

from .. import cost
from ..chinchilla import TOKENS_PER_PARAMETER
from ..flops import FLOP, MAC
from .deepseek import DEEPSEEK_REPORTED
from .note import K, note_training_macs_per_token, printed, printed_power

DEEPSEEK_NOTE = {"d_model": 7168, "n_layers": 61, "n_heads": 128, "inference_seq_len": 128 * K,
                 "train_seq_len": 32 * K, "total_params": 671e9}
SECTION6_PRINTED = {"active_12Ld2_params": printed("38", 1e9), "chinchilla_tokens": printed("13.4", 1e12),
                    "train_flops_mac": printed_power("2.9", 1e24), "gpu_hours": printed("2.5", 1e6),
                    "cost_usd": printed("2.9", 1e6),
                    "reported_gpu_hours": printed("2.8", 1e6), "reported_usd": printed("5.6", 1e6)}
"""Section 6 as printed (the text says 38B, 13.4T, 2.9e24 flops, 2.5M GPU-hours, $2.9M; reported 2.8M h, $5.6M)."""


def section6() -> dict[str, Any]:
    """The note's DeepSeek arithmetic recomputed (multiply-add = 1 flop, n = 32K, $1e-18 per flop)."""
    d, L, n = DEEPSEEK_NOTE["d_model"], DEEPSEEK_NOTE["n_layers"], DEEPSEEK_NOTE["train_seq_len"]
    tokens = DEEPSEEK_REPORTED["pretrain_tokens"]
    chin = TOKENS_PER_PARAMETER * DEEPSEEK_NOTE["total_params"]
    per_token = note_training_macs_per_token(d, L, n)
    macs = per_token * tokens
    usd = cost.note_rounded_cost_usd(macs)
    usd_per_hour = cost.NOTE_GPU.usd_per_hour
    printed_usd = SECTION6_PRINTED["cost_usd"].value
    return {
        "convention": "multiply-add = 1 flop (the note's)",
        "d_model": d, "n_layers": L, "n_heads": DEEPSEEK_NOTE["n_heads"], "train_seq_len": n,
        "active_12Ld2_params": 12 * L * d * d,
        "total_params": DEEPSEEK_NOTE["total_params"],
        "chinchilla_tokens": chin, "reported_tokens": tokens, "reported_over_chinchilla": tokens / chin,
        "train_flops_mac_per_token": per_token,
        "train_flops_mac": macs, "train_flops_fma2": macs * FLOP,
        "cost_usd_rounded_rate": usd,
        "gpu_hours_note_method": printed_usd / usd_per_hour,
        "gpu_hours_from_unrounded_usd": usd / usd_per_hour,
        "gpu_hours_exact_300T": cost.gpu_hours(macs, MAC),
        "cost_usd_exact_rate": cost.cost_usd(macs, MAC),
        "note_usd_per_gpu_hour": usd_per_hour,
        "reported_gpu_hours": DEEPSEEK_REPORTED["gpu_hours_total"],
        "reported_usd": DEEPSEEK_REPORTED["usd_total"],
        "reported_over_note_usd": DEEPSEEK_REPORTED["usd_total"] / usd,
        "printed": {k: v.value for k, v in SECTION6_PRINTED.items()},
    }
