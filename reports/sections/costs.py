"""Section 3: dense vs MoE training and decode cost against total and active parameters (`reports.costs`)."""
from __future__ import annotations

from accounting.chinchilla import TOKENS_PER_PARAMETER

from .. import costs as cost_table
from .. import figures as plots
from ..context import Context
from ..shipped import CONFIG_DIR, shipped_shapes
from ..tables import markdown, pct, sci, si, usd
from . import Page, Section


def section(ctx: Context) -> Section:
    mfu = ctx.deepseek["mfu"]
    pr = cost_table.price(mfu)
    df = ctx.costs
    if df.empty:
        return Section("Not available: no shapes to price. The note's cases come from `accounting.reproduce.note`, the "
                       f"public MoE configs from `accounting.hf_config` + `accounting/{CONFIG_DIR.name}/*.json`.\n")
    names = sorted(shipped_shapes())
    page = Page(f"Priced on {pr['hardware']} at ${pr['usd_per_hour']:g}/GPU-hour and {pct(mfu)} MFU (DeepSeek-V3's "
                f"implied utilisation, section 2), i.e. {sci(pr['usd_per_flop'])} $/FLOP; training window "
                f"{cost_table.TRAIN_WINDOW} tokens (causal), decode with {cost_table.INFER_CONTEXT} tokens cached. "
                f"Chinchilla tokens = {TOKENS_PER_PARAMETER:g} x parameters. Shapes: {', '.join(df['model'])}.\n")
    rows = [[r.model, r.family, si(r.total_params), si(r.active_params), pct(r.active_fraction),
             si(r.chinchilla_tokens_total), si(r.chinchilla_tokens_active), si(r.train_flops_per_token),
             usd(r.train_usd_total), usd(r.train_usd_active), usd(r.infer_usd_per_mtok)] for r in df.itertuples()]
    x = f"{TOKENS_PER_PARAMETER:g}x"
    page.add(markdown(rows, ["model", "kind", "total", "active", "active/total", f"tokens {x}total",
                             f"tokens {x}active", "train FLOP/token", f"train $ ({x}total)",
                             f"train $ ({x}active)", "decode $/M tokens"], "llrrrrrrrrr"))
    srcs = ", ".join(f"`accounting/configs/{n}.json`" for n in names) or "accounting.reproduce.note Table 2"
    price = f"${pr['usd_per_hour']:g}/GPU-hour ({pr['hardware']}, {pct(mfu)} MFU)"
    page.add("\n" + page.figure(plots.cost_vs_params(df, ctx.figdir, price),
                                "training cost against total (filled) and active (hollow) parameters, joined per "
                                f"MoE, for tokens = {TOKENS_PER_PARAMETER:g} x total (left) and x active (right) "
                                f"parameters, at {price} (log-log); data: {srcs}, accounting.flops/params"))
    page.add(page.figure(plots.inference_cost(df, ctx.figdir),
                         f"decode cost per million tokens against active and total parameters; data: {srcs}"))
    if not len(names):
        page.add("Public MoE configs missing: they come from `accounting.hf_config` and "
                 f"`accounting/{CONFIG_DIR.name}/*.json`.")
    return page.section()
