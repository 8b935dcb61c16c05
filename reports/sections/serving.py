"""Report section 6: serving economics (``accounting.serving``) and measured decode vs its roofline.

``section(ctx)`` returns the section (markdown with its ``## `` heading) and draws its figures into
``<out>/figures``: $ per million output tokens vs batch (DeepSeek-V3, Mixtral 8x7B, dense models of
DeepSeek-V3's active and total parameters; marker = the binding regime), DeepSeek's disclosed throughput
as a fraction of the bound, and measured vs predicted decode from ``decode_<device>.csv`` files
(``python -m experiments.bench.decode_vs_roofline``) found under ``roots``. Every number is computed here or read
from those files.
"""
from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Iterable

import matplotlib.ticker
import pandas as pd
import seaborn as sns
from matplotlib.lines import Line2D

from accounting import serving as roofline
from accounting.hardware import get_hardware
from accounting.hf_config import load_shipped
from accounting.params import count_parameters
from accounting.reproduce import deepseek as deepseek_reproduction, note as note_reproduction

from .. import palette as pal
from ..context import Context
from ..layout import Drawn, plt, save
from ..tables import markdown, pct, si
from . import Page, Section

TITLE = "6. Serving economics: a roofline of decode and prefill"
BENCH_CMD = "`python -m experiments.bench.decode_vs_roofline` (CPU; add `--device cuda` on a GPU)"
SWEEP = dict(hw="h100-sxm", weights="fp8", kv="bf16", context=4096, usd=2.0)
BATCHES = [1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024]
BOUND_MARKER = {"compute": "o", "memory": "s", "communication": "^"}
BENCH_COLOURS = {"dense": pal.FAMILY["dense"], "moe-e8k2": pal.FAMILY["moe"],
                 "moe-e64k8": sns.color_palette("colorblind", 10)[3], "mla": pal.FAMILY["deepseek"]}


def _compiled_note(env: dict) -> str:
    """How the decode steps ran: eager (nothing to say) or through one compiled step per model, with its
    compile time (the env JSON's ``compile`` and ``compile_s``)."""
    if not env.get("compile"):
        return ""
    times = ", ".join(f"{m} {s:.0f} s" for m, s in (env.get("compile_s") or {}).items())
    return f" with `--compile` (one torch.compile'd step per model; compile time {times})"


def _gb(x: float) -> str:
    """Bytes (or bytes/s) in GB or TB, 1 GB = 1e9."""
    return f"{x / 1e12:.3g} TB" if x >= 1e12 else f"{x / 1e9:.3g} GB"


# ----- $ per Mtok vs batch -------------------------------------------------------------------------
def sweep_models():
    """(label, family, shape) for the batch sweep: DeepSeek-V3, Mixtral 8x7B, dense equal active/total."""
    ds = load_shipped("deepseek-v3", seq_len=SWEEP["context"])
    c = count_parameters(ds)
    return [("DeepSeek-V3 (MoE, 671B / 37B active)", "deepseek", ds),
            ("Mixtral 8x7B (MoE, 47B / 13B active)", "moe", load_shipped("mixtral-8x7b", seq_len=SWEEP["context"])),
            (f"dense, {si(c.active)} (= V3 active)", "dense", roofline.dense_equivalent(ds, c.active, "dense-active")),
            (f"dense, {si(c.total)} (= V3 total)", "note", roofline.dense_equivalent(ds, c.total, "dense-total"))]


