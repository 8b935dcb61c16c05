"""The key findings: the numbers a reader came for, each with its section and source (written after the
sections, from the context and the values they printed)."""
from __future__ import annotations

from typing import Mapping

from accounting.chinchilla import TOKENS_PER_PARAMETER
from accounting.reproduce.deepseek import DisclosedServingCheck

from .. import moe_layer
from ..context import Context
from ..tables import pct, si, usd
from . import Section


def section(ctx: Context, values: Mapping[str, float]) -> Section:
    out = _table3(values) + _deepseek(ctx) + _serving(ctx.disclosed) + _chinchilla(ctx) + _measured(ctx)
    return Section("\n".join(out) + "\n" if out else "No findings: every section lacks data.\n")


def _table3(v: Mapping[str, float]) -> list[str]:
    if "table3_cells" not in v:
        return []
    return [f"- The note's Table 3 recomputes to within its printed rounding in "
            f"{v['table3_cells'] - v.get('table3_differs', 0)} of {v['table3_cells']} cells "
            "(section 1; `accounting.reproduce.note`)."]


def _deepseek(ctx: Context) -> list[str]:
    c = ctx.deepseek
    if not c:
        return []
    return [f"- DeepSeek-V3: the note's {usd(c['steps'][0].usd)} becomes the reported "
            f"{usd(c['reported_usd'])} through computed factors; the exact architecture trains at "
            f"{si(c['exact_flops_per_token'])} FLOP per token (DeepSeek reports "
            f"{si(c['reported_flops_per_token'])}; {si(c['exact_mtp_flops_per_token'])} with its "
            f"multi-token-prediction module), which over the reported "
            f"{si(c['reported_gpu_hours_pretrain'])} pretraining H800-hours is {pct(c['mfu_no_mtp'])} model "
            f"FLOP utilisation ({pct(c['mfu'])} with the module; MFU; section 2; "
            "`accounting.reproduce.deepseek.deepseek_v3_estimates`, `accounting/configs/deepseek-v3.json`)."]


def _serving(d: DisclosedServingCheck) -> list[str]:
    return [f"- Serving DeepSeek-V3 in DeepSeek's disclosed decode layout, the roofline bound is "
            f"{si(d.decode_bound_tokens_per_s_per_node)} output tokens/s per H800 node "
            f"({d.decode_bound}-bound); DeepSeek's disclosed {si(d.decode_achieved_tokens_per_s_per_node)} "
            f"is {pct(d.decode_fraction_of_bound)} of it, i.e. "
            f"${d.usd_per_million_output_tokens_disclosed:.2f} per million output tokens against "
            f"${d.usd_per_million_output_tokens_bound:.3f} at the bound and "
            f"${d.usd_per_million_output_tokens_note_method:.3f} by the note's compute-only method "
            "(section 6; `accounting.reproduce.deepseek.deepseek_disclosed_check`)."]


def _chinchilla(ctx: Context) -> list[str]:
    costs = ctx.costs
    if costs.empty or not (costs["model"] == "deepseek-v3").any():
        return []
    r = costs[costs["model"] == "deepseek-v3"].iloc[0]
    return [f"- An MoE's Chinchilla budget depends on which parameters count: DeepSeek-V3 "
            f"({pct(r.active_fraction)} of its parameters active) costs {usd(r.train_usd_total)} at "
            f"{TOKENS_PER_PARAMETER} x total parameters but {usd(r.train_usd_active)} at "
            f"{TOKENS_PER_PARAMETER} x active (section 3; `reports.costs`, shipped configs)."]


COMPILED = " (both compiled with torch.compile)"


def _measured(ctx: Context) -> list[str]:
    out = [f"- Measured MoE/dense cost per training FLOP, {p['model']} vs {p['dense']}"
           f"{COMPILED if p['compiled'] else ''}: c = "
           f"{p['cost_ratio_median']:.3f} [{p['cost_ratio_low']:.3f}, {p['cost_ratio_high']:.3f}] "
           f"(median, 95% bootstrap interval, {p['repeats']} interleaved repeats on {p['device']}): "
           f"{p['verdict']} (section 5; `{p['source']}/paired.csv`)." for p in ctx.paired[:3]]
    for source, df in (ctx.moe_layer.groupby("source", sort=False) if not ctx.moe_layer.empty else []):
        line = moe_layer.finding(df, source)
        if line:
            out.append(line)
    summ = ctx.summary
    if not summ.empty and summ["final_val_loss"].notna().any():
        best = summ.loc[summ["final_val_loss"].idxmin()]
        worst = summ.loc[summ["final_val_loss"].idxmax()]
        out.append(f"- Training runs ({len(summ)}, one seed each): final validation loss from "
                   f"{best.final_val_loss:.3f} ({best.run}) to {worst.final_val_loss:.3f} ({worst.run}) "
                   f"(section 4; `{best.path}/metrics.jsonl`, `{worst.path}/metrics.jsonl`).")
    return out
