"""Section 3: dense vs MoE training and inference cost against total and active parameters.

Shapes: the note's use cases (``accounting.reproduce.note.table2_shapes``) and the public MoE configs
accounting ships. Every model is priced the same way, so that only its shape differs: training at a
``TRAIN_WINDOW``-token window, Chinchilla tokens (``accounting.chinchilla.TOKENS_PER_PARAMETER`` per
parameter, the note's rule, on total or on active parameters), inference per generated token with
``INFER_CONTEXT`` tokens in the KV cache; flops are FLOP (2 per multiply-add), priced on the H800 preset
at DeepSeek-V3's own $2/GPU-hour (``accounting.reproduce.deepseek.DEEPSEEK_REPORTED``) and at the utilisation
its reported GPU-hours imply (section 2).
"""
from __future__ import annotations

import pandas as pd

from accounting import cost as accounting_cost
from accounting.reproduce import deepseek, note
from accounting.chinchilla import TOKENS_PER_PARAMETER
from accounting.flops import FLOP, decode_flops_per_token, training_flops_per_token
from accounting.params import count_parameters
from accounting.shapes import ModelShape

from .shipped import shipped_shapes

TRAIN_WINDOW = 4096   # tokens per training window (DeepSeek-V3's pretraining length) for every model
INFER_CONTEXT = 4096  # tokens already in the cache when a token is generated


def note_cases() -> dict[str, ModelShape]:
    """The note's Table 2 use cases as shapes (case D as its low and high endpoints)."""
    out: dict[str, ModelShape] = {}
    for k, v in note.table2_shapes().items():
        if isinstance(v, tuple):
            out.update({f"note {k} ({lab})": s for lab, s in zip(("low", "high"), v)})
        else:
            out[f"note {k}"] = v
    return out


def price(mfu: float) -> dict:
    """$ per FLOP on the H800 preset at DeepSeek's reported $/GPU-hour and utilisation ``mfu``."""
    rate = accounting_cost.gpu_rate("h800", usd_per_hour=deepseek.DEEPSEEK_REPORTED["usd_per_gpu_hour"], mfu=mfu)
    return {"hardware": rate.name, "peak": rate.peak_flops_per_s, "usd_per_hour": rate.usd_per_hour, "mfu": mfu,
            "usd_per_flop": accounting_cost.usd_per_flop(rate, FLOP)}


def cost_table(mfu: float, shapes: dict[str, ModelShape] | None = None) -> pd.DataFrame:
    """One row per model: parameters, Chinchilla tokens, training and inference cost."""
    shapes = shapes if shapes is not None else {**note_cases(), **shipped_shapes()}
    usd_per_flop = price(mfu)["usd_per_flop"]
    tpp = TOKENS_PER_PARAMETER
    rows = []
    for name, s in shapes.items():
        c = count_parameters(s)
        fpt = training_flops_per_token(s, TRAIN_WINDOW, flops_per_mac=FLOP, causal=True)
        dec = decode_flops_per_token(s, INFER_CONTEXT, flops_per_mac=FLOP)
        rows.append({"model": name, "family": "MoE" if s.is_moe else "dense", "total_params": c.total,
                     "active_params": c.active, "active_fraction": c.active / c.total,
                     "train_flops_per_token": fpt, "chinchilla_tokens_total": tpp * c.total,
                     "chinchilla_tokens_active": tpp * c.active,
                     "train_usd_total": tpp * c.total * fpt * usd_per_flop,
                     "train_usd_active": tpp * c.active * fpt * usd_per_flop,
                     "decode_flops_per_token": dec, "infer_usd_per_mtok": dec * 1e6 * usd_per_flop})
    return pd.DataFrame(rows)