def batch_sweep() -> pd.DataFrame:
    """One row per (model, batch): $/Mtok out, bound, fits, at the smallest power-of-two replica that
    holds one sequence per GPU (``SWEEP`` settings)."""
    hw = get_hardware(SWEEP["hw"])
    rows = []
    for label, family, shape in sweep_models():
        base = roofline.Layout(weights_dtype=SWEEP["weights"], kv_dtype=SWEEP["kv"])
        g = roofline.smallest_fitting_gpus(shape, hw, base, SWEEP["context"], batch=1.0)
        lay = replace(base, gpus=g)
        for b in BATCHES:
            r = roofline.serve(shape, hw, lay, b, SWEEP["context"], usd_per_gpu_hour=SWEEP["usd"])
            rows.append({"model": label, "family": family, "gpus": g, "tp": r.tp, "batch": b, "fits": r.fits,
                         "max_batch": r.max_batch, "bound": r.bound,
                         "usd_per_mtok_out": r.usd_per_million_output_tokens,
                         "usd_per_mtok_in": r.usd_per_million_input_tokens,
                         "note_usd": r.note_method_usd_per_million_output_tokens,
                         "tok_s_gpu": r.decode_tokens_per_s_per_gpu})
    return pd.DataFrame(rows)


def usd_vs_batch_figure(df: pd.DataFrame, figdir: Path) -> Drawn:
    """$/Mtok against batch per model (solid where it fits in HBM, dotted beyond); marker = binding regime,
    hollow = does not fit; dashed = the note's method. The legend, beside the axes, lists only what is drawn."""
    fig, ax = plt.subplots(figsize=(11, 5.2))
    for label, g in df.groupby("model", sort=False):
        colour = pal.family_colour(g["family"].iloc[0])
        ok = g[g["fits"]]
        ax.plot(ok["batch"], ok["usd_per_mtok_out"], color=colour, lw=1.6,
                label=f"{label}, {g['gpus'].iloc[0]} GPU{'s' if g['gpus'].iloc[0] > 1 else ''}")
        ax.plot(g["batch"], g["usd_per_mtok_out"], color=colour, lw=0.8, ls=":")
        for bound, m in BOUND_MARKER.items():
            sel = g[g["bound"] == bound]
            ax.scatter(sel["batch"], sel["usd_per_mtok_out"], marker=m, s=38, zorder=3,
                       facecolors=[colour if f else "white" for f in sel["fits"]], edgecolors=[colour])
        ax.axhline(g["note_usd"].iloc[0], color=colour, lw=0.8, ls="--", alpha=0.6)
    handles, _ = ax.get_legend_handles_labels()
    key = dict(color="none", markeredgecolor="grey", markersize=7)
    handles += [Line2D([], [], marker=m, markerfacecolor="grey", label=f"{bound}-bound", **key)
                for bound, m in BOUND_MARKER.items() if (df["bound"] == bound).any()]
    if not df["fits"].all():
        handles.append(Line2D([], [], marker="o", markerfacecolor="white", label="does not fit in HBM", **key))
    handles.append(Line2D([], [], color="grey", ls="--", lw=0.8, label="note's method (FLOP at peak)"))
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("concurrent sequences per GPU (batch)")
    ax.set_ylabel("$ per million output tokens (bound)")
    ax.set_title(f"Decode cost vs batch: {get_hardware(SWEEP['hw']).name}, {SWEEP['weights']} weights, "
                 f"context {SWEEP['context']}, ${SWEEP['usd']:g}/GPU-hour", fontsize=10)
    ax.legend(handles=handles, fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1), frameon=False,
              title="model, replica (solid: fits in HBM)", title_fontsize=8)
    return save(fig, figdir, "serving_usd_vs_batch")


