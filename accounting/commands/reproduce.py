"""``python -m accounting table3`` and ``deepseek``: the note and DeepSeek's disclosures reproduced
(`accounting.reproduce`), rendered as text."""
from __future__ import annotations

from typing import Any

from .. import api, cost, scaling_cli
from ..formatting import grid, rows_csv, si
from ..reproduce.deepseek import DEEPSEEK_REPORTED
from ..reproduce.note import DOCUMENTED_EXCEPTIONS
from .base import Command, no_arguments, register


def table3_text(data: dict[str, Any]) -> str:
    out = ["Press (2025) Table 3 recomputed from Table 2 (multiply-add = 1 flop; memory in elements; K = 1024 in Table 2)."]
    out.append("use cases: " + "; ".join(f"{k}: n={u['seq_len']} V={u['vocab_size']} d={u['d_model']} "
                                          f"H={u['n_heads']} L={u['n_layers']}" for k, u in data["use_cases"].items()))
    rows = []
    for r in data["rows"]:
        rows.append([r["quantity"], r["case"], r["printed_display"], si(r["computed"]),
                     f"{r['ratio']:.3f}", "yes" if r["rounds_to_printed"] else "no",
                     "ok" if r["within_tolerance"] else "FAIL", si(r["computed_exact_rate"])])
    out.append(grid(["quantity", "case", "printed", "ours", "ours/printed", "rounds", "tolerance",
                      "ours @exact $"], rows))
    out.append(f"GPU-years and $ use the note's rounded {cost.NOTE_USD_PER_MAC_TEXT} per multiply-add; "
               f"'ours @exact $' uses ${data['usd_per_flop_mac_exact']:.4g} ({cost.NOTE_PEAK_MACS_TEXT} "
               f"multiply-adds/s at {cost.NOTE_USD_PER_GPU_YEAR_TEXT} per GPU-year).")
    out.append("Optimal training set size is 240 L d^2 (eq. 4 without 40 V d): with the V term B would be "
               + si(next(r["eq4_with_vocab"] for r in data["rows"] if r["quantity"] == "optimal training set size"
                         and r["case"] == "B")) + ", not the printed 540e9.")
    for key, (tol, why) in DOCUMENTED_EXCEPTIONS.items():
        out.append(f"{key[0]} {key[1]}: {why} (tolerance {tol:.0%}).")
    inf = data["inference_usd_per_million_tokens"]
    out.append("Inference $ per million incremental tokens (note: $1-$2 for D): D low "
               f"${inf['D low']['rounded_rate_usd']:.2f}, D high ${inf['D high']['rounded_rate_usd']:.2f} "
               f"(exact rate ${inf['D low']['exact_rate_usd']:.2f}-${inf['D high']['exact_rate_usd']:.2f}).")
    return "\n".join(out)


register(Command("table3", "the note's Table 3 recomputed beside the printed values", no_arguments,
                 lambda args: api.table3(), table3_text, csv=lambda data: rows_csv(data["rows"])))


def deepseek_text(d: dict[str, Any]) -> str:
    s = d["section6"]
    pr = s["printed"]
    out = [f"Section 6 of the note, recomputed (multiply-add = 1 flop, n = 32K, {cost.NOTE_USD_PER_MAC_TEXT} per flop):",
           grid(["quantity", "note printed", "ours", "comment"], [
               ["12 L d^2 (d=7168, L=61)", si(pr["active_12Ld2_params"]), si(s["active_12Ld2_params"]), "'active' width"],
               ["Chinchilla 671B x 20", si(pr["chinchilla_tokens"]), si(s["chinchilla_tokens"]),
                f"reported 14.8T = x{s['reported_over_chinchilla']:.3f}"],
               ["(6nd+36d^2)L per token", "", si(s["train_flops_mac_per_token"]), "multiply-adds, n = 32768"],
               ["x 14.8T tokens", si(pr["train_flops_mac"]), si(s["train_flops_mac"]),
                f"= {si(s['train_flops_fma2'])} FLOP (2 per MAC)"],
               [f"cost at {cost.NOTE_USD_PER_MAC_TEXT}", "$" + si(pr["cost_usd"]), "$" + si(s["cost_usd_rounded_rate"]),
                f"exact rate: ${si(s['cost_usd_exact_rate'])}"],
               ["GPU-hours", si(pr["gpu_hours"]), si(s["gpu_hours_note_method"]),
                f"= $2.9M / ${s['note_usd_per_gpu_hour']:.2f}/h; exact at {cost.NOTE_PEAK_MACS_TEXT} MAC/s: {si(s['gpu_hours_exact_300T'])}"],
               ["reported (DeepSeek)", f"{si(pr['reported_gpu_hours'])} h, ${si(pr['reported_usd'])}",
                f"{si(s['reported_gpu_hours'])} h, ${si(s['reported_usd'])}",
                f"$ ratio reported/note {s['reported_over_note_usd']:.2f}"]])]
    p = d["deepseek_v3"]["params"]
    e = d["deepseek_v3"]["estimates"]
    out.append("")
    out.append(f"DeepSeek-V3 from accounting/configs/deepseek-v3.json: total {p['total_params']:,} "
               f"({p['total_params'] / 1e9:.2f}B vs 671B), active {p['active_params']:,} ({p['active_params'] / 1e9:.2f}B "
               f"vs '37B'; one input-embedding row), MTP {si(p['mtp_params'])} excluded")
    out.append(grid(["component", "total", "active"],
                     [[k, si(v["total_params"]), si(v["active_params"])] for k, v in p["components"].items()]))
    out.append("")
    out.append(f"Pretraining compute, {si(e['tokens'])} tokens at {e['seq_len']} (MFU vs {si(e['reported_gpu_hours_pretrain'])} "
               f"H800-hours x {si(e['peak_bf16_flops_per_s'])}FLOP/s bf16):")
    rows = [[k, si(v["flops_mac_per_token"]), si(v["flops_fma2_per_token"]), si(v["flops_mac"]), si(v["flops_fma2"]),
             f"{v['implied_mfu_bf16']:.1%}", si(v["h800_hours_at_peak"]), "$" + si(v["cost_usd_h800_at_peak"])]
            for k, v in e["methods"].items()]
    out.append(grid(["method", "MAC/token", "FLOP/token", "MAC total", "FLOP total", "implied MFU",
                      "H800-h at peak", f"$ at ${DEEPSEEK_REPORTED['usd_per_gpu_hour']:g}/h, peak"], rows))
    return "\n".join(out)


register(Command("deepseek", "the note's section 6 and DeepSeek-V3 priced by six methods", no_arguments,
                 lambda args: api.deepseek(),
                 lambda d: deepseek_text(d) + "\n\n" + scaling_cli.deepseek_text(d["scaling"])))
