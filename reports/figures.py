"""One function per figure. Each takes DataFrames, writes ``<figdir>/<name>.png`` and returns it
(`reports.layout.Drawn`: the path and its layout problems), or None when it has no data. Matplotlib Agg backend; colours from `reports.palette`.

Figures are named after what they show (``router_load``, ``decode``, ...), never by a running index.
Each is saved by `reports.layout.save`, which checks its layout and returns the path with the problems found.
Figures are at most 11 inches wide at 110 dpi, so that REPORT.md's page width shows them near full size.
"""
from __future__ import annotations

import math
import re
import textwrap
from pathlib import Path

import matplotlib.ticker as mticker
import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.patches import Patch
from matplotlib.transforms import ScaledTranslation

from accounting.chinchilla import TOKENS_PER_PARAMETER
from experiments.bench.paired import BASELINES

from . import palette as pal
from .layout import Drawn, place_labels, plt, save

def waterfall(steps, reported_usd: float, figdir: Path, reported_label: str = "reported") -> Drawn:
    """Cost after each correction, from the note's estimate to the reported cost (bars, log-free $M)."""
    fig, ax = plt.subplots(figsize=(11, 6.2))
    prev = 0.0
    labels = []
    top = max([st.usd for st in steps] + [reported_usd]) / 1e6
    for i, st in enumerate(steps):
        if i == 0:
            ax.bar(i, st.usd / 1e6, color=pal.WATERFALL["total"])
            ax.text(i, st.usd / 1e6 + 0.02 * top, f"${st.usd / 1e6:.2f}M", ha="center", va="bottom", fontsize=9)
        else:
            lo, hi = sorted((prev, st.usd))
            ax.bar(i, (hi - lo) / 1e6, bottom=lo / 1e6,
                   color=pal.WATERFALL["up" if st.usd >= prev else "down"])
            ax.text(i, hi / 1e6 + 0.02 * top, f"x{st.factor:.3g}\n${st.usd / 1e6:.2f}M", ha="center", va="bottom",
                    fontsize=9)
        ax.hlines(st.usd / 1e6, i - 0.4, i + 1.4 if i + 1 < len(steps) else i + 0.4, color="k", lw=0.6)
        prev = st.usd
        labels.append(st.label)
    ax.bar(len(steps), reported_usd / 1e6, color=pal.WATERFALL["reported"])
    ax.text(len(steps), reported_usd / 1e6 + 0.02 * top, f"${reported_usd / 1e6:.2f}M", ha="center", va="bottom",
            fontsize=9)
    labels.append(reported_label)
    ax.set_ylim(0, top * 1.22)
    ax.set_xticks(range(len(labels)), [_wrap(s, 14) for s in labels], fontsize=8.5)
    ax.set_ylabel("training cost (million USD)")
    ax.set_title("DeepSeek-V3 training cost: the note's estimate corrected step by step")
    ax.legend(handles=[Patch(color=pal.WATERFALL["total"], label="the note's estimate"),
                       Patch(color=pal.WATERFALL["up"], label="correction raises the cost"),
                       Patch(color=pal.WATERFALL["down"], label="correction lowers the cost"),
                       Patch(color=pal.WATERFALL["reported"], label="reported by DeepSeek")],
              loc="upper left", fontsize=9, ncol=2, framealpha=0.95)
    return save(fig, figdir, "deepseek_waterfall")


def _wrap(s: str, width: int) -> str:
    words, lines, cur = s.split(), [], ""
    for w in words:
        if len(cur) + len(w) + 1 > width and cur:
            lines.append(cur)
            cur = w
        else:
            cur = f"{cur} {w}".strip()
    return "\n".join(lines + [cur])


def _cost_scatter(ax, costs: pd.DataFrame, x: str, y: str) -> None:
    """Log-log scatter of ``y`` against ``x``, one colour and marker per family (labels placed later)."""
    for fam, g in costs.groupby("family"):
        key = "real MoE" if fam == "MoE" else "note (dense)"
        ax.scatter(g[x], g[y], color=pal.FAMILY[key], marker=pal.MARKER[key], s=45, label=fam, zorder=3)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.margins(x=0.25, y=0.3)
    ax.set_xlabel(x.replace("_", " ") + " (count)")
    ax.legend(loc="lower right", fontsize=9)