# ----- DeepSeek disclosed vs bound -----------------------------------------------------------------
def deepseek_figure(d: deepseek_reproduction.DisclosedServingCheck, figdir: Path) -> Drawn:
    fig, ax = plt.subplots(figsize=(7.8, 3.6))
    phases = ["decode (output tok/s/node)", "prefill (input tok/s/node, cache hits incl.)"]
    bound = [d.decode_bound_tokens_per_s_per_node, d.prefill_bound_with_cache_hits_tokens_per_s_per_node]
    got = [d.decode_achieved_tokens_per_s_per_node, d.prefill_achieved_tokens_per_s_per_node]
    y = range(len(phases))
    ax.barh([i + 0.18 for i in y], bound, height=0.34, color=pal.FAMILY["note"], label="roofline bound")
    ax.barh([i - 0.18 for i in y], got, height=0.34, color=pal.FAMILY["deepseek"], label="DeepSeek disclosed")
    for i, (b, a) in enumerate(zip(bound, got)):
        ax.text(a, i - 0.18, f"  {a / 1e3:.1f}k = {a / b:.0%} of bound", va="center", fontsize=8)
        ax.text(b, i + 0.18, f"  {b / 1e3:.0f}k", va="center", fontsize=8)
    ax.set_yticks(list(y), phases, fontsize=8)
    ax.set_xlim(0, max(bound) * 1.35)
    ax.xaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda x, _: f"{x / 1e3:.0f}k"))
    ax.set_xlabel("tokens/s per 8-GPU H800 node")
    ax.set_title("DeepSeek-V3 serving: disclosed throughput vs the roofline in their layouts", fontsize=10)
    ax.legend(fontsize=8, loc="lower right")
    return save(fig, figdir, "serving_deepseek_fraction")


# ----- measured decode -----------------------------------------------------------------------------
def find_decode_csvs(roots: Iterable[str | Path]) -> list[Path]:
    out = []
    for root in roots:
        root = Path(root)
        if root.is_dir():
            out.extend(sorted(p for p in root.rglob("decode_*.csv") if "runs" not in p.parts))
    return list(dict.fromkeys(out))


def measured_figure(df: pd.DataFrame, device: str, figdir: Path, name: str) -> Drawn:
    ctx = int(df["context"].min())
    g = df[df["context"] == ctx]
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.6))
    ax = axes[0]
    for model, m in g.groupby("model", sort=False):
        c = BENCH_COLOURS.get(model, "grey")
        m = m.sort_values("batch")
        ax.plot(m["batch"], 1e3 * m["step_s_median"], color=c, marker="o", ms=4, label=f"{model} measured")
        ax.fill_between(m["batch"], 1e3 * m["step_s_q1"], 1e3 * m["step_s_q3"], color=c, alpha=0.25, lw=0)
        ax.plot(m["batch"], 1e3 * m["predicted_step_s"], color=c, ls="--", lw=1.1, label=f"{model} roofline")
        if "streaming_bound_step_s" in m and m["streaming_bound_step_s"].notna().any():
            ax.plot(m["batch"], 1e3 * m["streaming_bound_step_s"], color=c, ls=":", lw=1.4,
                    label=f"{model} GEMM streaming bound")
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("batch (sequences decoded together)")
    ax.set_ylabel("time per decode step (ms); band = IQR")
    ax.set_title(f"Decode step vs batch, context {ctx}", fontsize=10)
    ax.legend(fontsize=7, ncol=2)
    ax = axes[1]
    dense = g[g["model"] == "dense"].set_index("batch")
    for model in ("moe-e8k2", "moe-e64k8"):
        m = g[g["model"] == model].set_index("batch")
        common = m.index.intersection(dense.index)
        if common.empty:
            continue
        c = BENCH_COLOURS[model]
        ax.plot(common, m.loc[common, "step_s_median"] / dense.loc[common, "step_s_median"], color=c, marker="o",
                ms=4, label=f"{model} / dense, measured")
        ax.plot(common, m.loc[common, "predicted_step_s"] / dense.loc[common, "predicted_step_s"], color=c,
                ls="--", label=f"{model} / dense, roofline")
    ax.axhline(1, color="grey", lw=0.8)
    ax.set_xscale("log", base=2)
    ax.set_xlabel("batch")
    ax.set_ylabel("MoE step time / dense step time")
    ax.set_title("Expert coverage: MoE vs dense of equal active parameters", fontsize=10)
    ax.legend(fontsize=7)
    fig.suptitle(f"Measured cached decode on {device} vs the serving roofline fed with its measured peak "
                 "and bandwidth", fontsize=10)
    return save(fig, figdir, name)


def _span(x: pd.Series) -> str:
    lo, hi = int(x.min()), int(x.max())
    return str(lo) if lo == hi else f"{lo}-{hi}"


