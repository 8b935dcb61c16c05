"""Section 2: DeepSeek-V3 from the note's estimate to the reported cost, as a chain of computed factors, and
the pretraining compute by six methods (`reports.deepseek`, `accounting.reproduce`)."""
from __future__ import annotations

from accounting import cost as accounting_cost
from accounting.chinchilla import TOKENS_PER_PARAMETER

from .. import deepseek as deepseek_costs
from .. import figures as plots
from ..context import Context
from ..tables import markdown, pct, ratio, sci, si, usd
from . import Page, Section


def section(ctx: Context) -> Section:
    c = ctx.deepseek
    page = Page()
    _note_part(page, c)
    reported_label = _corrections_part(page, c)
    _methods_part(page, c)
    page.add("\n" + page.figure(plots.waterfall(c["steps"], c["reported_usd"], ctx.figdir, f"reported ({reported_label})"),
                                "the note's DeepSeek-V3 cost corrected step by step; data: accounting.reproduce "
                                "(note_section6.section6, deepseek.DEEPSEEK_REPORTED, deepseek.deepseek_v3_estimates), accounting.flops/params/cost/hardware, "
                                f"`accounting/{c['config'].parent.name}/{c['config'].name}`"))
    return page.section()


def _note_part(page: Page, c: dict) -> None:
    """The note's estimate, reproduced: printed beside recomputed."""
    n, pr = c["note"], c["note"]["printed"]
    page.values.update(deepseek_note_macs=n["train_flops_mac"], deepseek_note_usd=n["cost_usd_rounded_rate"],
                       deepseek_note_gpu_hours=n["gpu_hours_note_method"],
                       deepseek_gpu_hours_from_unrounded_usd=n["gpu_hours_from_unrounded_usd"],
                       deepseek_gpu_hours_exact=n["gpu_hours_exact_300T"],
                       deepseek_mfu=c["mfu"], deepseek_flops=c["flops"])
    rate = f"${n['note_usd_per_gpu_hour']:.3g}/h"
    rows = [["active parameters (12 L d²)", si(pr["active_12Ld2_params"]), si(n["active_12Ld2_params"])],
            ["total parameters (shipped config)", si(n["total_params"]), si(c["total_params"])],
            [f"Chinchilla tokens ({TOKENS_PER_PARAMETER} x total)", si(pr["chinchilla_tokens"]),
             si(n["chinchilla_tokens"])],
            ["training tokens used (DeepSeek's)", si(n["reported_tokens"]),
             f"{si(n['reported_tokens'])} = {n['reported_over_chinchilla']:.3f}x Chinchilla"],
            ["multiply-adds per token, (6nd+36d²)L", "-", si(n["train_flops_mac_per_token"])],
            [f"training flops (multiply-adds, n = {n['train_seq_len'] // 1024}K)", sci(pr["train_flops_mac"], 2),
             sci(n["train_flops_mac"])],
            [f"GPU-hours, the note's method (printed {usd(pr['cost_usd'])} / {rate})", si(pr["gpu_hours"]),
             si(n["gpu_hours_note_method"])],
            [f"GPU-hours from the recomputed {usd(n['cost_usd_rounded_rate'])} / {rate}", "-",
             si(n["gpu_hours_from_unrounded_usd"])],
            [f"GPU-hours, exact at {accounting_cost.NOTE_PEAK_MACS_TEXT} multiply-adds/s", "-", si(n["gpu_hours_exact_300T"])],
            [f"dollars ({accounting_cost.NOTE_USD_PER_MAC_TEXT} per flop)", usd(pr["cost_usd"]), usd(n["cost_usd_rounded_rate"])],
            ["dollars (unrounded $1.056e-18)", "-", usd(n["cost_usd_exact_rate"])],
            ["reported GPU-hours / dollars", f"{si(pr['reported_gpu_hours'])} / {usd(pr['reported_usd'])}",
             f"{si(n['reported_gpu_hours'])} / {usd(n['reported_usd'])} "
             f"({n['reported_over_note_usd']:.2f}x the note's $)"]]
    page.add("### The note's estimate, reproduced",
             "Printed values: `accounting.reproduce.note_section6.SECTION6_PRINTED`; recomputed by `accounting.reproduce.note_section6.section6()` "
             f"with the note's formula `(6 n d + 36 d²) L` per token (d = {n['d_model']}, L = {n['n_layers']}, "
             f"n = {n['train_seq_len']}), its rounded {accounting_cost.NOTE_USD_PER_MAC_TEXT} per multiply-add and its GPU ({rate}, "
             "`accounting.cost.NOTE_GPU`); reported figures: `accounting.reproduce.deepseek.DEEPSEEK_REPORTED`.\n",
             markdown(rows, ["quantity", "printed in the note", "recomputed"], "lrr"),
             "\n### Corrections, each a computed factor")