def _scatter_figure(costs: pd.DataFrame, panels, ylabel: str, figdir: Path, name: str) -> Path:
    fig, axes = plt.subplots(len(panels), 1, figsize=(9, 4.6 * len(panels)), squeeze=False)
    for ax, (x, y, title) in zip(axes[:, 0], panels):
        _cost_scatter(ax, costs, x, y)
        ax.set_ylabel(ylabel)
        ax.set_title(title)
    fig.tight_layout()
    for ax, (x, y, _) in zip(axes[:, 0], panels):
        place_labels(ax, list(costs[x]), list(costs[y]), list(costs["model"]), fontsize=8.5)
    return save(fig, figdir, name, layout=False)


def cost_vs_params(costs: pd.DataFrame, figdir: Path, price: str) -> Drawn | None:
    """Training cost against parameters, side by side for the two token budgets (Chinchilla tokens on total
    or on active parameters): each MoE is a filled marker at its total and a hollow one at its active
    parameters, joined; a dense model is one filled marker. ``price`` (the $/GPU-hour, hardware and MFU) is
    stated in the title."""
    if costs.empty:
        return None
    fig, axes = plt.subplots(1, 2, figsize=(11, 5.6), sharey=True)
    for ax, y, basis in zip(axes, ("train_usd_total", "train_usd_active"), ("total", "active")):
        for fam, g in costs.groupby("family"):
            key = "real MoE" if fam == "MoE" else "note (dense)"
            colour, marker = pal.FAMILY[key], pal.MARKER[key]
            moe = fam == "MoE"  # a dense model's active count differs from its total only by embedding rows
            for r in g.itertuples() if moe else ():
                ax.plot([r.active_params, r.total_params], [getattr(r, y)] * 2, color=colour, lw=1, alpha=0.6)
            ax.scatter(g["total_params"], g[y], color=colour, marker=marker, s=40, zorder=3,
                       label=f"{fam}: total parameters")
            if moe:
                ax.scatter(g["active_params"], g[y], facecolors="white", edgecolors=[colour], marker=marker, s=40,
                           zorder=3, label=f"{fam}: active parameters")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.margins(x=0.12, y=0.12)
        ax.set_xlabel("parameters (count)")
        ax.set_title(f"tokens = {TOKENS_PER_PARAMETER} x {basis} parameters", fontsize=10)
    axes[0].set_ylabel("training cost (USD)")
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=len(labels), fontsize=9, frameon=False)
    fig.suptitle(f"Training cost against total and active parameters, priced at {price}", fontsize=10.5)
    fig.tight_layout(rect=(0, 0.06, 1, 1))
    for ax, y in zip(axes, ("train_usd_total", "train_usd_active")):
        moe = costs[costs["family"] == "MoE"]
        place_labels(ax, list(costs["total_params"]), list(costs[y]), list(costs["model"]), fontsize=7.5,
                     avoid=list(zip(moe["active_params"], moe[y])))
    return save(fig, figdir, "cost_vs_params", layout=False)


def inference_cost(costs: pd.DataFrame, figdir: Path) -> Drawn | None:
    """Inference cost per million generated tokens against active and total parameters."""
    if costs.empty:
        return None
    return _scatter_figure(costs, (("active_params", "infer_usd_per_mtok", "Decode cost vs active parameters"),
                                   ("total_params", "infer_usd_per_mtok", "Decode cost vs total parameters")),
                           "decode cost (USD per million tokens)", figdir, "inference_cost")


def _configurations(metrics: pd.DataFrame) -> dict[str, str]:
    """Run key without its seed -> a reader's label: '<model>, <size>' (plus the sweep's tags, and the
    experiment when several are shown)."""
    keys = sorted({re.sub(r"-seed\d+", "", str(r)) for r in metrics["run"].unique()},
                  key=lambda k: (k.split("/")[1:2] != ["dense"], k))
    experiments = {k.split("/")[0] for k in keys}
    out = {}
    for k in keys:
        exp, model, rest = (k.split("/", 2) + ["", ""])[:3]
        size, _, tags = rest.partition(",")
        label = f"{model}, {size}" + (f" ({tags.replace(',', ', ')})" if tags else "")
        out[k] = f"{exp}: {label}" if len(experiments) > 1 else label
    return out


def _si_scale(x: float) -> tuple[float, str]:
    """(scale, prefix) of the SI unit in which ``x`` reads between 1 and 1000 (k to E)."""
    exp = max(0, min(18, 3 * int(math.floor(math.log10(max(abs(x), 1.0)) / 3))))
    return 10.0 ** exp, {0: "", 3: "k", 6: "M", 9: "G", 12: "T", 15: "P", 18: "E"}[exp]