def measured_table(df: pd.DataFrame, column: str = "measured_over_predicted_tokens_per_s") -> str:
    """``column`` (a measured / bound ratio) by (model, context) x batch, with the IQR spread per row."""
    df = df.copy()
    df["cell"] = df[column].map(lambda x: f"{x:.2f}")
    piv = df.pivot_table(index=["model", "context"], columns="batch", values="cell", aggfunc="first", sort=False)
    spread = df.assign(rel=(df["step_s_q3"] - df["step_s_q1"]) / df["step_s_median"]) \
               .groupby(["model", "context"], sort=False)["rel"].max()
    rows = [[m, n, *[piv.loc[(m, n)].get(b, "-") if isinstance(piv.loc[(m, n)].get(b, "-"), str) else "-"
                     for b in piv.columns], f"{spread.loc[(m, n)]:.0%}"] for m, n in piv.index]
    return markdown(rows, ["model", "context", *[f"B={b}" for b in piv.columns], "max IQR/median"],
                    "ll" + "r" * (len(piv.columns) + 1))


def _mla_note(df: pd.DataFrame) -> str:
    """MLA's measured / predicted at batch 1, shortest vs longest context (the cache-read efficiency)."""
    m = df[(df["model"] == "mla") & (df["batch"] == 1)].sort_values("context")
    if len(m) < 2:
        return ""
    lo, hi = m.iloc[0], m.iloc[-1]
    return (f"- MLA: measured / predicted at batch 1 falls from {lo['measured_over_predicted_tokens_per_s']:.2f} at "
            f"context {int(lo['context'])} to {hi['measured_over_predicted_tokens_per_s']:.2f} at {int(hi['context'])}. "
            "The roofline prices reading the compressed latent once per step; our absorbed-MLA decode calls "
            "`scaled_dot_product_attention(enable_gqa=True)`, which on this CPU runs the math kernel: the torch "
            "profiler shows it copying the shared latent once per query head (aten::repeat_interleave), then "
            "again to scale the transposed keys (aten::mul), both strided copies far below the streaming "
            "bandwidth, and these copies take most of the step at long context. A kernel that reads the latent "
            "once (as DeepSeek's FlashMLA does) is what the bound assumes; the gap is our kernel, not the cache.")


def measured_part(path: Path, page: Page, figdir: Path) -> str:
    df = pd.read_csv(path)
    if df.empty:
        return f"`{path}` holds no rows.\n"
    env_path = path.with_name(path.stem + "_env.json")
    env = {}
    if env_path.is_file():
        env = json.loads(env_path.read_text())
    device = str(df["device"].iloc[0])
    figure = measured_figure(df, device, figdir, f"serving_measured_{path.stem}")
    r = df["measured_over_predicted_tokens_per_s"]
    moe = df[df["n_experts"] > 0]
    dmax = moe["distinct_experts_measured"] - moe["distinct_experts_predicted"]
    ctx = int(df["context"].min())
    g = df[df["context"] == ctx].set_index(["model", "batch"])["step_s_median"]
    text = [f"Measured on **{device}** ({env.get('torch_threads', '?')} thread(s), torch {env.get('torch', '?')}, "
            f"commit `{str(env.get('git_commit', '?'))[:12]}`), {df['dtype'].iloc[0]}; data `{path}` and "
            f"`{env_path.name}`, written by {BENCH_CMD}{_compiled_note(env)}. The roofline is `accounting.serving.decode_step` (G = 1) "
            f"fed with the matmul peak ({df['peak_flops_per_s'].iloc[0] / 1e9:.3g} GFLOP/s) and read bandwidth "
            f"({_gb(df['bandwidth_bytes_per_s'].iloc[0])}/s) measured in the same run. Each point is the median of "
            f"{_span(df['repeats'])} repeats interleaved over the batches.\n",
            f"- measured / predicted tokens/s: median {r.median():.2f}, range {r.min():.2f}-{r.max():.2f} over "
            f"{len(df)} points (1.0 would mean this machine reaches its own roofline).",
            f"- distinct experts touched per MoE layer: measured vs E(1-(1-k/E)^B) differ by at most "
            f"{dmax.abs().max():.2f} experts (router at initialisation, so routing is near uniform)."
            if len(moe) else "",
            f"- expert coverage, context {ctx}: from batch 1 to 8 the dense step grows "
            f"{g.get(('dense', 8), float('nan')) / g.get(('dense', 1), float('nan')):.2f}x, E=8 k=2 "
            f"{g.get(('moe-e8k2', 8), float('nan')) / g.get(('moe-e8k2', 1), float('nan')):.2f}x and E=64 k=8 "
            f"{g.get(('moe-e64k8', 8), float('nan')) / g.get(('moe-e64k8', 1), float('nan')):.2f}x: the MoE's "
            "step grows with the experts its batch touches, the dense one only with arithmetic and KV reads."
            if ("dense", 8) in g.index and ("moe-e64k8", 8) in g.index else "",
            _mla_note(df),
            "",
            page.figure(figure, f"measured decode step vs the roofline on {device} (left: step time, dashed = roofline; "
                         f"right: MoE / dense step time, the expert-coverage effect); data: {path.name}"),
            "measured / predicted tokens/s per point (below 1: slower than the bound), and the largest "
            "interquartile range of the repeats relative to the median in each row:\n",
            measured_table(df), *_streaming_part(df, env), ""]
    return "\n".join(t for t in text if t is not None) + "\n"   # a blank line ends the table


