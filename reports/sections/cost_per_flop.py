"""Section 5: measured MoE/dense cost per FLOP, c, from the paired benchmarks (dollars drawn only from
conclusive ones), with the unpaired MFU ratios of training runs and bench CSVs as context."""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from experiments.bench.paired import BASELINES, baseline_of

from .. import costs as cost_table
from .. import figures as plots
from ..context import Context
from ..measured import mfu_ratio_bench, mfu_ratio_runs
from ..tables import markdown, pct, ratio, sci, usd
from . import Page, Section, env_line, is_gpu

PAIRED_CMD = ("`python -m experiments.bench.paired --models dense moe deepseek deepseek_mla --repeats 1000 "
              "--out reports/data/paired_cpu` (CPU; `--device cuda --size small --threads 0 "
              "--out reports/data/paired_h100` on a GPU)")
PAIRED_GPU_CMD = ("`python -m experiments.bench.paired --device cuda --size small --threads 0 "
                  "--out reports/data/paired_h100` on a GPU")
DEFINITION = (
    "The note prices every FLOP alike, but an MoE step need not run at a dense step's efficiency. "
    "Let **c = (time per FLOP of an MoE training step) / (time per FLOP of a dense one)**, the "
    "MoE/dense cost per FLOP (1/c is the MoE/dense MFU ratio). c is measured by a dedicated paired "
    "benchmark: dense and MoE training steps interleaved in one process, so that the load of a "
    "shared machine hits both alike, many repeats, the median per-repeat ratio with a 95% "
    "bootstrap interval. Each model is the demo's configuration of the same name (`conf/model/`): `moe` differs from "
    "`dense` only in its FFN (8 experts, top-2, equal active parameters), so its c prices routing; "
    "`deepseek` also changes FFN kind and norms, and `deepseek_mla` the attention too, so their c "
    "prices the whole architecture against dense, not routing alone.\n")


def section(ctx: Context) -> Section:
    rb = mfu_ratio_bench(ctx.bench_mfu)
    page = Page()
    _paired_part(page, ctx)
    _unpaired_part(page, ctx, rb)
    if not ctx.paired and ctx.summary.empty and rb.empty:
        return Section(f"No measurements to compare yet: the MoE/dense cost per FLOP needs a paired benchmark "
                       f"({PAIRED_CMD}).\n")
    return page.section()


def _paired_part(page: Page, ctx: Context) -> None:
    """The paired benchmarks' c = MoE/dense cost per FLOP, with dollars drawn only from conclusive ones."""
    c = ctx.deepseek
    est = c["flops"] * cost_table.price(1.0)["usd_per_flop"] / c["mfu"]  # the corrected accounting at dense efficiency
    page.add(DEFINITION)
    if not ctx.col.paired:
        page.add(f"No paired benchmark under {', '.join(ctx.col.roots)}. Produce one with {PAIRED_CMD}.\n")
    for pb in ctx.col.paired:
        _one_benchmark(page, ctx, pb, est)
    if ctx.paired:
        head = ctx.paired[0]
        page.values.update(paired_cost_ratio=head["cost_ratio_median"], paired_cost_ratio_low=head["cost_ratio_low"],
                           paired_cost_ratio_high=head["cost_ratio_high"])
        page.add(f"Headline c: {head['model']} vs {head['dense']} from `{head['source']}`, "
                 + ("compiled (torch.compile, the cost without eager-mode overhead); " if head["compiled"] else
                    "eager (no compiled benchmark found); ")
                 + "the key findings lead with it.\n")
        page.add(f"Reading the table: (a) DeepSeek's reported {usd(c['reported_usd'])} would have been "
                 f"{usd(c['reported_usd'])} / c had the same FLOP run at dense efficiency; (b) the corrected "
                 f"accounting of section 2, which assumes DeepSeek's implied {pct(c['mfu'])} MFU for every FLOP "
                 f"({usd(est)} for {sci(c['flops'])} pretraining FLOP), becomes {usd(est)} x c for an MoE whose "
                 "FLOP cost c times a dense FLOP. An interval wider than "
                 f"{100 * ctx.conclusive_width:.0f}% of its median is called too wide to conclude "
                 "and no dollar figure is drawn from it. The interval covers the noise within one run; on a "
                 "machine shared with other jobs the ratio also moves with the load (MoE steps, made of more "
                 "and smaller operations, suffer more from contention), so a run at another time can land "
                 "outside it: rerun `make paired` to see how far.")
        if not any(is_gpu(p["device"]) for p in ctx.paired):
            page.add("\n**These ratios come from tiny models on a CPU.** They measure this code on this "
                     "machine, not DeepSeek's H800 cluster, where expert parallelism, all-to-all communication "
                     "and kernel efficiency set c; apply them to DeepSeek's dollars only as an illustration. "
                     f"A GPU measurement comes from {PAIRED_GPU_CMD}.")


