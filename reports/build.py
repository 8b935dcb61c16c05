"""Assemble REPORT.md: collect runs and CSVs, recompute the accounting, draw the figures, write markdown.

Every number comes from code (accounting, including the note's printed values and DeepSeek's reported
figures in ``accounting.reproduce.note``; the live FlopCounter check) or a file (run folders, bench CSVs); every
figure's caption names the files it was drawn from.
"""
from __future__ import annotations

import time
from pathlib import Path

import pandas as pd

from accounting import cost as accounting_cost
from accounting.reproduce import deepseek as deepseek_reproduction
from accounting.chinchilla import TOKENS_PER_PARAMETER
from accounting.hardware import HARDWARE

from . import costs as cost_table
from . import deepseek as deepseek_costs
from . import figures as plots
from . import scaling as scaling_section
from . import serving as serving_section
from .collect import Collected, collect
from . import flopcheck
from . import moe_layer
from . import training_memory as training_memory_section
from .measured import bench_mfu, mfu_ratio_bench, mfu_ratio_runs, run_summary
from .shipped import CONFIG_DIR, shipped_shapes
from .table3 import table3
from .tables import markdown, pct, ratio, sci, si, swept_cells, swept_columns, usd

SECTIONS = ("1. The note's Table 3, recomputed", "2. DeepSeek-V3: the note's estimate and its corrections",
            "3. Dense vs MoE cost", "4. Measured", "5. Measured cost per flop")
TRAIN_CMD = "`python -m experiments.train -m experiment=demo` (CPU) or `experiment=equal_flops` (GPU)"
BENCH_CMD = ("`python -m experiments.bench --out reports/data/bench_cpu.csv` (CPU) or "
             "`python -m experiments.bench --grid gpu --out reports/data/bench_h100.csv` (GPU)")
BENCH_GPU_CMD = "`python -m experiments.bench --grid gpu --out reports/data/bench_h100.csv` on a GPU"
PAIRED_CMD = ("`python -m experiments.bench.paired --models dense moe deepseek deepseek_mla --repeats 1000 "
              "--out reports/data/paired_cpu` (CPU; `--device cuda --size small --threads 0 "
              "--out reports/data/paired_h100` on a GPU)")
MOE_LAYER_CMD = ("`PYTHONPATH=. python scripts/moe_layer_against_commit.py --grouped-from 66dcf62 --out reports/data/moe_layer_cpu.csv` "
                 "(add `--device cuda --out reports/data/moe_layer_h100.csv` on a GPU)")
PAIRED_GPU_CMD = ("`python -m experiments.bench.paired --device cuda --size small --threads 0 "
                  "--out reports/data/paired_h100` on a GPU")
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