def _streaming_part(df: pd.DataFrame, env: dict) -> list[str]:
    """The same steps against the bound of this device's own small-batch GEMMs (``streaming_bound_step_s``,
    from ``experiments.bench.weight_streaming``), when the CSV holds it."""
    if "measured_over_streaming_bound" not in df.columns or df["measured_over_streaming_bound"].isna().all():
        return []
    rates = env.get("weight_streaming_bytes_per_s", {}).get("linear", {})
    seen = ", ".join(f"B={b}: {_gb(r)}/s" for b, r in sorted(rates.items(), key=lambda kv: int(kv[0])))
    return ["\nThe roofline assumes every weight streams at the read bandwidth whatever the batch. The matmul "
            "library does not: `F.linear` on a few rows reads the weights at " + (seen or "(rates not recorded)") +
            " here (`python -m experiments.bench.weight_streaming`, same run). Measured against the step time "
            "that GEMMs at these rates allow (non-routed weights at the `linear` rate for B rows, routed experts "
            "at the `x @ W` rate for the rows each receives, the KV cache at the read bandwidth; "
            "`streaming_bound_step_s`), what remains is the rest of the step (attention, norms, routing, the "
            "framework):\n", measured_table(df, "measured_over_streaming_bound")]


# ----- the section -----------------------------------------------------------------------------------
def section(ctx: Context) -> Section:
    """The serving section (markdown with its ``## `` heading); ``decode_*.csv`` are searched under the
    context's roots."""
    page = Page()
    parts = [f"## {TITLE}\n",
             "The note prices inference as arithmetic: decode FLOP per token at the peak. Decoding is bound by "
             "memory traffic and, under expert parallelism, by communication: one token reads its k experts, but "
             "B tokens touch E(1-(1-k/E)^B) distinct experts per layer, so an MoE at serving batch sizes reads "
             "nearly all its *total* weights per step while computing only its *active* ones. "
             "`accounting.serving` prices this as a roofline (compute, HBM and link time per step; the slowest "
             "binds; efficiency 1.0 = the bound); `python -m accounting serve` and `serving-check` print it.\n"]
    parts += _deepseek_part(page, ctx) + _note_case_d_part() + _batch_sweep_part(page, ctx)
    parts.append("### Measured decode vs the roofline\n")
    roots = ctx.col.roots
    csvs = find_decode_csvs(roots)
    if not csvs:
        parts.append(f"No `decode_*.csv` found under {', '.join(map(str, roots))}; run {BENCH_CMD}.\n")
    for path in csvs:
        try:
            parts.append(measured_part(path, page, ctx.figdir))
        except Exception as e:  # noqa: BLE001  (a malformed CSV must not sink the report)
            parts.append(f"`{path}` could not be read: `{type(e).__name__}: {e}`\n")
    page.add(*parts)
    return page.section()