def _one_benchmark(page: Page, ctx: Context, pb: dict, est: float) -> None:
    """One paired benchmark: its setting, a row per MoE model and the per-repeat figure."""
    c = ctx.deepseek
    summ_p, env, src = pb["summary"], pb["env"], pb["source"]
    load = ""
    if summ_p.get("loadavg_1min_start") is not None:
        load = (f"; 1-minute load average {summ_p['loadavg_1min_start']} at the start, "
                f"{summ_p.get('loadavg_1min_end')} at the end")
    page.add(f"**{src}** ({env_line(env)}; {summ_p['repeats']} interleaved repeats after "
             f"{summ_p['warmup']} warm-up, experiment `{summ_p['experiment']}`, size `{summ_p['size']}`"
             f"{load}; interval: {summ_p.get('interval', 'bootstrap of the median')}):\n")
    rows = []
    for m, v in summ_p["models"].items():
        if m in BASELINES:
            continue
        conclusive = not str(v["verdict"]).startswith("too wide")
        rows.append([m if baseline_of(m) == "dense" else f"{m} (vs {baseline_of(m)})", v.get("backend", ""), f"{v['cost_ratio_median']:.3f}",
                     f"[{v['cost_ratio_low']:.3f}, {v['cost_ratio_high']:.3f}]",
                     f"{1 / v['cost_ratio_median']:.3f}", v["verdict"],
                     usd(c["reported_usd"] / v["cost_ratio_median"]) if conclusive else "not drawn",
                     (f"{usd(est * v['cost_ratio_median'])} [{usd(est * v['cost_ratio_low'])}, "
                      f"{usd(est * v['cost_ratio_high'])}]") if conclusive else "not drawn"])
    page.add(markdown(rows, ["MoE model (vs dense)", "backend", "c, median", "95% interval",
                             "MFU ratio 1/c", "verdict", "reported $ / c", "estimate x c [interval]"],
                      "llrrrlrr"))
    try:
        raw = pd.read_csv(Path(src) / "paired.csv")
    except (OSError, ValueError):
        raw = pd.DataFrame()
    name = "paired_cost_ratio_" + Path(src).name
    page.add("\n" + page.figure(plots.paired_ratio(raw, summ_p, ctx.figdir, name,
                                                   f"MoE / dense cost per FLOP, paired repeats ({Path(src).name})"),
                                f"per-repeat MoE/dense time per training FLOP with the median and its 95% "
                                f"bootstrap interval; data: `{src}/paired.csv`, `{src}/summary.json`, "
                                f"`{src}/env.json`"))


def _unpaired_part(page: Page, ctx: Context, rb: pd.DataFrame) -> None:
    """Training runs' and bench CSVs' MFU ratios: context only."""
    summ = ctx.summary
    rr = mfu_ratio_runs(summ)
    if not summ.empty:
        page.add("\n### Unpaired measurements (context only, not used for dollars)")
        page.add("Each training run's MFU is its own median over logged steps, measured at a different time "
                 "from the others on a machine shared with other jobs, and each configuration ran once; the "
                 "ratios below move with the machine's load, so they are shown for context only. The spread "
                 "of MFU over each run's own logged steps (10th to 90th percentile) shows how much:\n")
        spread = ctx.col.metrics.groupby("run")["mfu"].quantile([0.1, 0.5, 0.9]).unstack()
        page.add(markdown([[r, pct(v[0.1]), pct(v[0.5]), pct(v[0.9]), ratio(v[0.9] / v[0.1])]
                           for r, v in spread.iterrows()],
                          ["run", "MFU p10", "median", "p90", "p90 / p10"], "lrrrr") + "\n")
        page.add(page.figure(plots.mfu_by_family(summ, ctx.figdir),
                             "median MFU per training run; data: " + ", ".join(f"`{p}/metrics.jsonl`"
                                                                             for p in ctx.col.run_paths)))
    if not rr.empty:
        page.add(markdown([[r.device_name, r.size, r.moe_run, pct(r.dense_mfu), pct(r.moe_mfu), ratio(r.ratio)]
                           for r in rr.itertuples()],
                          ["device", "size", "MoE run", "dense MFU", "MoE MFU", "MoE / dense MFU"], "llllrr"))
        page.values["mfu_ratio_training runs"] = float(rr["ratio"].median())
    if not rb.empty:
        page.add("\nBench CSVs, per CSV (never pooled), kind and backend: median over shapes of MoE TFLOP/s / "
                 "dense TFLOP/s at the same top-k and tokens (each a median of a few timed calls, dense and MoE "
                 "timed one after the other, not interleaved):\n")
        page.add(markdown([[r.source, r.kind, r.backend, r.shapes, ratio(r.median_ratio),
                            f"{r.min_ratio:.3g}-{r.max_ratio:.3g}", r.device_name] for r in rb.itertuples()],
                          ["csv", "kind", "backend", "shapes", "median MoE/dense TFLOP/s", "range", "device"],
                          "lllrrrl"))
        best = rb[rb["kind"] == "model"] if (rb["kind"] == "model").any() else rb
        page.values["mfu_ratio_bench, best backend"] = float(best.groupby("backend")["median_ratio"].median().max())

