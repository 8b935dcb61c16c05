"""Section 2: the note's DeepSeek-V3 estimate, reproduced and then corrected step by step.

Every step is a factor computed from accounting (flops, params, hardware) and the published numbers in
``reports/data/published``; the chain runs from the note's $2.9M to DeepSeek's reported $5.576M.
"""
from __future__ import annotations

from dataclasses import dataclass

from accounting.flops import FLOP, MAC, training_flops_per_token
from accounting.hardware import get_hardware
from accounting.params import count_parameters
from accounting.shapes import ModelShape

from . import published as P
from .shipped import shipped_shapes

SECONDS_PER_HOUR = 3600.0


def note_train_macs_per_token(d: int, n_layers: int, n: int) -> float:
    """The note's eq. (5) divided by n without the V term: ``(6 n d + 36 d^2) L`` multiply-adds per
    trained token (its eq. 6 is this times D* = 240 L d^2)."""
    try:
        from accounting import press2025 as p
        fn = getattr(p, "training_flops_per_token", None) or getattr(p, "train_flops_per_token", None)
        if fn is not None:
            return float(fn(d_model=d, n_layers=n_layers, seq_len=n))
    except (ImportError, TypeError):
        pass
    return float((6 * n * d + 36 * d * d) * n_layers)


def deepseek_shape() -> ModelShape | None:
    """DeepSeek-V3 from accounting's shipped config, or None when it is not there yet."""
    shapes = shipped_shapes()
    for key in ("deepseek-v3", "deepseek_v3", "DeepSeek-V3"):
        if key in shapes:
            return shapes[key]
    return next((s for k, s in shapes.items() if "v3" in k.lower() and "deepseek" in k.lower()), None)


@dataclass
class Step:
    label: str
    factor: float
    usd: float       # cost after this step
    why: str


def reproduce_note() -> dict:
    """The note's own arithmetic (multiply-adds, n = 32K, $1e-18 per flop), recomputed."""
    d, L, n = int(P.note("d_model")), int(P.note("n_layers")), int(P.note("train_seq_len"))
    tokens = P.deepseek("pretrain_tokens")
    per_token = note_train_macs_per_token(d, L, n)
    macs = per_token * tokens
    press = get_hardware("press2025")
    usd_per_mac_exact = press.usd_per_hour / SECONDS_PER_HOUR / press.peak_bf16_flops_per_s
    usd = macs * P.note("usd_per_flop")
    return {"d": d, "L": L, "n": n, "active_12Ld2": 12 * L * d * d,
            "total": P.deepseek("total_parameters"),
            "chinchilla_tokens": P.note("tokens_per_parameter") * P.deepseek("total_parameters"),
            "tokens": tokens, "macs_per_token": per_token, "macs": macs,
            "gpu_hours_exact": macs / press.peak_bf16_flops_per_s / SECONDS_PER_HOUR,
            "gpu_hours_from_usd": usd / (press.usd_per_hour),
            "usd_per_gpu_hour": press.usd_per_hour, "usd_per_mac_exact": usd_per_mac_exact,
            "usd": usd, "usd_exact_price": macs * usd_per_mac_exact}


def corrections(shape: ModelShape | None = None) -> dict:
    """The chain of corrections. Needs DeepSeek-V3's shape for the exact-accounting steps; without it
    those steps are skipped (factor 1, marked)."""
    shape = shape if shape is not None else deepseek_shape()
    note = reproduce_note()
    d, L = note["d"], note["L"]
    n4k = int(P.deepseek("pretrain_seq_len"))
    tokens = note["tokens"]
    h800 = get_hardware("h800")
    peak = h800.peak("bf16")
    hours_pre, hours_all = P.deepseek("gpu_hours_pretrain"), P.deepseek("gpu_hours_total")
    usd_per_hour = P.deepseek("usd_per_gpu_hour")

    f_note_4k = note_train_macs_per_token(d, L, n4k) * FLOP
    out = {"note": note, "shape": shape, "peak": peak, "hardware": h800.name, "n_pretrain": n4k}
    steps = [Step("the note: (6nd+36d²)L x 14.8T at n=32K, $1e-18/flop", 1.0, note["usd"],
                  "multiply-adds at the note's rounded $1e-18 per flop")]

    def add(label, factor, why):
        steps.append(Step(label, factor, steps[-1].usd * factor, why))

    add("multiply-add = 2 FLOP", FLOP / MAC, "GPU peaks count two flops per multiply-add")
    add("sequence length 4K, not 32K", note_train_macs_per_token(d, L, n4k) / note["macs_per_token"],
        "DeepSeek-V3 pretrained at 4K; 32K/128K were short extension stages")
    flops_pt = f_note_4k
    if shape is not None:
        exact = training_flops_per_token(shape, n4k, flops_per_mac=FLOP, causal=True)
        exact_mtp = training_flops_per_token(shape, n4k, flops_per_mac=FLOP, causal=True, include_mtp=True)
        add("exact MLA + MoE accounting (causal)", exact / f_note_4k,
            "accounting.flops on the shipped config: MLA, 8 routed + 1 shared expert, 3 dense layers, causal halving")
        add("+ multi-token-prediction module", exact_mtp / exact, "the depth-1 MTP module trained alongside")
        flops_pt = exact_mtp
        counts = count_parameters(shape)
        out.update(exact_flops_per_token=exact, exact_mtp_flops_per_token=exact_mtp,
                   total_params=counts.total, active_params=counts.active, mtp_params=counts.mtp_total)
    usd_per_flop_h800 = usd_per_hour / SECONDS_PER_HOUR / peak
    add("H800 at $2/h and 989 TFLOP/s peak", usd_per_flop_h800 / P.note("usd_per_flop"),
        "the reported rental price over the datasheet bf16 peak, at 100% utilisation")
    flops = flops_pt * tokens
    mfu = flops / (hours_pre * SECONDS_PER_HOUR * peak)
    add("implied utilisation (MFU)", 1.0 / mfu, "the computed flops spread over the reported 2.664M pretraining H800-hours")
    add("context extension + post-training", hours_all / hours_pre, "2.788M GPU-hours in all vs 2.664M pretraining")
    out.update(steps=steps, flops=flops, flops_per_token=flops_pt, mfu=mfu,
               mfu_no_mtp=(out.get("exact_flops_per_token", f_note_4k) * tokens) / (hours_pre * SECONDS_PER_HOUR * peak),
               mfu_fp8=flops / (hours_pre * SECONDS_PER_HOUR * h800.peak("fp8")),
               reported_usd=P.deepseek("usd_total"), six_n_d=6 * P.deepseek("active_parameters") * tokens,
               reported_flops_per_token=P.deepseek("train_flops_per_token_reported"),
               note_flop=note["macs"] * FLOP)
    return out