def _deepseek_part(page: Page, ctx: Context) -> list[str]:
    """DeepSeek-V3 in its disclosed serving layouts: the roofline bound against the disclosed throughput."""
    d = ctx.disclosed
    return ["### DeepSeek-V3 in DeepSeek's disclosed layouts\n",
              f"Source: {d.source}. Decode: EP{d.decode_layout['gpus']} "
              f"({d.decode_layout['expert_copies_per_gpu']} routed experts per GPU, attention and shared expert "
              f"data-parallel), prefill: EP{d.prefill_layout['gpus']} "
              f"({d.prefill_layout['expert_copies_per_gpu']} per GPU), FP8 weights and dispatch, BF16 attention "
              f"and combine, H800 (NVLink {_gb(get_hardware('h800').nvlink_bytes_per_s)}/s, InfiniBand "
              f"{_gb(get_hardware('h800').network_bytes_per_s)}/s per GPU and direction). The decode batch, "
              f"{d.decode_batch_per_gpu:.0f} sequences per GPU, follows from the disclosure (node throughput / 8 / "
              f"21 tokens/s per user); the context ({d.context_assumed}) and prompt length "
              f"({d.prompt_len_assumed}) are not disclosed and are assumptions. MTP acceptance "
              f"{d.mtp_acceptance_bound:g} (the favourable end).\n",
              markdown([["decode, output tok/s per node", si(d.decode_bound_tokens_per_s_per_node), d.decode_bound,
                         si(d.decode_achieved_tokens_per_s_per_node), pct(d.decode_fraction_of_bound),
                         f"${d.usd_per_million_output_tokens_bound:.3g}",
                         f"${d.usd_per_million_output_tokens_disclosed:.3g}"],
                        ["prefill, input tok/s per node (cache hits incl.)",
                         si(d.prefill_bound_with_cache_hits_tokens_per_s_per_node), d.prefill_bound,
                         si(d.prefill_achieved_tokens_per_s_per_node), pct(d.prefill_fraction_of_bound),
                         f"${d.usd_per_million_input_tokens_bound:.3g}",
                         f"${d.usd_per_million_input_tokens_disclosed:.3g}"]],
                       ["phase", "roofline bound", "binding", "DeepSeek disclosed", "disclosed / bound",
                        "$/Mtok at bound", "$/Mtok disclosed"], "lrlrrrr"),
              "",
              f"**What the gap is made of.** At the bound a decode step takes {1e3 * d.decode_communication_s:.1f} ms of "
              f"InfiniBand traffic (dispatch + combine to the other nodes' experts), {1e3 * d.decode_compute_s:.1f} ms "
              f"of compute (of which {1e3 * d.decode_compute_attention_cache_s:.1f} ms is attention over the cache in "
              f"BF16) and {1e3 * d.decode_memory_s:.1f} ms of HBM reads ({1e3 * d.decode_memory_weights_s:.1f} ms "
              f"weights, {1e3 * d.decode_memory_kv_s:.1f} ms KV cache); the bound assumes all three overlap "
              "perfectly at full link, tensor-core and HBM rates. DeepSeek's 14.8k is "
              f"{pct(d.decode_fraction_of_bound)} of it: the rest is achieved bandwidth below the line rate (small "
              "messages of one token's activations), compute and communication that do not fully overlap, expert "
              "load imbalance (the busiest GPU sets the step), kernel launches and pipeline bubbles, and an average "
              "batch below the peak one (the node count follows the daily load). Prefill is bound by dispatch and "
              "combine over InfiniBand as well; the disclosed rate counts cache hits "
              f"({d.prefill_bound_tokens_per_s_per_node / 1e3:.0f}k computed tokens/s per node at the bound, / (1 - 0.563)).\n",
              f"**$ per million output tokens**, all at ${d.usd_per_gpu_hour:g}/GPU-hour: the note's method (decode "
              f"FLOP at the BF16 peak) ${d.usd_per_million_output_tokens_note_method:.3g}; the roofline bound "
              f"${d.usd_per_million_output_tokens_bound:.3g}; DeepSeek's achieved decode throughput "
              f"${d.usd_per_million_output_tokens_disclosed:.3g}; their whole day's cost ($87,072, prefill and idle "
              f"included) over output tokens ${d.usd_per_million_output_tokens_day_total:.3g}.\n",
              page.figure(deepseek_figure(d, ctx.figdir),
                   "DeepSeek's disclosed throughput vs the roofline bound in its layouts; data: "
                   "accounting.reproduce.deepseek.deepseek_disclosed_check (DEEPSEEK_SERVING)")]