def _corrections_part(page: Page, c: dict) -> str:
    """The chain of factors, the exact-architecture FLOP and the implied MFU; returns the reported bar's label."""
    est = c["estimates"]
    rows = [[s.label, ratio(s.factor, 4), usd(s.usd), s.why] for s in c["steps"]]
    reported_label = (f"{si(c['reported_gpu_hours'])} H800-hours x ${deepseek_costs.REPORTED['usd_per_gpu_hour']:g}")
    rows.append(["reported by DeepSeek", "", usd(c["reported_usd"]), reported_label])
    page.add(markdown(rows, ["step", "factor", "cost after step", "why"], "lrrl"))
    page.values.update(deepseek_total_params=c["total_params"], deepseek_active_params=c["active_params"],
                       deepseek_exact_flops_per_token=c["exact_flops_per_token"])
    page.add(f"\nFrom the shipped config (`accounting.reproduce.deepseek.deepseek_v3_estimates`, FLOP = 2 per multiply-add, "
             f"causal attention, window {c['n_pretrain']}): total {si(c['total_params'])} and active "
             f"{si(c['active_params'])} parameters (active counts one embedding row and the output head; MTP "
             f"module {si(c['mtp_params'])} extra), **{si(c['exact_flops_per_token'])} FLOP per trained token** "
             f"without the MTP module ({si(c['exact_mtp_flops_per_token'])} with it); DeepSeek reports "
             f"{si(c['reported_flops_per_token'])}. 6 x {si(est['published_active_params'])} x "
             f"{si(est['tokens'])} = {sci(c['six_n_d'])} FLOP; the note's count in FLOP is {sci(c['note_flop'])}.")
    page.add(f"\n**Implied utilisation** (MFU, model FLOP utilisation = the FLOP the model needs / (GPU-hours "
             f"x 3600 x peak FLOP/s)): {sci(c['flops'])} FLOP over {si(c['reported_gpu_hours_pretrain'])} "
             f"pretraining H800-hours is **{pct(c['mfu'])} MFU** of the {si(c['peak'])}FLOP/s bf16 peak "
             f"({pct(c['mfu_no_mtp'])} without the MTP module; {pct(c['mfu_fp8'])} of the FP8 peak).")
    return reported_label


def _methods_part(page: Page, c: dict) -> None:
    """Pretraining compute by method, with the MFU each implies."""
    est = c["estimates"]
    labels = {"note_formula_n32768": "the note's (6nd+36d²)L, n = 32K",
              f"note_formula_n{c['n_pretrain']}": f"the note's formula at n = {c['n_pretrain']}",
              "six_n_active_d": f"6 N_active D ({si(c['active_params'])})",
              "six_n_active_d_published_37b": f"6 N_active D (published {si(est['published_active_params'])})",
              f"exact_causal_n{c['n_pretrain']}": "exact: MLA + MoE + dense layers + head, causal",
              f"exact_causal_n{c['n_pretrain']}_with_mtp": "exact + MTP module"}
    rows = [[labels.get(k, k), si(v["flops_mac_per_token"]), si(v["flops_fma2_per_token"]), sci(v["flops_fma2"]),
             pct(v["implied_mfu_bf16"]), usd(v["cost_usd_h800_at_peak"])] for k, v in est["methods"].items()]
    page.add(f"\nPretraining compute by method ({si(est['tokens'])} tokens; MFU against the reported "
             f"{si(c['reported_gpu_hours_pretrain'])} pretraining H800-hours; `accounting.reproduce.deepseek.deepseek_v3_estimates`):\n")
    page.add(markdown(rows, ["method", "MAC/token", "FLOP/token", "FLOP total", "implied MFU",
                             "$ on H800 at peak"], "lrrrrr"))
