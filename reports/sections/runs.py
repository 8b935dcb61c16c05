"""Section 4, first part: the selected training runs, their loss curves, router load and MaxVio."""
from __future__ import annotations

from .. import figures as plots
from ..context import Context
from ..tables import markdown, pct, sci, si, swept_cells, swept_columns
from . import Page, Section

TRAIN_CMD = "`python -m experiments.train -m experiment=demo` (CPU) or `experiment=equal_flops` (GPU)"
DEFINITIONS = (
    "Router statistics, per MoE layer and logged step, from the tokens each expert received (`moe.router`): "
    "the **load** of expert i is its share of the (token, expert) assignments; **MaxVio** = max load / mean "
    "load - 1 (0 when perfectly balanced; 1 means the busiest expert gets twice its fair share); **CV** = "
    "standard deviation / mean of the loads (0 when balanced). **MFU** = achieved FLOP/s (accounting FLOP of "
    "the step / its wall time) / peak FLOP/s (datasheet on a GPU, the best measured 1024³ fp32 matmul on a CPU).")


def _count(x) -> str:
    """An integer count with thousands separators; '-' when unknown."""
    try:
        return f"{int(x):,}"
    except (TypeError, ValueError):
        return "-"


def training_runs(ctx: Context) -> Section:
    col, summ = ctx.col, ctx.summary
    page = Page("### Training runs")
    if summ.empty:
        page.add(f"No run folders under {', '.join(col.roots)}. Produce them with {TRAIN_CMD}.\n")
        return page.section()
    swept = swept_columns(col.runs)  # a -m sweep's keys, one column each
    rows = [[r.run, *swept_cells(col.runs, r.run, swept), r.family, r.balancing, r.attention,
             _count(r.parameters_total), _count(r.parameters_active), _count(r.kv_cache_per_token), r.device_name,
             r.steps, si(r.tokens), sci(r.train_flops), f"{r.final_train_loss:.3f}", f"{r.final_val_loss:.3f}",
             pct(r.mfu), si(r.tokens_per_s)]
            for r in summ.itertuples()]
    page.add(markdown(rows, ["run", *swept, "family", "balancing", "attention", "params total",
                             "params active", "KV cache / token", "device", "steps", "tokens", "train FLOP",
                             "train loss", "val loss", "MFU", "tokens/s"],
                      "l" + "r" * len(swept) + "lllrrrlrrrrrrr"))
    page.add("Parameters and the decode cache per token (elements, all layers: 2 L KV hd for MHA/GQA, "
             "L (kv_lora_rank + rope) for MLA) are `accounting`'s counts for the run's shape.\n")
    paths = ", ".join(f"`{p}/metrics.jsonl`" for p in col.run_paths)
    page.add("\n" + page.figure(plots.loss_curves(col.metrics, ctx.figdir),
                                "loss against tokens and training FLOP (accounting, 2 per multiply-add), one colour "
                                "per model and size; line: mean over seeds, band: min to max where there are "
                                f"several; data: {paths}"))
    seeds = sorted({str(x) for x in col.runs.get("seed", [])})
    per_cfg = (col.runs.assign(swept_as_text=col.runs["swept"].astype(str) if "swept" in col.runs else "")
               .groupby(["experiment", "family", "size", "swept_as_text"]).size()
               if "experiment" in col.runs else None)
    if per_cfg is not None and int(per_cfg.max()) == 1:
        page.add(f"**Each configuration was trained once (seed {', '.join(seeds)}).** Differences between "
                 "these runs are single-seed comparisons: a loss gap of a few hundredths of a nat may be "
                 "within seed-to-seed variation, which these runs do not measure.\n")
    if col.router_load.empty:
        page.add(f"No MoE router statistics in these runs; an MoE run ({TRAIN_CMD}) logs them.")
    else:
        _router_part(page, ctx)
    return page.section()


def _router_part(page: Page, ctx: Context) -> None:
    """Router load per expert and step, and MaxVio / CV at the last step."""
    col = ctx.col
    page.add(DEFINITIONS + "\n")
    moe_runs = sorted(col.router_load["run"].unique())
    mp = ", ".join(f"`{col.runs[col.runs['run'] == r]['path'].iloc[0]}/metrics.jsonl`" for r in moe_runs)
    page.add(page.figure(plots.router_heatmap(col.router_load, ctx.figdir, moe_runs),
                         "router load per expert and step, one panel per MoE run and MoE layer, one colour "
                         f"scale for all panels; data: {mp}"))
    lay = col.router_layer.groupby("run").apply(
        lambda g: g[g["step"] == g["step"].max()][["max_vio", "cv"]].mean(), include_groups=False)
    rows = [[r, col.runs[col.runs["run"] == r]["balancing"].iloc[0], f"{v.max_vio:.3f}", f"{v.cv:.3f}"]
            for r, v in lay.iterrows()]
    page.add(markdown(rows, ["run", "balancing", "MaxVio, last step", "CV, last step"], "llrr"))
    page.add("(means over MoE layers at the last logged step)\n")
    page.add(page.figure(plots.maxvio(col.router_layer, ctx.figdir),
                         f"MaxVio over training per balancing method; data: {mp}"))