def _note_case_d_part() -> list[str]:
    """The note's case D priced with the roofline."""
    rows = note_reproduction.note_case_d_roofline()
    return ["### The note's case D, recomputed\n",
              "The note puts inference for its case D at $1-2 per million tokens (arithmetic only). Its dense MHA "
              "shape at its own context, priced with the roofline (bf16, tensor-parallel over the smallest "
              "power-of-two replica that holds one sequence, at the largest batch that fits):\n",
              markdown([[r.case, si(r.context), si(r.total_params), r.gpus, f"{r.sequences_per_replica:g}",
                         _gb(r.kv_cache_bytes_per_sequence), r.bound,
                         f"${r.note_usd_per_million_tokens:.3g}", f"${r.usd_per_million_output_tokens:.4g}",
                         f"${r.usd_per_million_output_tokens_kv_floor:.4g}"] for r in rows],
                       ["case", "context", "params", "GPUs", "sequences", "KV cache / sequence", "binding",
                        "note's $/Mtok", "roofline $/Mtok", "KV-read floor $/Mtok"]),
              f"\nAt {si(rows[0].context)} tokens an MHA cache of {_gb(rows[0].kv_cache_bytes_per_sequence)} "
              "per sequence must be read for every generated token: that alone costs "
              f"${rows[0].usd_per_million_output_tokens_kv_floor:.0f} per million tokens on "
              f"{rows[0].hardware} at ${rows[0].usd_per_gpu_hour:g}/hour, whatever the batch. The note's $1-2 "
              "holds only for arithmetic; a 2025 model at that context needs a compressed cache (GQA, MLA) to get near it.\n"]


def _batch_sweep_part(page: Page, ctx: Context) -> list[str]:
    """$ per million output tokens against batch, per model."""
    df = batch_sweep()
    best = df[df["fits"]].loc[lambda x: x.groupby("model")["usd_per_mtok_out"].idxmin()]
    return ["### $ per million output tokens vs batch\n",
              f"{get_hardware(SWEEP['hw']).name}, {SWEEP['weights']} weights, {SWEEP['kv']} KV cache, context "
              f"{SWEEP['context']}, ${SWEEP['usd']:g}/GPU-hour; each model on the smallest power-of-two replica that "
              "holds one sequence per GPU (MoE: experts spread over it, the rest replicated; dense: tensor-parallel). "
              "Dense comparisons keep DeepSeek-V3's attention and widths with one FFN sized to its active or total "
              "parameter count (`accounting.serving.dense_equivalent`).\n",
              markdown([[r.model, r.gpus, r.batch, r.bound, f"${r.usd_per_mtok_out:.3g}", f"${r.note_usd:.3g}"]
                        for r in best.itertuples()],
                       ["model", "GPUs", "cheapest batch that fits", "binding", "$/Mtok out", "note's method"]),
              "",
              page.figure(usd_vs_batch_figure(df, ctx.figdir),
                   "$ per million output tokens vs batch (marker: binding regime; solid line: fits in HBM, dotted "
                   "line and hollow marker: does not fit; dashed: the note's compute-only method); data: "
                   "accounting.serving.serve")]
