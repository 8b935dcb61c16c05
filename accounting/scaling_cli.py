"""``python -m accounting scaling --config NAME|FILE --tokens D [--seq-len n] [--format table|json|csv]`` and the
scaling section of ``python -m accounting deepseek``: every published law of `accounting.scaling` put to one
model shape and token count: the command's data (`scaling_data`), its table (`scaling_text`) and CSV (`csv`);
`accounting.commands.model` adds its options and registers it, `accounting.api.scaling_laws` is the command from Python."""
from __future__ import annotations

from typing import Any

from .chinchilla import TOKENS_PER_PARAMETER
from .formatting import grid, rows_csv, si
from .scaling_evaluation import LOSS_UNITS_NOTE, disagreement, evaluate_all, scaling_point

DEEPSEEK_V3_TOKENS = 14.8e12
"""DeepSeek-V3's reported pretraining tokens (arXiv 2412.19437)."""


def csv(data: dict[str, Any]) -> str:
    """One CSV row per law (the extrapolation as its summary)."""
    return rows_csv([{k: (v["summary"] if k == "extrapolation" else v) for k, v in r.items()} for r in data["laws"]])


def scaling_data(shape, source: str, tokens: float) -> dict[str, Any]:
    """Every law's result for ``shape`` on ``tokens`` tokens, as plain data."""
    results = evaluate_all(shape, tokens)
    p = scaling_point(shape, tokens)
    d = disagreement(results)
    return {"name": shape.name, "config": source, "tokens": tokens,
            "convention": "FLOP with 2 per multiply-add; each law's own compute convention in own_flops_convention",
            "note": LOSS_UNITS_NOTE,
            "params": {"total": p.total_params, "active": p.active_params, "total_nonembedding": p.total_nonembedding,
                       "active_nonembedding": p.active_nonembedding, "experts": p.n_experts,
                       "experts_per_token": p.experts_per_token, "granularity": p.granularity,
                       "sparsity": p.sparsity},
            "laws": [r.to_dict() for r in results],
            "disagreement_moe_laws": {"laws": list(d.laws), "leverage_min": d.leverage_min,
                                      "leverage_max": d.leverage_max, "leverage_spread": d.leverage_spread,
                                      "optimal_tokens_min": d.optimal_tokens_min,
                                      "optimal_tokens_max": d.optimal_tokens_max,
                                      "optimal_tokens_spread": d.optimal_tokens_spread}}


def _num(x: float | None, fmt: str = "{}") -> str:
    return "-" if x is None else fmt.format(x)


def laws_table(laws: list[dict[str, Any]]) -> tuple[list[str], list[list[str]]]:
    """Header and rows of the per-law table."""
    rows = [[r["law"], _num(r["loss"], "{:.3f}"), si(r["own_flops"]), _num(r["dense_equivalent_flops"] and
                                                                          si(r["dense_equivalent_flops"])),
             _num(r["leverage"], "{:.3g}x"), _num(r["optimal_tokens"] and si(r["optimal_tokens"])),
             _num(r["optimal_active_params"] and si(r["optimal_active_params"])), r["extrapolation"]["summary"]]
            for r in laws]
    return ["law", "loss (own units)", "own FLOP", "dense-equiv FLOP", "leverage", "opt tokens", "opt active params",
            "outside the fitted range"], rows


def scaling_text(d: dict[str, Any]) -> str:
    """The ``scaling`` command's table, from `accounting.api.ScalingResult.to_dict()`."""
    p, g = d["params"], d["disagreement_moe_laws"]
    out = [f"{d['name']} ({d['config']}) on {si(d['tokens'])} tokens: total {si(p['total'])}, active {si(p['active'])} "
           f"parameters ({si(p['active_nonembedding'])} active non-embedding); experts {p['experts']}, top-k "
           f"{p['experts_per_token']}, granularity {p['granularity']:.3g}, sparsity {p['sparsity']:.3g}",
           grid(*laws_table(d["laws"])),
           f"Note: {d['note']}. Dense laws (hoffmann, besiroglu, kaplan) see only the active parameters: their leverage "
           "(<= 1) is the cost of the model's own N/D split. opt = compute-optimal at the model's own budget, with the "
           "architecture's ratios fixed."]
    if g["leverage_spread"]:
        out.append(f"The MoE laws disagree: leverage {g['leverage_min']:.3g}x to {g['leverage_max']:.3g}x "
                   f"(x{g['leverage_spread']:.3g}); optimal tokens {si(g['optimal_tokens_min'])} to "
                   f"{si(g['optimal_tokens_max'])}.")
    return "\n".join(out)


# ----- the DeepSeek section ---------------------------------------------------------------------------
def deepseek_section(shape) -> dict[str, Any]:
    """DeepSeek-V3 (``shape`` at its 4K pretraining window) on its reported 14.8T tokens: the note's
    Chinchilla sizing (20 x total), 20 x active, and each law's leverage and optimal tokens."""
    data = scaling_data(shape, "shipped:deepseek-v3", DEEPSEEK_V3_TOKENS)
    p = data["params"]
    data["token_bases"] = {"note_20x_total": TOKENS_PER_PARAMETER * p["total"],
                           "20x_active": TOKENS_PER_PARAMETER * p["active"], "reported": DEEPSEEK_V3_TOKENS}
    opt = [r["optimal_tokens"] for r in data["laws"] if r["optimal_tokens"]]
    data["optimal_tokens_all_laws"] = {"min": min(opt), "max": max(opt), "spread": max(opt) / min(opt)}
    return data


def deepseek_text(d: dict[str, Any]) -> str:
    """The scaling section that ``python -m accounting deepseek`` prints, from `deepseek_section`."""
    t, a, g = d["token_bases"], d["optimal_tokens_all_laws"], d["disagreement_moe_laws"]
    rows = [["note: 20 x total (Chinchilla)", si(t["note_20x_total"]), f"{t['note_20x_total'] / t['reported']:.3g}",
             "-", "-"],
            ["20 x active", si(t["20x_active"]), f"{t['20x_active'] / t['reported']:.3g}", "-", "-"]]
    rows += [[r["law"], _num(r["optimal_tokens"] and si(r["optimal_tokens"])),
              _num(r["optimal_tokens"] and r["optimal_tokens"] / t["reported"], "{:.3g}"),
              _num(r["leverage"], "{:.3g}x"), r["extrapolation"]["summary"]] for r in d["laws"]]
    rows.append(["reported (DeepSeek)", si(t["reported"]), "1", "-", "-"])
    return "\n".join([
        f"Scaling laws put to DeepSeek-V3 ({si(d['params']['total'])} total, {si(d['params']['active'])} active, "
        f"{si(t['reported'])} tokens; accounting.scaling; {d['note']}):",
        grid(["basis / law", "optimal tokens", "/ reported 14.8T", "leverage", "outside the fitted range"], rows),
        f"The laws disagree: optimal tokens {si(a['min'])} to {si(a['max'])} (x{a['spread']:.3g}); the MoE laws' "
        f"leverage (dense-equivalent compute / own compute) {g['leverage_min']:.3g}x to {g['leverage_max']:.3g}x "
        f"(x{g['leverage_spread']:.3g}). Every law is extrapolated, most by one to three orders of magnitude."])