def loss_curves(metrics: pd.DataFrame, figdir: Path) -> Drawn | None:
    """Left: training loss against tokens (millions, log x). Right: validation loss against training FLOP
    (in an SI unit), where the runs differ. One colour and line style per configuration (model and size);
    the line is the mean over its seeds and, where it has several, the band spans their minimum to maximum."""
    if metrics.empty:
        return None
    m = metrics.assign(config=metrics["run"].map(lambda r: re.sub(r"-seed\d+", "", str(r))))
    configs = _configurations(m)
    colours = dict(zip(configs, pal.DISTINCT * (len(configs) // len(pal.DISTINCT) + 1)))
    flop_scale, flop_prefix = _si_scale(float(m["train_flops"].max()))
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.6 + 0.25 * math.ceil(len(configs) / 3)))
    for i, (key, label) in enumerate(configs.items()):
        g = m[m["config"] == key]
        seeds = g["run"].nunique()
        style = dict(color=colours[key], ls=pal.LINESTYLES[i % len(pal.LINESTYLES)], lw=1.4)
        t = g.groupby("step").agg(x=("tokens", "mean"), lo=("train_loss", "min"), mid=("train_loss", "mean"),
                                  hi=("train_loss", "max"))
        axes[0].plot(t["x"] / 1e6, t["mid"], alpha=0.9, label=f"{label} ({seeds} seed{'s' if seeds > 1 else ''})",
                     **style)
        v = g.dropna(subset=["val_loss"]).groupby("step").agg(
            x=("train_flops", "mean"), lo=("val_loss", "min"), mid=("val_loss", "mean"), hi=("val_loss", "max"))
        if not v.empty:
            axes[1].plot(v["x"] / flop_scale, v["mid"], marker="o", ms=4, **style)
        if seeds > 1:
            axes[0].fill_between(t["x"] / 1e6, t["lo"], t["hi"], color=colours[key], alpha=0.2, lw=0)
            axes[1].fill_between(v["x"] / flop_scale, v["lo"], v["hi"], color=colours[key], alpha=0.2, lw=0)
    axes[0].set_xscale("log")
    axes[0].xaxis.set_major_locator(mticker.LogLocator(subs=(1, 2, 5)))
    axes[0].xaxis.set_major_formatter(mticker.FuncFormatter(lambda x, _: f"{x:g}"))
    axes[0].xaxis.set_minor_formatter(mticker.NullFormatter())
    axes[0].set_xlabel("training tokens (millions)")
    axes[0].set_ylabel("training loss (nats/token)")
    axes[0].set_title("Training loss vs tokens")
    axes[1].set_xlabel(f"training compute ({flop_prefix}FLOP, 2 per multiply-add)")
    axes[1].set_ylabel("validation loss (nats/token)")
    axes[1].set_title("Validation loss vs training compute")
    handles, labels = axes[0].get_legend_handles_labels()
    rows = math.ceil(len(configs) / 3)
    fig.legend(handles, labels, loc="lower center", ncol=3, fontsize=9, frameon=False,
               title="model, size (seeds; line: mean over seeds, band: min to max where there are several)",
               title_fontsize=9)
    fig.tight_layout(rect=(0, 0.06 + 0.05 * rows, 1, 1))
    return save(fig, figdir, "loss_curves", layout=False)


def router_heatmap(loads: pd.DataFrame, figdir: Path, runs: list[str] | None = None) -> Drawn | None:
    """Expert x step load fraction: one panel per (MoE run, MoE layer), two per row, ONE colour scale shared
    by every panel (0 to the largest share seen, at least twice the uniform share); steps on a numeric axis."""
    runs = sorted(loads["run"].unique()) if runs is None else runs
    g = loads[loads["run"].isin(runs)]
    if g.empty:
        return None
    panels = [(r, layer) for r in runs for layer in sorted(g[g["run"] == r]["layer"].unique())]
    ncol = 1 if len(panels) == 1 else 2
    nrow = math.ceil(len(panels) / ncol)
    n_exp = int(g["expert"].max()) + 1
    vmax = max(2.0 / n_exp, float(g["load_fraction"].max()))
    fig, axes = plt.subplots(nrow, ncol, figsize=(10.5, 0.6 + 2.5 * nrow), squeeze=False)
    for ax in axes.flat[len(panels):]:
        fig.delaxes(ax)
    image = None
    for i, (ax, (run, layer)) in enumerate(zip(axes.flat, panels)):
        m = g[(g["run"] == run) & (g["layer"] == layer)].pivot_table(index="expert", columns="step",
                                                                      values="load_fraction")
        steps = m.columns.to_numpy(float)
        half = (steps[1] - steps[0]) / 2 if len(steps) > 1 else 0.5
        image = ax.imshow(m.to_numpy(), aspect="auto", cmap="viridis", vmin=0, vmax=vmax, interpolation="nearest",
                          extent=(steps[0] - half, steps[-1] + half, n_exp - 0.5, -0.5))
        ax.grid(False)
        ax.xaxis.set_major_locator(mticker.MaxNLocator(nbins=6, integer=True, steps=[1, 2, 2.5, 5, 10]))
        ax.set_yticks(range(n_exp))
        ax.set_title(f"{run}, layer {layer}", fontsize=9.5)
        ax.set_xlabel("training step" if i >= len(panels) - ncol else "")
        ax.set_ylabel("expert")
        ax.tick_params(axis="both", labelsize=8)
    fig.suptitle(f"Router load: share of routed assignments per expert (uniform = {1 / n_exp:.3g})", fontsize=11)
    fig.tight_layout(rect=(0, 0, 0.9, 1))
    cax = fig.add_axes((0.915, 0.12, 0.015, 0.76))
    fig.colorbar(image, cax=cax, label="share of assignments (one scale)")
    return save(fig, figdir, "router_load", layout=False)


def maxvio(layers: pd.DataFrame, figdir: Path) -> Drawn | None:
    """MaxVio (max load / mean load - 1, mean over layers) over steps, per balancing method."""
    if layers.empty:
        return None
    g = layers.groupby(["run", "balancing", "step"], as_index=False)["max_vio"].mean()
    runs = sorted(g["run"].unique())
    colours = pal.run_colours(runs)
    fig, ax = plt.subplots(figsize=(10, 4.8))
    for i, run in enumerate(runs):
        r = g[g["run"] == run]
        bal = r["balancing"].iloc[0]
        ax.plot(r["step"], r["max_vio"], color=colours[run], label=f"{run} ({bal})", lw=1.4,
                ls=pal.LINESTYLES[i % len(pal.LINESTYLES)])
    ax.set_xlabel("training step")
    ax.set_ylabel("MaxVio = max load / mean load - 1\n(mean over MoE layers)")
    ax.set_title("Load imbalance over training by balancing method")
    ax.legend(fontsize=9, loc="upper left", bbox_to_anchor=(1.01, 1), title="run (balancing)")
    return save(fig, figdir, "maxvio")


def throughput(bench: pd.DataFrame, figdir: Path) -> Drawn | None:
    """Achieved TFLOP/s and MFU (vs the CSV's measured matmul peak) per backend, layer and model rows."""
    b = bench[bench["kind"].isin(["layer", "model"]) & bench["tflops_per_s"].notna()].copy()
    if b.empty:
        return None
    b["config"] = "k=" + b["top_k"].fillna(0).astype(int).astype(str) + " T=" + b["tokens"].fillna(0).astype(int).astype(str)
    b["variant"] = [bk if bk == "dense" else f"{bk} E={int(e)}" for bk, e in zip(b["backend"], b["n_experts"].fillna(0))]
    b["source"] = b["source"] if "source" in b else "bench"
    panels = [(src, k) for src in sorted(set(b["source"])) for k in ("layer", "model")
              if ((b["source"] == src) & (b["kind"] == k)).any()]
    hue_order = sorted(set(b["variant"]), key=lambda h: (h != "dense", h))
    others = iter(sns.color_palette("colorblind", 10)[1:] + sns.color_palette("dark", 10))
    colours = {h: pal.BACKEND["dense"] if h == "dense" else next(others) for h in hue_order}
    fig, axes = plt.subplots(len(panels), 1, figsize=(10.5, 3.9 * len(panels)), squeeze=False)
    for ax, (src, kind) in zip(axes[:, 0], panels):
        g = b[(b["source"] == src) & (b["kind"] == kind)]
        order = list(dict.fromkeys(g.sort_values(["top_k", "tokens"])["config"]))
        hues = [h for h in hue_order if h in set(g["variant"])]
        sns.barplot(g, x="config", y="tflops_per_s", hue="variant", order=order, hue_order=hues,
                    palette=colours, ax=ax, errorbar=None)
        ax.set_ylabel("achieved TFLOP/s\n(accounting FLOP)")
        ax.set_xlabel("top-k and tokens per step (dense FFN width = k x expert width)")
        ax.tick_params(axis="x", labelsize=9)
        ax.legend(title="backend, experts", fontsize=9, loc="upper left", bbox_to_anchor=(1.01, 1))
        dev = ", ".join(sorted(set(g["device_name"].astype(str))))
        ax.set_title("\n".join(textwrap.wrap(f"{kind} forward+backward, {src} ({dev})", 80)), fontsize=10.5)
    fig.suptitle("Throughput per backend, one panel per CSV and kind", fontsize=11.5)
    return save(fig, figdir, "throughput")


def decode(bench: pd.DataFrame, figdir: Path) -> Drawn | None:
    """Seconds per generated token: KV-cache decode vs full recompute, per context length."""
    d = bench[bench["kind"].isin(["decode", "recompute"]) & bench["median_s"].notna()]
    if d.empty:
        return None
    d = d.copy()
    if "source" not in d:
        d["source"] = "bench"
    sources = sorted(set(d["source"]))
    fig, ax = plt.subplots(figsize=(9, 5))
    markers = {"decode": "o", "recompute": "s"}
    for si, src in enumerate(sources):
        for kind in ("decode", "recompute"):
            g = d[(d["source"] == src) & (d["kind"] == kind)].sort_values("context")
            if g.empty:
                continue
            g = g.groupby("context", as_index=False)["median_s"].median()
            label = ("KV-cache decode" if kind == "decode" else "full recompute") + \
                (f", {src}" if len(sources) > 1 else "")
            ax.plot(g["context"], g["median_s"] * 1e3, marker=markers[kind], label=label,
                    color=pal.colour(pal.DECODE, kind, si) if si == 0 else pal.colour({}, f"{src}{kind}", 2 * si + (kind == "recompute")),
                    ls=pal.LINESTYLES[si % len(pal.LINESTYLES)])
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ctx = sorted(set(d["context"].dropna().astype(int)))
    ax.set_xticks(ctx, [str(c) for c in ctx])
    ax.set_xlabel("context length (tokens)")
    ax.set_ylabel("time per generated token (ms)")
    ax.set_title("Incremental decode vs full recompute")
    ax.legend(fontsize=9, loc="upper left")
    return save(fig, figdir, "decode")


def table3_ratios(t3: pd.DataFrame, figdir: Path) -> Drawn | None:
    """Heatmap of computed / printed for every cell of the note's Table 3."""
    if t3 is None or t3.empty:
        return None
    m = t3.pivot_table(index="quantity", columns="case", values="ratio", sort=False)
    fig, ax = plt.subplots(figsize=(9, 5.5))
    lg = np.log2(m.astype(float))
    # Symmetric limits put 0 (ratio 1) at the diverging map's centre. No `center=` argument: with it,
    # seaborn 0.13 calls Colormap.set_bad, which matplotlib >= 3.10 marks as pending deprecation.
    sns.heatmap(lg, annot=m.map(lambda v: "-" if pd.isna(v) else f"{v:.2f}"), fmt="", cmap="RdBu_r",
                vmin=-1, vmax=1, ax=ax, cbar_kws={"label": "log2(computed / printed)"})
    ax.set_title("Table 3: recomputed / printed")
    ax.set_xlabel("use case")
    ax.set_ylabel("")
    return save(fig, figdir, "table3_ratios")


def mfu_by_family(runs_mfu: pd.DataFrame, figdir: Path) -> Drawn | None:
    """Median MFU per run, coloured by family (dense vs MoE)."""
    if runs_mfu.empty or runs_mfu["mfu"].isna().all():
        return None
    r = runs_mfu.sort_values("run")
    fig, ax = plt.subplots(figsize=(9, 1.4 + 0.45 * len(r)))
    ax.barh(r["run"], r["mfu"] * 100, color=[pal.family_colour(f) for f in r["family"]])
    ax.invert_yaxis()
    ax.set_xlabel("MFU (% of the run's peak, median over logged steps)")
    ax.set_title("Model FLOP utilisation per training run (one run each, not paired)")
    return save(fig, figdir, "mfu_runs")


def paired_ratio(rows: pd.DataFrame, summary: dict, figdir: Path, name: str, title: str) -> Drawn | None:
    """Per-repeat MoE/dense cost per FLOP of a paired benchmark (strip + box per MoE model), with the
    bootstrap interval of the median as a black bar; 1 = an MoE FLOP costs as much time as a dense FLOP."""
    r = rows[~rows["model"].isin(BASELINES)] if not rows.empty else rows
    if r.empty:
        return None
    models = [m for m in summary.get("models", {}) if m not in BASELINES]
    fig, ax = plt.subplots(figsize=(9, 1.8 + 0.9 * len(models)))
    lo_q, hi_q = r["cost_ratio_vs_dense"].quantile([0.01, 0.99])
    state = np.random.get_state()
    np.random.seed(0)  # seaborn's jitter draws from numpy's global generator: the same PNG on every rebuild
    try:
        sns.stripplot(r, x="cost_ratio_vs_dense", y="model", order=models, ax=ax, size=2.5, alpha=0.35,
                      color=pal.FAMILY["moe"], jitter=0.25)
    finally:
        np.random.set_state(state)
    for i, m in enumerate(models):
        s = summary["models"][m]
        ax.errorbar([s["cost_ratio_median"]], [i], xerr=[[s["cost_ratio_median"] - s["cost_ratio_low"]],
                                                         [s["cost_ratio_high"] - s["cost_ratio_median"]]],
                    fmt="o", color="k", ms=6, capsize=6, lw=2, zorder=5,
                    label="median, 95% bootstrap interval" if i == 0 else None)
    ax.axvline(1.0, color="0.4", ls="--", lw=1)
    ax.set_xlim(min(0.9, lo_q * 0.95), hi_q * 1.05)
    ax.set_xlabel("MoE / dense time per training FLOP, per repeat (1 = same cost per FLOP)")
    ax.set_ylabel("")
    ax.set_title(title, fontsize=10.5)
    ax.legend(loc="upper right", bbox_to_anchor=(1, -0.2), fontsize=9, frameon=False)  # below, clear of the repeats
    return save(fig, figdir, name)


def moe_layer_ratios(ratios: pd.DataFrame, figdir: Path, goal: dict[str, float],
                     labels: dict[str, str] | None = None, name: str = "moe_layer_ratios") -> Drawn | None:
    """``ours_grouped / other`` time ratios of one MoE-layer CSV (``reports.moe_layer.ratios``, with its
    ``config`` label column): median (point) and interquartile range (bar) per configuration; left panel against the floors (dense FFN, per-expert and dense GEMMs) with the
    goal per shape as a dashed tick, right panel against earlier versions and peers."""
    if ratios.empty:
        return None
    configs = list(dict.fromkeys(ratios["config"]))
    floors = ["dense", "grouped_matmul", "matmul"]
    panels = [("against the floors of the same FLOP", [v for v in floors if v in set(ratios["vs"])]),
              ("against earlier code and peers (same weights)",
               [v for v in dict.fromkeys(ratios["vs"]) if v not in floors and v != "ours_loop"])]
    panels = [(t, vs) for t, vs in panels if vs]
    fig, axes = plt.subplots(1, len(panels), figsize=(10.5, 1.6 + 0.42 * len(configs)), sharey=True, squeeze=False)
    colours = sns.color_palette("colorblind", 10)
    for ax, (title, vs_list) in zip(axes[0], panels):
        n = len(vs_list)
        for j, vs in enumerate(vs_list):
            r = ratios[ratios["vs"] == vs].set_index("config").reindex(configs)
            y = np.arange(len(configs)) + (j - (n - 1) / 2) * 0.8 / max(n, 1)
            ok = r["median"].notna().to_numpy()
            ax.errorbar(r["median"][ok], y[ok], xerr=[(r["median"] - r["q1"])[ok], (r["q3"] - r["median"])[ok]],
                        fmt="o", ms=4, capsize=2, lw=1.2, color=colours[j % 10], label=(labels or {}).get(vs, vs))
        if "dense" in vs_list:
            for i, c in enumerate(configs):
                g = goal.get(c.split()[0])
                if g is not None:
                    ax.plot([g, g], [i - 0.45, i + 0.45], color="0.3", ls="--", lw=1)
        ax.axvline(1.0, color="0.5", lw=1)
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("time ratio, ours_grouped / other (median, IQR)")
        below = ax.transAxes + ScaledTranslation(0, -0.5, fig.dpi_scale_trans)  # under the x label, any height
        ax.legend(fontsize=7.5, loc="upper center", bbox_to_anchor=(0.5, 0), bbox_transform=below, frameon=False,
                  ncol=2)
    axes[0][0].set_yticks(range(len(configs)), configs, fontsize=8.5)
    axes[0][0].invert_yaxis()
    fig.suptitle("One MoE layer (forward + backward): our grouped backend against the same FLOP elsewhere "
                 "(dashed: the goal vs dense)", fontsize=10.5)
    return save(fig, figdir, name)