class Report:
    def __init__(self, col: Collected, out: Path):
        self.col, self.out, self.figdir = col, out, out / "figures"
        self.figures: list[Path] = []
        self.values: dict[str, float] = {}  # numbers the report prints, for tests
        # Computed once, before any section renders: sections and findings only read these.
        self.deepseek = deepseek_costs.corrections()
        self.costs = cost_table.cost_table(self.deepseek["mfu"])
        self.summary = run_summary(col)
        self.bench_mfu = bench_mfu(col.bench)
        self.paired = _paired_rows(col.paired)
        self.moe_layer, self.moe_layer_older = moe_layer.newest_per_device(col.moe_layer)

    def fig(self, path: Path | None, caption: str) -> str:
        if path is None:
            return ""
        self.figures.append(path)
        return f"![{caption}](figures/{path.name})\n\n*Figure: {caption}*\n"

    # ----- 1 -----------------------------------------------------------------------------------------
    def section1(self) -> str:
        df, msg = table3()
        if df.empty:
            return f"Not available: {msg}.\n"
        self.values["table3_cells"] = len(df)
        rows = [[r.quantity, r.case, si(r.printed), si(r.computed), ratio(r.ratio)] for r in df.itertuples()]
        text = [markdown(rows, ["quantity", "case", "printed", "recomputed", "ratio"], "llrrr")]
        diffs = df[df["differs"]]
        self.values["table3_differs"] = len(diffs)
        text.append(f"\n{len(diffs)} of {len(df)} cells differ from the printed value by more than its rounding "
                    "(half a unit in the last printed digit):\n")
        for r in diffs.itertuples():
            why = r.note
            text.append(f"- **{r.quantity}, case {r.case}**: printed {si(r.printed)}, recomputed {si(r.computed)} "
                        f"({ratio(r.ratio)}, {100 * (r.ratio - 1):+.1f}%). {why}".rstrip())
        text.append("\n" + self.fig(plots.table3_ratios(df, self.figdir),
                                    "recomputed / printed for each cell of Table 3; data: accounting.reproduce.note "
                                    "(printed values and formulas)"))
        return "\n".join(text)

    # ----- 2 -----------------------------------------------------------------------------------------
    def section2(self) -> str:
        c = self.deepseek
        n, est, pr = c["note"], c["estimates"], c["note"]["printed"]
        self.values.update(deepseek_note_macs=n["train_flops_mac"], deepseek_note_usd=n["cost_usd_rounded_rate"],
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
        out = ["### The note's estimate, reproduced",
               "Printed values: `accounting.reproduce.note_section6.SECTION6_PRINTED`; recomputed by "
               "`accounting.reproduce.note_section6.section6()` "
               f"with the note's formula `(6 n d + 36 d²) L` per token (d = {n['d_model']}, L = {n['n_layers']}, "
               f"n = {n['train_seq_len']}), its rounded {accounting_cost.NOTE_USD_PER_MAC_TEXT} per multiply-add and its GPU ({rate}, "
               "`accounting.cost.NOTE_GPU`); reported figures: `accounting.reproduce.deepseek.DEEPSEEK_REPORTED`.\n",
               markdown(rows, ["quantity", "printed in the note", "recomputed"], "lrr"),
               "\n### Corrections, each a computed factor"]
        rows = [[s.label, ratio(s.factor, 4), usd(s.usd), s.why] for s in c["steps"]]
        reported_label = (f"{si(c['reported_gpu_hours'])} H800-hours x ${deepseek_costs.REPORTED['usd_per_gpu_hour']:g}")
        rows.append(["reported by DeepSeek", "", usd(c["reported_usd"]), reported_label])
        out.append(markdown(rows, ["step", "factor", "cost after step", "why"], "lrrl"))
        self.values.update(deepseek_total_params=c["total_params"], deepseek_active_params=c["active_params"],
                           deepseek_exact_flops_per_token=c["exact_flops_per_token"])
        out.append("\nFrom the shipped config (`accounting.reproduce.deepseek.deepseek_v3_estimates`, "
                   "FLOP = 2 per multiply-add, "
                   f"causal attention, window {c['n_pretrain']}): total {si(c['total_params'])} and active "
                   f"{si(c['active_params'])} parameters (active counts one embedding row and the output head; MTP "
                   f"module {si(c['mtp_params'])} extra), **{si(c['exact_flops_per_token'])} FLOP per trained token** "
                   f"without the MTP module ({si(c['exact_mtp_flops_per_token'])} with it); DeepSeek reports "
                   f"{si(c['reported_flops_per_token'])}. 6 x {si(est['published_active_params'])} x "
                   f"{si(est['tokens'])} = {sci(c['six_n_d'])} FLOP; the note's count in FLOP is {sci(c['note_flop'])}.")
        out.append(f"\n**Implied utilisation** (MFU, model FLOP utilisation = the FLOP the model needs / (GPU-hours "
                   f"x 3600 x peak FLOP/s)): {sci(c['flops'])} FLOP over {si(c['reported_gpu_hours_pretrain'])} "
                   f"pretraining H800-hours is **{pct(c['mfu'])} MFU** of the {si(c['peak'])}FLOP/s bf16 peak "
                   f"({pct(c['mfu_no_mtp'])} without the MTP module; {pct(c['mfu_fp8'])} of the FP8 peak).")
        labels = {"note_formula_n32768": "the note's (6nd+36d²)L, n = 32K",
                  f"note_formula_n{c['n_pretrain']}": f"the note's formula at n = {c['n_pretrain']}",
                  "six_n_active_d": f"6 N_active D ({si(c['active_params'])})",
                  "six_n_active_d_published_37b": f"6 N_active D (published {si(est['published_active_params'])})",
                  f"exact_causal_n{c['n_pretrain']}": "exact: MLA + MoE + dense layers + head, causal",
                  f"exact_causal_n{c['n_pretrain']}_with_mtp": "exact + MTP module"}
        rows = [[labels.get(k, k), si(v["flops_mac_per_token"]), si(v["flops_fma2_per_token"]), sci(v["flops_fma2"]),
                 pct(v["implied_mfu_bf16"]), usd(v["cost_usd_h800_at_peak"])] for k, v in est["methods"].items()]
        out.append(f"\nPretraining compute by method ({si(est['tokens'])} tokens; MFU against the reported "
                   f"{si(c['reported_gpu_hours_pretrain'])} pretraining H800-hours; "
                   "`accounting.reproduce.deepseek.deepseek_v3_estimates`):\n")
        out.append(markdown(rows, ["method", "MAC/token", "FLOP/token", "FLOP total", "implied MFU",
                                   "$ on H800 at peak"], "lrrrrr"))
        out.append("\n" + self.fig(plots.waterfall(c["steps"], c["reported_usd"], self.figdir, f"reported ({reported_label})"),
                                   "the note's DeepSeek-V3 cost corrected step by step; data: accounting.reproduce "
                                   "(note_section6.section6, deepseek.DEEPSEEK_REPORTED, deepseek.deepseek_v3_estimates), "
                                   "accounting.flops/params/cost/hardware, "
                                   f"`accounting/{c['config'].parent.name}/{c['config'].name}`"))
        return "\n".join(out)

    # ----- 3 -----------------------------------------------------------------------------------------
    def section3(self) -> str:
        mfu = self.deepseek["mfu"]
        pr = cost_table.price(mfu)
        df = self.costs
        if df.empty:
            return ("Not available: no shapes to price. The note's cases come from `accounting.reproduce.note`, the public "
                    f"MoE configs from `accounting.hf_config` + `accounting/{CONFIG_DIR.name}/*.json`.\n")
        names = sorted(shipped_shapes())
        out = [f"Priced on {pr['hardware']} at ${pr['usd_per_hour']:g}/GPU-hour and {pct(mfu)} MFU (DeepSeek-V3's "
               f"implied utilisation, section 2), i.e. {sci(pr['usd_per_flop'])} $/FLOP; training window "
               f"{cost_table.TRAIN_WINDOW} tokens (causal), decode with {cost_table.INFER_CONTEXT} tokens cached. Chinchilla tokens "
               f"= {TOKENS_PER_PARAMETER:g} x parameters. Shapes: "
               f"{', '.join(df['model'])}.\n"]
        rows = [[r.model, r.family, si(r.total_params), si(r.active_params), pct(r.active_fraction),
                 si(r.chinchilla_tokens_total), si(r.chinchilla_tokens_active), si(r.train_flops_per_token),
                 usd(r.train_usd_total), usd(r.train_usd_active), usd(r.infer_usd_per_mtok)] for r in df.itertuples()]
        x = f"{TOKENS_PER_PARAMETER:g}x"
        out.append(markdown(rows, ["model", "kind", "total", "active", "active/total", f"tokens {x}total",
                                   f"tokens {x}active", "train FLOP/token", f"train $ ({x}total)",
                                   f"train $ ({x}active)", "decode $/M tokens"], "llrrrrrrrrr"))
        srcs = ", ".join(f"`accounting/configs/{n}.json`" for n in names) or "accounting.reproduce.note Table 2"
        out.append("\n" + self.fig(plots.cost_vs_params(df, self.figdir),
                                   f"training cost against total and active parameters (log-log); data: {srcs}, "
                                   "accounting.flops/params, prices as stated above"))
        out.append(self.fig(plots.inference_cost(df, self.figdir),
                            f"decode cost per million tokens against active and total parameters; data: {srcs}"))
        if not len(names):
            out.append("Public MoE configs missing: they come from `accounting.hf_config` and "
                       f"`accounting/{CONFIG_DIR.name}/*.json`.")
        return "\n".join(out)

    # ----- 4 -----------------------------------------------------------------------------------------
    def section4(self) -> str:
        return "\n".join([self._training_runs(), self._bench_throughput(), self._moe_layer(), self._flop_check(),
                          self._decode()])

    def _training_runs(self) -> str:
        col = self.col
        out = []
        summ = self.summary
        paths = ", ".join(f"`{p}/metrics.jsonl`" for p in col.run_paths)
        out.append("### Training runs")
        if summ.empty:
            out.append(f"No run folders under {', '.join(col.roots)}. Produce them with {TRAIN_CMD}.\n")
        else:
            swept = swept_columns(col.runs)  # a -m sweep's keys, one column each
            rows = [[r.run, *swept_cells(col.runs, r.run, swept), r.family, r.balancing, r.attention,
                     _count(r.parameters_total),
                     _count(r.parameters_active), _count(r.kv_cache_per_token), r.device_name, r.steps,
                     si(r.tokens), sci(r.train_flops), f"{r.final_train_loss:.3f}", f"{r.final_val_loss:.3f}",
                     pct(r.mfu), si(r.tokens_per_s)]
                    for r in summ.itertuples()]
            out.append(markdown(rows, ["run", *swept, "family", "balancing", "attention", "params total",
                                       "params active", "KV cache / token", "device", "steps", "tokens", "train FLOP",
                                       "train loss", "val loss", "MFU", "tokens/s"],
                                "l" + "r" * len(swept) + "lllrrrlrrrrrrr"))
            out.append("Parameters and the decode cache per token (elements, all layers: 2 L KV hd for MHA/GQA, "
                       "L (kv_lora_rank + rope) for MLA) are `accounting`'s counts for the run's shape.\n")
            out.append("\n" + self.fig(plots.loss_curves(col.metrics, self.figdir),
                                       f"loss against tokens and training FLOP (accounting, 2 per multiply-add); data: {paths}"))
            seeds = sorted({str(x) for x in col.runs.get("seed", [])})
            per_cfg = (col.runs.assign(swept_as_text=col.runs["swept"].astype(str) if "swept" in col.runs else "")
                       .groupby(["experiment", "family", "size", "swept_as_text"]).size()
                       if "experiment" in col.runs else None)
            if per_cfg is not None and int(per_cfg.max()) == 1:
                out.append(f"**Each configuration was trained once (seed {', '.join(seeds)}).** Differences between "
                           "these runs are single-seed comparisons: a loss gap of a few hundredths of a nat may be "
                           "within seed-to-seed variation, which these runs do not measure.\n")
            if not col.router_load.empty:
                out.append(DEFINITIONS + "\n")
                moe_runs = sorted(col.router_load["run"].unique())
                mp = ", ".join(f"`{col.runs[col.runs['run'] == r]['path'].iloc[0]}/metrics.jsonl`" for r in moe_runs)
                out.append(self.fig(plots.router_heatmap(col.router_load, self.figdir, moe_runs),
                                    "router load per expert and step, one row per MoE run and one column per MoE "
                                    f"layer, one colour scale for all panels; data: {mp}"))
                lay = col.router_layer.groupby("run").apply(
                    lambda g: g[g["step"] == g["step"].max()][["max_vio", "cv"]].mean(), include_groups=False)
                rows = [[r, col.runs[col.runs["run"] == r]["balancing"].iloc[0], f"{v.max_vio:.3f}", f"{v.cv:.3f}"]
                        for r, v in lay.iterrows()]
                out.append(markdown(rows, ["run", "balancing", "MaxVio, last step", "CV, last step"], "llrr"))
                out.append("(means over MoE layers at the last logged step)\n")
                out.append(self.fig(plots.maxvio(col.router_layer, self.figdir),
                                    f"MaxVio over training per balancing method; data: {mp}"))
            else:
                out.append(f"No MoE router statistics in these runs; an MoE run ({TRAIN_CMD}) logs them.")
        return "\n".join(out)

    def _bench_throughput(self) -> str:
        col, out = self.col, []
        out.append("\n### Throughput and MFU per backend (bench CSVs)")
        bm = self.bench_mfu
        if bm.empty:
            out.append(f"No bench CSV under {', '.join(col.roots)}. Produce one with {BENCH_CMD}.\n")
        else:
            srcs = ", ".join(f"`{s}`" for s in col.bench_paths)
            rows = [[r.source, r.kind, r.backend, int(r.n_experts or 0), int(r.top_k or 0), int(r.tokens),
                     f"{r.median_s * 1e3:.3g}", f"{r.tflops_per_s:.3g}", pct(r.mfu_vs_matmul), r.device_name]
                    for r in bm.itertuples()]
            out.append(markdown(rows, ["csv", "kind", "backend", "E", "k", "tokens", "ms", "TFLOP/s",
                                       "MFU vs matmul peak", "device"], "lllrrrrrrl"))
            errs = col.bench[col.bench["note"].str.startswith("error")] if "note" in col.bench else pd.DataFrame()
            if not errs.empty:
                out.append("\nRows that failed: " + "; ".join(f"{r.kind}/{r.backend}: {r.note}" for r in errs.itertuples()))
            if len(col.bench_paths) > 1:
                out.append(f"\n{len(col.bench_paths)} bench CSVs ({srcs}) are shown side by side, never pooled: "
                           "each table row, figure panel and line names its CSV.")
            out.append("\n" + self.fig(plots.throughput(col.bench, self.figdir),
                                       "achieved TFLOP/s per backend (accounting FLOP / median time), one panel per "
                                       f"CSV and kind; MFU vs matmul peak in the table above; data: {srcs}"))
            if not any(_is_gpu(d) for d in col.bench.get("device_name", [])):
                out.append(f"These are CPU numbers; GPU numbers come from {BENCH_GPU_CMD}.")
        return "\n".join(out)

    def _moe_layer(self) -> str:
        out = ["\n### One MoE layer against a dense FFN of equal active FLOP (`experiments.bench.moe_layer`)"]
        shown, older = self.moe_layer, self.moe_layer_older
        if shown.empty:
            out.append(f"No MoE-layer CSV under {', '.join(self.col.roots)}. Produce one with {MOE_LAYER_CMD}.")
            return "\n".join(out)
        for source, df in shown.groupby("source", sort=False):
            first = df.iloc[0]
            out.append(f"\n`{source}` ({first['device_name']}, torch {first['torch']}, commit "
                       f"{str(first['git_commit'])[:7]}): forward + backward of one layer on "
                       f"{int(first['tokens'])} tokens, d_model {int(first['d_model'])}, SwiGLU experts; `fine` = "
                       "E=64, k=8, d_expert=256 (DeepSeek-style), `coarse` = E=8, k=2, d_expert=1024 "
                       "(Mixtral-style). Each cell is the median over rounds of the per-round time ratio "
                       "ours_grouped / other (every contender runs once per round, in turn), [quartiles]; "
                       f"‡ marks an interquartile range over {moe_layer.WIDE:.0%} of the median (too noisy to "
                       "conclude). The dense FFN has width k x d_expert (same active parameters and matmul FLOP; "
                       "the MoE layer adds its router's 2 E d per token); the floors are the same nine products as "
                       "plain matmuls on preallocated operands, once as one dense GEMM each (dense GEMM floor), "
                       "once as one GEMM per expert with the run's routing counts (per-expert GEMM floor). "
                       "torchtitan's experts compute in bf16 whatever the input dtype, so its fp32 rows set our fp32 "
                       "against its bf16. `load` is the 1-minute load average when the configuration started "
                       "(it counts the bench's own threads).\n")
            text, _ = moe_layer.table(df)
            out.append(text)
            out.append("\n" + "\n".join(moe_layer.goal_lines(df)))
            r = moe_layer.ratios(df)
            tag = Path(source).stem.removeprefix("moe_layer_")
            path = plots.moe_layer_ratios(r, self.figdir, moe_layer.GOAL, moe_layer.labels(r["vs"].unique()),
                                          name=f"moe_layer_ratios_{tag}")
            out.append("\n" + self.fig(path, "our grouped MoE layer's time over the same FLOP done otherwise; "
                                             f"data: `{source}`"))
        if not older.empty:
            out.append("Earlier MoE-layer runs (not shown): " + "; ".join(
                f"`{r.source}` (commit {str(r.commit)[:7]}, load {r.load_lo:.1f}-{r.load_hi:.1f})"
                for r in older.itertuples()) + ".")
        return "\n".join(out)

    def _flop_check(self) -> str:
        out = []
        out.append("\n### Accounting vs FlopCounterMode (`reports/flopcheck.csv`, held equal to a live count by the tests)")
        fc, msg = flopcheck.read()
        if fc.empty:
            out.append(f"Not computed: {msg or 'no shapes could be built'}.")
        else:
            self.values["flopcheck_rows"] = len(fc)
            out.append(markdown([[r.shape, r.tokens, sci(r.accounting_flops, 6), sci(r.flopcounter_flops, 6),
                                  f"{r.ratio:.6f}"] for r in fc.itertuples()],
                                ["shape", "tokens", "accounting FLOP", "FlopCounterMode FLOP", "ratio"], "lrrrr"))
            if msg:
                out.append(f"\nNot built: {msg}.")
        return "\n".join(out)

    def _decode(self) -> str:
        col, out = self.col, []
        out.append("\n### Incremental decode vs full recompute")
        dec = col.bench[col.bench["kind"].isin(["decode", "recompute"])] if not col.bench.empty else pd.DataFrame()
        dec = dec[dec["median_s"].notna()] if not dec.empty else dec
        if dec.empty:
            out.append(f"No decode rows in the bench CSVs. Produce them with {BENCH_CMD} (needs "
                       "`experiments.bench.decode_vs_recompute.time_decode`).")
        else:
            out.append(self.fig(plots.decode(dec, self.figdir), "time per generated token, KV-cache decode vs full "
                                f"recompute; data: {', '.join(f'`{s}`' for s in sorted(dec['source'].unique()))}"))
        return "\n".join(out)

    # ----- 5 -----------------------------------------------------------------------------------------
    def section5(self) -> str:
        rb = mfu_ratio_bench(self.bench_mfu)
        out = self._paired_part() + self._unpaired_part(rb)
        if not self.paired and self.summary.empty and rb.empty:
            return (f"No measurements to compare yet: the MoE/dense cost per FLOP needs a paired benchmark "
                    f"({PAIRED_CMD}).\n")
        return "\n".join(out)

    def _paired_part(self) -> list[str]:
        """The paired benchmarks' c = MoE/dense cost per FLOP, with dollars drawn only from conclusive ones."""
        out = []
        c = self.deepseek
        est = c["flops"] * cost_table.price(1.0)["usd_per_flop"] / c["mfu"]  # the corrected accounting at dense efficiency
        out.append("The note prices every FLOP alike, but an MoE step need not run at a dense step's efficiency. "
                   "Let **c = (time per FLOP of an MoE training step) / (time per FLOP of a dense one)**, the "
                   "MoE/dense cost per FLOP (1/c is the MoE/dense MFU ratio). c is measured by a dedicated paired "
                   "benchmark: dense and MoE training steps interleaved in one process, so that the load of a "
                   "shared machine hits both alike, many repeats, the median per-repeat ratio with a 95% "
                   "bootstrap interval. Each model is the demo's configuration of the same name (`conf/model/`): `moe` differs from "
                   "`dense` only in its FFN (8 experts, top-2, equal active parameters), so its c prices routing; "
                   "`deepseek` also changes FFN kind and norms, and `deepseek_mla` the attention too, so their c "
                   "prices the whole architecture against dense, not routing alone.\n")
        if not self.col.paired:
            out.append(f"No paired benchmark under {', '.join(self.col.roots)}. Produce one with {PAIRED_CMD}.\n")
        for pb in self.col.paired:
            summ_p, env, src = pb["summary"], pb["env"], pb["source"]
            load = ""
            if summ_p.get("loadavg_1min_start") is not None:
                load = (f"; 1-minute load average {summ_p['loadavg_1min_start']} at the start, "
                        f"{summ_p.get('loadavg_1min_end')} at the end")
            out.append(f"**{src}** ({_env_line(env)}; {summ_p['repeats']} interleaved repeats after "
                       f"{summ_p['warmup']} warm-up, experiment `{summ_p['experiment']}`, size `{summ_p['size']}`"
                       f"{load}; interval: {summ_p.get('interval', 'bootstrap of the median')}):\n")
            rows = []
            for m, v in summ_p["models"].items():
                if m == "dense":
                    continue
                conclusive = not str(v["verdict"]).startswith("too wide")
                rows.append([m, v.get("backend", ""), f"{v['cost_ratio_median']:.3f}",
                             f"[{v['cost_ratio_low']:.3f}, {v['cost_ratio_high']:.3f}]",
                             f"{1 / v['cost_ratio_median']:.3f}", v["verdict"],
                             usd(c["reported_usd"] / v["cost_ratio_median"]) if conclusive else "not drawn",
                             (f"{usd(est * v['cost_ratio_median'])} [{usd(est * v['cost_ratio_low'])}, "
                              f"{usd(est * v['cost_ratio_high'])}]") if conclusive else "not drawn"])
            out.append(markdown(rows, ["MoE model (vs dense)", "backend", "c, median", "95% interval",
                                       "MFU ratio 1/c", "verdict", "reported $ / c", "estimate x c [interval]"],
                                "llrrrlrr"))
            try:
                raw = pd.read_csv(Path(src) / "paired.csv")
            except (OSError, ValueError):
                raw = pd.DataFrame()
            name = "paired_cost_ratio_" + Path(src).name
            out.append("\n" + self.fig(plots.paired_ratio(raw, summ_p, self.figdir, name,
                                                     f"MoE / dense cost per FLOP, paired repeats ({Path(src).name})"),
                                       f"per-repeat MoE/dense time per training FLOP with the median and its 95% "
                                       f"bootstrap interval; data: `{src}/paired.csv`, `{src}/summary.json`, "
                                       f"`{src}/env.json`"))
        if self.paired:
            head = self.paired[0]
            self.values.update(paired_cost_ratio=head["cost_ratio_median"], paired_cost_ratio_low=head["cost_ratio_low"],
                               paired_cost_ratio_high=head["cost_ratio_high"])
            out.append(f"Reading the table: (a) DeepSeek's reported {usd(c['reported_usd'])} would have been "
                       f"{usd(c['reported_usd'])} / c had the same FLOP run at dense efficiency; (b) the corrected "
                       f"accounting of section 2, which assumes DeepSeek's implied {pct(c['mfu'])} MFU for every FLOP "
                       f"({usd(est)} for {sci(c['flops'])} pretraining FLOP), becomes {usd(est)} x c for an MoE whose "
                       "FLOP cost c times a dense FLOP. An interval wider than "
                       f"{100 * _conclusive_width(self.col.paired):.0f}% of its median is called too wide to conclude "
                       "and no dollar figure is drawn from it. The interval covers the noise within one run; on a "
                       "machine shared with other jobs the ratio also moves with the load (MoE steps, made of more "
                       "and smaller operations, suffer more from contention), so a run at another time can land "
                       "outside it: rerun `make paired` to see how far.")
            if not any(_is_gpu(p["device"]) for p in self.paired):
                out.append("\n**These ratios come from tiny models on a CPU.** They measure this code on this "
                           "machine, not DeepSeek's H800 cluster, where expert parallelism, all-to-all communication "
                           "and kernel efficiency set c; apply them to DeepSeek's dollars only as an illustration. "
                           f"A GPU measurement comes from {PAIRED_GPU_CMD}.")
        return out

    def _unpaired_part(self, rb) -> list[str]:
        """Training runs' and bench CSVs' MFU ratios: context only."""
        out, summ = [], self.summary
        rr = mfu_ratio_runs(summ)
        if not summ.empty:
            out.append("\n### Unpaired measurements (context only, not used for dollars)")
            out.append("Each training run's MFU is its own median over logged steps, measured at a different time "
                       "from the others on a machine shared with other jobs, and each configuration ran once; the "
                       "ratios below move with the machine's load, so they are shown for context only. The spread "
                       "of MFU over each run's own logged steps (10th to 90th percentile) shows how much:\n")
            spread = self.col.metrics.groupby("run")["mfu"].quantile([0.1, 0.5, 0.9]).unstack()
            out.append(markdown([[r, pct(v[0.1]), pct(v[0.5]), pct(v[0.9]), ratio(v[0.9] / v[0.1])]
                                 for r, v in spread.iterrows()],
                                ["run", "MFU p10", "median", "p90", "p90 / p10"], "lrrrr") + "\n")
            out.append(self.fig(plots.mfu_by_family(summ, self.figdir),
                                "median MFU per training run; data: " + ", ".join(f"`{p}/metrics.jsonl`" for p in self.col.run_paths)))
        if not rr.empty:
            out.append(markdown([[r.device_name, r.size, r.moe_run, pct(r.dense_mfu), pct(r.moe_mfu), ratio(r.ratio)]
                                 for r in rr.itertuples()],
                                ["device", "size", "MoE run", "dense MFU", "MoE MFU", "MoE / dense MFU"], "llllrr"))
            self.values["mfu_ratio_training runs"] = float(rr["ratio"].median())
        if not rb.empty:
            out.append("\nBench CSVs, per CSV (never pooled), kind and backend: median over shapes of MoE TFLOP/s / "
                       "dense TFLOP/s at the same top-k and tokens (each a median of a few timed calls, dense and MoE "
                       "timed one after the other, not interleaved):\n")
            out.append(markdown([[r.source, r.kind, r.backend, r.shapes, ratio(r.median_ratio),
                                  f"{r.min_ratio:.3g}-{r.max_ratio:.3g}", r.device_name] for r in rb.itertuples()],
                                ["csv", "kind", "backend", "shapes", "median MoE/dense TFLOP/s", "range", "device"],
                                "lllrrrl"))
            best = rb[rb["kind"] == "model"] if (rb["kind"] == "model").any() else rb
            self.values["mfu_ratio_bench, best backend"] = float(best.groupby("backend")["median_ratio"].median().max())
        return out

    # ----- key findings ------------------------------------------------------------------------------
    def findings(self) -> str:
        """The numbers a reader came for, each with its source (computed after the sections)."""
        v, out = self.values, []
        if "table3_cells" in v:
            out.append(f"- The note's Table 3 recomputes to within its printed rounding in "
                       f"{v['table3_cells'] - v.get('table3_differs', 0)} of {v['table3_cells']} cells "
                       "(section 1; `accounting.reproduce.note`).")
        c = self.deepseek
        if c:
            out.append(f"- DeepSeek-V3: the note's {usd(c['steps'][0].usd)} becomes the reported "
                       f"{usd(c['reported_usd'])} through computed factors; the exact architecture trains at "
                       f"{si(c['exact_flops_per_token'])} FLOP per token (DeepSeek reports "
                       f"{si(c['reported_flops_per_token'])}; {si(c['exact_mtp_flops_per_token'])} with its "
                       f"multi-token-prediction module), which over the reported "
                       f"{si(c['reported_gpu_hours_pretrain'])} pretraining H800-hours is {pct(c['mfu_no_mtp'])} model "
                       f"FLOP utilisation ({pct(c['mfu'])} with the module; MFU; section 2; "
                       "`accounting.reproduce.deepseek.deepseek_v3_estimates`, `accounting/configs/deepseek-v3.json`).")
        d = deepseek_reproduction.deepseek_disclosed_check()
        out.append(f"- Serving DeepSeek-V3 in DeepSeek's disclosed decode layout, the roofline bound is "
                   f"{si(d.decode_bound_tokens_per_s_per_node)} output tokens/s per H800 node "
                   f"({d.decode_bound}-bound); DeepSeek's disclosed {si(d.decode_achieved_tokens_per_s_per_node)} "
                   f"is {pct(d.decode_fraction_of_bound)} of it, i.e. "
                   f"${d.usd_per_million_output_tokens_disclosed:.2f} per million output tokens against "
                   f"${d.usd_per_million_output_tokens_bound:.3f} at the bound and "
                   f"${d.usd_per_million_output_tokens_note_method:.3f} by the note's compute-only method "
                   "(section 6; `accounting.reproduce.deepseek.deepseek_disclosed_check`).")
        costs = self.costs
        if not costs.empty and (costs["model"] == "deepseek-v3").any():
            r = costs[costs["model"] == "deepseek-v3"].iloc[0]
            out.append(f"- An MoE's Chinchilla budget depends on which parameters count: DeepSeek-V3 "
                       f"({pct(r.active_fraction)} of its parameters active) costs {usd(r.train_usd_total)} at "
                       f"{TOKENS_PER_PARAMETER} x total parameters but {usd(r.train_usd_active)} at "
                       f"{TOKENS_PER_PARAMETER} x active (section 3; "
                       "`reports.costs`, shipped configs).")
        for p in self.paired[:3]:
            out.append(f"- Measured MoE/dense cost per training FLOP, {p['model']} vs dense: c = "
                       f"{p['cost_ratio_median']:.3f} [{p['cost_ratio_low']:.3f}, {p['cost_ratio_high']:.3f}] "
                       f"(median, 95% bootstrap interval, {p['repeats']} interleaved repeats on {p['device']}): "
                       f"{p['verdict']} (section 5; `{p['source']}/paired.csv`).")
        for source, df in (self.moe_layer.groupby("source", sort=False) if not self.moe_layer.empty else []):
            line = moe_layer.finding(df, source)
            if line:
                out.append(line)
        summ = self.summary
        if not summ.empty and summ["final_val_loss"].notna().any():
            best = summ.loc[summ["final_val_loss"].idxmin()]
            worst = summ.loc[summ["final_val_loss"].idxmax()]
            out.append(f"- Training runs ({len(summ)}, one seed each): final validation loss from "
                       f"{best.final_val_loss:.3f} ({best.run}) to {worst.final_val_loss:.3f} ({worst.run}) "
                       f"(section 4; `{best.path}/metrics.jsonl`, `{worst.path}/metrics.jsonl`).")
        return "\n".join(out) + "\n" if out else "No findings: every section lacks data.\n"

    def header(self) -> str:
        col = self.col
        moe_layer_csvs = [] if col.moe_layer.empty else list(col.moe_layer["source"].unique())
        shown = [] if self.moe_layer.empty else list(self.moe_layer["source"].unique())
        sel = ", ".join(f"`{p}`" for p in col.select)
        skipped = f"; {len(col.skipped)} other run folder(s) found but not selected" if col.skipped else ""
        lines = [f"Generated by `python -m reports` at {time.strftime('%Y-%m-%d %H:%M:%S %Z')} from "
                 f"{', '.join(f'`{r}`' for r in col.roots)}: {len(col.run_paths)} run folder(s) selected by {sel}"
                 f"{skipped}, {len(col.bench_paths)} bench CSV(s), {len(col.paired)} paired benchmark(s), "
                 f"{len(moe_layer_csvs)} MoE-layer CSV(s) ({len(shown)} shown). Flops are "
                 "FLOP (2 per multiply-add) unless marked as the note's multiply-adds.\n",
                 "Measured on (from each run's `env.json`, each paired benchmark's `env.json` and each bench or "
                 "shown MoE-layer CSV's columns):\n"]
        machines = {}
        for r in (col.runs.to_dict("records") if not col.runs.empty else []):
            machines.setdefault(_env_line(r), []).append(r["path"])
        for p in col.paired:
            machines.setdefault(_env_line(p["env"]), []).append(p["source"])
        if not col.bench.empty:
            for src, g in col.bench.groupby("source"):
                first = g.iloc[0]
                env = {k: first.get(k) for k in ("device_name", "cpu_count", "torch", "torch_threads", "git_commit")}
                machines.setdefault(_env_line(env), []).append(src)
        for src in shown:
            first = self.moe_layer[self.moe_layer["source"] == src].iloc[0]
            env = {k: first.get(k) for k in ("device_name", "torch", "git_commit")}
            machines.setdefault(_env_line(env), []).append(src)
        for line, srcs in machines.items():
            lines.append(f"- {line}: {', '.join(f'`{s}`' for s in srcs[:6])}"
                         f"{f' and {len(srcs) - 6} more' if len(srcs) > 6 else ''}")
        return "\n".join(lines) + "\n"

    def render(self) -> str:
        parts = ["# Report: the note's economics, recomputed and measured", self.header()]
        body = []
        for title, fn in zip(SECTIONS, (self.section1, self.section2, self.section3, self.section4, self.section5)):
            body.append(f"## {title}\n")
            try:
                body.append(fn())
            except Exception as e:  # noqa: BLE001  (one broken section must not sink the report)
                body.append(f"Section failed: `{type(e).__name__}: {e}`")
                if fn == self.section2:
                    raise
            body.append("")
        body.append(serving_section.section(self.out, self.figures, self.col.roots))
        body.append(scaling_section.section(self.out, self.figures))
        body.append(training_memory_section.section(self.out, self.figures))
        parts += ["## Key findings\n", self.findings(), *body]
        return "\n".join(parts)


def _env_line(env: dict) -> str:
    """'<device>, N cores, torch X, T thread(s), commit abc1234' from an env.json-like dict (known fields only)."""
    def ok(x):
        return x is not None and str(x) not in ("", "nan", "None")
    parts = [str(env.get("device_name")) if ok(env.get("device_name")) else "device unknown"]
    if ok(env.get("cpu_count")):
        parts.append(f"{int(float(env['cpu_count']))} cores")
    if ok(env.get("torch")):
        parts.append(f"torch {env['torch']}")
    if ok(env.get("torch_threads")):
        parts.append(f"{int(float(env['torch_threads']))} thread(s)")
    if ok(env.get("git_commit")):
        sha = str(env["git_commit"])
        parts.append(f"commit {sha[:10]}{'-dirty' if sha.endswith('-dirty') else ''}")
    return ", ".join(parts)


def _is_gpu(name) -> bool:
    """A device name from a GPU: CUDA, NVIDIA, or the model of a GPU preset in ``accounting.hardware``."""
    gpus = {hw.name.split()[0] for key, hw in HARDWARE.items() if key != "press2025"}  # H100, H800, A100...
    return any(k in str(name) for k in ("NVIDIA", "cuda", *gpus))


def _conclusive_width(paired: list[dict]) -> float:
    from experiments.bench.paired import CONCLUSIVE_WIDTH
    ws = [p["summary"].get("conclusive_width") for p in paired if p["summary"].get("conclusive_width")]
    return float(ws[0]) if ws else CONCLUSIVE_WIDTH


def remove_stale_figures(figdir: Path, keep) -> list[Path]:
    """Delete the PNGs in ``figdir`` that this report did not draw (left by earlier reports)."""
    keep = {Path(p).resolve() for p in keep}
    stale = [p for p in sorted(Path(figdir).glob("*.png")) if p.resolve() not in keep]
    for p in stale:
        p.unlink()
    return stale


def _paired_rows(paired: list[dict]) -> list[dict]:
    """One row per MoE model of each paired benchmark: its cost ratio c against dense, with the source."""
    return [{"source": pb["source"], "model": m, **v, "device": pb["env"].get("device_name", "?"),
             "repeats": pb["summary"]["repeats"]}
            for pb in paired for m, v in pb["summary"]["models"].items() if m != "dense"]


def build(roots, out: str | Path = "reports", select=None) -> Report:
    """Collect (runs matching ``select``; all when None), compute, draw and write ``<out>/REPORT.md`` and
    ``<out>/figures/*.png``; PNGs in ``<out>/figures`` that this report did not draw are deleted."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    rep = Report(collect(roots, select), out)
    (out / "REPORT.md").write_text(rep.render())
    rep.stale = remove_stale_figures(rep.figdir, rep.figures)
    return rep
