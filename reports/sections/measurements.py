"""Section 4, after the training runs: throughput per backend (bench CSVs), one MoE layer against a dense FFN
(`reports.moe_layer`), the accounting against FlopCounterMode (`reports.flopcheck`), and decode vs recompute."""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from .. import figures as plots
from .. import flopcheck
from .. import moe_layer
from ..context import Context
from ..tables import markdown, pct, sci
from . import Page, Section, is_gpu
from .runs import training_runs

BENCH_CMD = ("`python -m experiments.bench --out reports/data/bench_cpu.csv` (CPU) or "
             "`python -m experiments.bench --grid gpu --out reports/data/bench_h100.csv` (GPU)")
BENCH_GPU_CMD = "`python -m experiments.bench --grid gpu --out reports/data/bench_h100.csv` on a GPU"
MOE_LAYER_CMD = ("`python -m experiments.bench.moe_layer --out reports/data/moe_layer_cpu.csv` "
                 "(add `--device cuda --out reports/data/moe_layer_h100.csv` on a GPU)")
MOE_LAYER_SETUP = (
    "forward + backward of one layer on {tokens} tokens, d_model {d_model}, SwiGLU experts; `fine` = "
    "E=64, k=8, d_expert=256 (DeepSeek-style), `coarse` = E=8, k=2, d_expert=1024 "
    "(Mixtral-style). Each cell is the median over rounds of the per-round time ratio "
    "ours_grouped / other (every contender runs once per round, in turn), [quartiles]; "
    "‡ marks an interquartile range over {wide} of the median (too noisy to "
    "conclude). The dense FFN has width k x d_expert (same active parameters and matmul FLOP; "
    "the MoE layer adds its router's 2 E d per token); the floors are the same nine products as "
    "plain matmuls on preallocated operands, once as one dense GEMM each (dense GEMM floor), "
    "once as one GEMM per expert with the run's routing counts (per-expert GEMM floor). "
    "torchtitan's experts compute in bf16 whatever the input dtype, so its fp32 rows set our fp32 "
    "against its bf16. `load` is the 1-minute load average when the configuration started "
    "(it counts the bench's own threads).\n")


def section(ctx: Context) -> Section:
    """The whole of section 4: training runs, throughput, the MoE layer, the FLOP check, decode."""
    page = Page()
    for part in (training_runs, bench_throughput, moe_layer_part, flop_check, decode):
        page.add(page.include(part(ctx)))
    return page.section()


def bench_throughput(ctx: Context) -> Section:
    col = ctx.col
    page = Page("\n### Throughput and MFU per backend (bench CSVs)")
    bm = ctx.bench_mfu
    if bm.empty:
        page.add(f"No bench CSV under {', '.join(col.roots)}. Produce one with {BENCH_CMD}.\n")
        return page.section()
    srcs = ", ".join(f"`{s}`" for s in col.bench_paths)
    rows = [[r.source, r.kind, r.backend, int(r.n_experts or 0), int(r.top_k or 0), int(r.tokens),
             f"{r.median_s * 1e3:.3g}", f"{r.tflops_per_s:.3g}", pct(r.mfu_vs_matmul), r.device_name]
            for r in bm.itertuples()]
    page.add(markdown(rows, ["csv", "kind", "backend", "E", "k", "tokens", "ms", "TFLOP/s",
                             "MFU vs matmul peak", "device"], "lllrrrrrrl"))
    errs = col.bench[col.bench["note"].str.startswith("error")] if "note" in col.bench else pd.DataFrame()
    if not errs.empty:
        page.add("\nRows that failed: " + "; ".join(f"{r.kind}/{r.backend}: {r.note}" for r in errs.itertuples()))
    if len(col.bench_paths) > 1:
        page.add(f"\n{len(col.bench_paths)} bench CSVs ({srcs}) are shown side by side, never pooled: "
                 "each table row, figure panel and line names its CSV.")
    page.add("\n" + page.figure(plots.throughput(col.bench, ctx.figdir),
                                "achieved TFLOP/s per backend (accounting FLOP / median time), one panel per "
                                f"CSV and kind; MFU vs matmul peak in the table above; data: {srcs}"))
    if not any(is_gpu(d) for d in col.bench.get("device_name", [])):
        page.add(f"These are CPU numbers; GPU numbers come from {BENCH_GPU_CMD}.")
    return page.section()


def moe_layer_part(ctx: Context) -> Section:
    page = Page("\n### One MoE layer against a dense FFN of equal active FLOP (`experiments.bench.moe_layer`)")
    shown, older = ctx.moe_layer, ctx.moe_layer_older
    if shown.empty:
        page.add(f"No MoE-layer CSV under {', '.join(ctx.col.roots)}. Produce one with {MOE_LAYER_CMD}.")
        return page.section()
    for source, df in shown.groupby("source", sort=False):
        first = df.iloc[0]
        page.add(f"\n`{source}` ({first['device_name']}, torch {first['torch']}, commit "
                 f"{str(first['git_commit'])[:7]}): "
                 + MOE_LAYER_SETUP.format(tokens=int(first["tokens"]), d_model=int(first["d_model"]),
                                          wide=f"{moe_layer.WIDE:.0%}"))
        text, _ = moe_layer.table(df)
        page.add(text, "\n" + "\n".join(moe_layer.goal_lines(df)))
        compiled = moe_layer.compiled_table(df)
        if compiled is not None:
            page.add("\nThe same layer through `torch.compile` (`--compile`; its experts run the eager "
                     "layer's kernels as two custom ops, `moe.compiled_ops`), per-round time ratios:\n", compiled)
        r = moe_layer.ratios(df)
        tag = Path(source).stem.removeprefix("moe_layer_")
        drawn = plots.moe_layer_ratios(r, ctx.figdir, moe_layer.GOAL, moe_layer.labels(r["vs"].unique()),
                                       name=f"moe_layer_ratios_{tag}")
        page.add("\n" + page.figure(drawn, "our grouped MoE layer's time over the same FLOP done otherwise; "
                                           f"data: `{source}`"))
    if not older.empty:
        page.add("Earlier MoE-layer runs (not shown): " + "; ".join(
            f"`{r.source}` (commit {str(r.commit)[:7]}, load {r.load_lo:.1f}-{r.load_hi:.1f})"
            for r in older.itertuples()) + ".")
    return page.section()


def flop_check(ctx: Context) -> Section:  # noqa: ARG001  (every part reads the context; this one a CSV)
    page = Page("\n### Accounting vs FlopCounterMode (`reports/flopcheck.csv`, held equal to a live count by the tests)")
    fc, msg = flopcheck.read()
    if fc.empty:
        page.add(f"Not computed: {msg or 'no shapes could be built'}.")
        return page.section()
    page.values["flopcheck_rows"] = len(fc)
    page.add(markdown([[r.shape, r.tokens, sci(r.accounting_flops, 6), sci(r.flopcounter_flops, 6),
                        f"{r.ratio:.6f}"] for r in fc.itertuples()],
                      ["shape", "tokens", "accounting FLOP", "FlopCounterMode FLOP", "ratio"], "lrrrr"))
    if msg:
        page.add(f"\nNot built: {msg}.")
    return page.section()


def decode(ctx: Context) -> Section:
    col = ctx.col
    page = Page("\n### Incremental decode vs full recompute")
    dec = col.bench[col.bench["kind"].isin(["decode", "recompute"])] if not col.bench.empty else pd.DataFrame()
    dec = dec[dec["median_s"].notna()] if not dec.empty else dec
    if dec.empty:
        page.add(f"No decode rows in the bench CSVs. Produce them with {BENCH_CMD} (needs "
                 "`experiments.decode_timing.time_decode`).")
    else:
        page.add(page.figure(plots.decode(dec, ctx.figdir), "time per generated token, KV-cache decode vs full "
                             f"recompute; data: {', '.join(f'`{s}`' for s in sorted(dec['source'].unique()))}"))
    return page.section()
