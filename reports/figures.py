"""One function per figure. Each takes DataFrames, writes ``<figdir>/<name>.png`` and returns its path,
or None when it has no data. Matplotlib Agg backend; colours from `reports.palette`.

Figures are named after what they show (``router_load``, ``decode``, ...), never by a running index.
Before a figure is saved, `layout_problems` checks it: every text (titles, labels, tick labels, legends,
point labels) must lie inside the canvas, and no two point labels of a scatter may overlap; the problems
found are kept in ``LAYOUT_PROBLEMS[name]`` (empty when the figure is clean) for tests.
Figures are at most 11 inches wide at 110 dpi, so that REPORT.md's page width shows them near full size.
"""
from __future__ import annotations

import math
import textwrap
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402

from accounting.chinchilla import TOKENS_PER_PARAMETER  # noqa: E402

from . import palette as pal  # noqa: E402

sns.set_theme(style="whitegrid", context="notebook")

DPI = 110
POINT_LABEL = "point-label"
"""gid of the text of every point label drawn by `place_labels` (the overlap check looks for it)."""
LAYOUT_PROBLEMS: dict[str, list[str]] = {}


def _save(fig, figdir: Path, name: str, layout: bool = True) -> Path:
    figdir.mkdir(parents=True, exist_ok=True)
    path = figdir / f"{name}.png"
    if layout:
        fig.tight_layout()
    LAYOUT_PROBLEMS[name] = layout_problems(fig)
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
    return path


def drawn_texts(fig) -> list:
    """Draw ``fig`` at the saving resolution and return every non-empty text artist actually drawn
    (titles, axis and tick labels, legend entries, annotations; not ticks outside the view)."""
    from matplotlib.text import Text
    drawn, orig = [], Text.draw

    def record(self, renderer):
        orig(self, renderer)
        if self.get_visible() and self.get_text().strip():
            drawn.append(self)

    fig.set_dpi(DPI)
    Text.draw = record
    try:
        fig.canvas.draw()
    finally:
        Text.draw = orig
    return drawn


def layout_problems(fig) -> list[str]:
    """Texts that stick out of the canvas, and pairs of point labels (gid `POINT_LABEL`) that overlap;
    measured with the renderer's bounding boxes at the saving resolution."""
    from matplotlib.text import Text
    texts = drawn_texts(fig)
    r = fig.canvas.get_renderer()
    W, H = fig.bbox.width, fig.bbox.height
    out = []
    for t in texts:
        b = Text.get_window_extent(t, r)
        if b.x0 < -1 or b.y0 < -1 or b.x1 > W + 1 or b.y1 > H + 1:
            out.append(f"clipped: {t.get_text()!r} at x {b.x0:.0f}..{b.x1:.0f}, y {b.y0:.0f}..{b.y1:.0f} "
                       f"of {W:.0f} x {H:.0f}")
    for ax in fig.axes:
        labels = [t for t in ax.texts if t.get_gid() == POINT_LABEL and t.get_visible()]
        boxes = [Text.get_window_extent(t, r) for t in labels]
        for i in range(len(boxes)):
            for j in range(i + 1, len(boxes)):
                if boxes[i].overlaps(boxes[j]):
                    out.append(f"overlap: {labels[i].get_text()!r} and {labels[j].get_text()!r}")
    return out


def place_labels(ax, xs, ys, labels, fontsize: float = 8) -> None:
    """Label each point (data coordinates) without overlaps: for each point in turn, try offsets around it
    at growing distances and keep the first whose box stays inside the axes and clear of every label and
    marker placed so far; far offsets get a thin leader line. Call after the figure's layout is final."""
    from matplotlib.text import Text
    fig = ax.figure
    fig.set_dpi(DPI)
    fig.canvas.draw()
    r = fig.canvas.get_renderer()
    axbox = ax.get_window_extent(r)
    pts = ax.transData.transform(np.column_stack([np.asarray(xs, float), np.asarray(ys, float)]))
    pad = 4.0
    from matplotlib.transforms import Bbox
    markers = [Bbox.from_extents(px - pad, py - pad, px + pad, py + pad) for px, py in pts]
    taken: list = []
    dirs = [(1, 1, "left", "bottom"), (1, -1, "left", "top"), (-1, 1, "right", "bottom"), (-1, -1, "right", "top"),
            (0, 1, "center", "bottom"), (0, -1, "center", "top"), (1, 0, "left", "center"), (-1, 0, "right", "center")]
    order = np.argsort(-pts[:, 1])
    for i in order:
        (x, y), label = (xs[i], ys[i]), labels[i]
        best = None
        for dist in (4, 10, 18, 28, 40, 55):
            for dx, dy, ha, va in dirs:
                t = ax.annotate(label, (x, y), xytext=(dx * dist, dy * dist), textcoords="offset points",
                                ha=ha, va=va, fontsize=fontsize)
                t.update_positions(r)
                b = Text.get_window_extent(t, r)
                inside = (b.x0 >= axbox.x0 and b.x1 <= axbox.x1 and b.y0 >= axbox.y0 and b.y1 <= axbox.y1)
                clear = not any(b.overlaps(o) for o in taken) and \
                    not any(b.overlaps(m) for k, m in enumerate(markers) if k != i)
                t.remove()
                if inside and clear:
                    best = (dx, dy, ha, va, dist, b)
                    break
            if best:
                break
        if best is None:  # nowhere clear: the nearest spot; layout_problems reports the overlap
            best = (1, 1, "left", "bottom", 4, None)
        dx, dy, ha, va, dist, b = best
        arrow = {"arrowstyle": "-", "lw": 0.5, "color": "0.45", "shrinkA": 0, "shrinkB": 2} if dist > 10 else None
        t = ax.annotate(label, (x, y), xytext=(dx * dist, dy * dist), textcoords="offset points", ha=ha, va=va,
                        fontsize=fontsize, arrowprops=arrow)
        t.set_gid(POINT_LABEL)
        t.update_positions(r)
        taken.append(Text.get_window_extent(t, r))


def waterfall(steps, reported_usd: float, figdir: Path, reported_label: str = "reported") -> Path:
    """Cost after each correction, from the note's estimate to the reported cost (bars, log-free $M)."""
    from matplotlib.patches import Patch
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
    return _save(fig, figdir, "deepseek_waterfall")


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
    return _save(fig, figdir, name, layout=False)


def cost_vs_params(costs: pd.DataFrame, figdir: Path) -> Path | None:
    """Training cost (Chinchilla tokens on total params) against total and active parameters."""
    if costs.empty:
        return None
    return _scatter_figure(costs, (("total_params", "train_usd_total", "Training cost vs total parameters "
                                    f"(tokens = {TOKENS_PER_PARAMETER} x total)"),
                                   ("active_params", "train_usd_total", "Training cost vs active parameters "
                                    f"(tokens = {TOKENS_PER_PARAMETER} x total)"),
                                   ("active_params", "train_usd_active", "Training cost vs active parameters "
                                    f"(tokens = {TOKENS_PER_PARAMETER} x active)")),
                           "training cost (USD)", figdir, "cost_vs_params")


def inference_cost(costs: pd.DataFrame, figdir: Path) -> Path | None:
    """Inference cost per million generated tokens against active and total parameters."""
    if costs.empty:
        return None
    return _scatter_figure(costs, (("active_params", "infer_usd_per_mtok", "Decode cost vs active parameters"),
                                   ("total_params", "infer_usd_per_mtok", "Decode cost vs total parameters")),
                           "decode cost (USD per million tokens)", figdir, "inference_cost")


def loss_curves(metrics: pd.DataFrame, figdir: Path) -> Path | None:
    """Left: training loss against tokens (log x). Right: validation loss against training FLOP, where
    the runs differ. One colour per run."""
    if metrics.empty:
        return None
    runs = sorted(metrics["run"].unique())
    colours = pal.run_colours(runs)
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.4 + 0.25 * math.ceil(len(runs) / 2)))
    for i, run in enumerate(runs):
        g = metrics[metrics["run"] == run].sort_values("step")
        ls = pal.LINESTYLES[i % len(pal.LINESTYLES)]
        axes[0].plot(g["tokens"], g["train_loss"], color=colours[run], lw=1.3, alpha=0.85, label=run, ls=ls)
        v = g.dropna(subset=["val_loss"])
        if not v.empty:
            axes[1].plot(v["train_flops"], v["val_loss"], marker="o", ms=4, color=colours[run], lw=1.3, ls=ls)
    axes[0].set_xscale("log")
    axes[0].set_xlabel("training tokens")
    axes[0].set_ylabel("training loss (nats/token)")
    axes[0].set_title("Training loss vs tokens")
    axes[1].set_xlabel("training compute (FLOP, 2 per multiply-add)")
    axes[1].set_ylabel("validation loss (nats/token)")
    axes[1].set_title("Validation loss vs training compute")
    handles, labels = axes[0].get_legend_handles_labels()
    rows = math.ceil(len(runs) / 2)
    fig.legend(handles, labels, loc="lower center", ncol=2, fontsize=9, frameon=False)
    fig.tight_layout(rect=(0, 0.035 + 0.05 * rows, 1, 1))
    return _save(fig, figdir, "loss_curves", layout=False)


def router_heatmap(loads: pd.DataFrame, figdir: Path, runs: list[str] | None = None) -> Path | None:
    """Expert x step load fraction: one row per run, one column per MoE layer, ONE colour scale shared by
    every panel (0 to the largest share seen, at least twice the uniform share)."""
    runs = sorted(loads["run"].unique()) if runs is None else runs
    g = loads[loads["run"].isin(runs)]
    if g.empty:
        return None
    layers_of = {r: sorted(g[g["run"] == r]["layer"].unique()) for r in runs}
    ncol = max(len(v) for v in layers_of.values())
    n_exp = int(g["expert"].max()) + 1
    vmax = max(2.0 / n_exp, float(g["load_fraction"].max()))
    fig, axes = plt.subplots(len(runs), ncol, figsize=(10.5, 0.6 + 2.5 * len(runs)), squeeze=False)
    mappable = None
    for i, run in enumerate(runs):
        for j in range(ncol):
            ax = axes[i, j]
            if j >= len(layers_of[run]):
                ax.set_visible(False)
                continue
            layer = layers_of[run][j]
            m = g[(g["run"] == run) & (g["layer"] == layer)].pivot_table(index="expert", columns="step",
                                                                          values="load_fraction")
            sns.heatmap(m, ax=ax, cmap="viridis", vmin=0, vmax=vmax, cbar=False, xticklabels=max(1, m.shape[1] // 5))
            mappable = ax.collections[0]
            ax.set_title(f"{run}, layer {layer}", fontsize=9.5)
            ax.set_xlabel("training step" if i == len(runs) - 1 else "")
            ax.set_ylabel("expert")
            ax.tick_params(axis="x", rotation=0, labelsize=8)
            ax.tick_params(axis="y", labelsize=8)
    fig.suptitle(f"Router load: share of routed assignments per expert (uniform = {1 / n_exp:.3g})", fontsize=11)
    fig.tight_layout(rect=(0, 0, 0.9, 1))
    cax = fig.add_axes((0.915, 0.12, 0.015, 0.76))
    fig.colorbar(mappable, cax=cax, label="share of assignments (one scale)")
    return _save(fig, figdir, "router_load", layout=False)


def maxvio(layers: pd.DataFrame, figdir: Path) -> Path | None:
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
    return _save(fig, figdir, "maxvio")


def throughput(bench: pd.DataFrame, figdir: Path) -> Path | None:
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
    return _save(fig, figdir, "throughput")


def decode(bench: pd.DataFrame, figdir: Path) -> Path | None:
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
    return _save(fig, figdir, "decode")


def table3_ratios(t3: pd.DataFrame, figdir: Path) -> Path | None:
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
    return _save(fig, figdir, "table3_ratios")


def mfu_by_family(runs_mfu: pd.DataFrame, figdir: Path) -> Path | None:
    """Median MFU per run, coloured by family (dense vs MoE)."""
    if runs_mfu.empty or runs_mfu["mfu"].isna().all():
        return None
    r = runs_mfu.sort_values("run")
    fig, ax = plt.subplots(figsize=(9, 1.4 + 0.45 * len(r)))
    ax.barh(r["run"], r["mfu"] * 100, color=[pal.family_colour(f) for f in r["family"]])
    ax.invert_yaxis()
    ax.set_xlabel("MFU (% of the run's peak, median over logged steps)")
    ax.set_title("Model FLOP utilisation per training run (one run each, not paired)")
    return _save(fig, figdir, "mfu_runs")


def paired_ratio(rows: pd.DataFrame, summary: dict, figdir: Path, name: str, title: str) -> Path | None:
    """Per-repeat MoE/dense cost per FLOP of a paired benchmark (strip + box per MoE model), with the
    bootstrap interval of the median as a black bar; 1 = an MoE FLOP costs as much time as a dense FLOP."""
    r = rows[rows["model"] != "dense"] if not rows.empty else rows
    if r.empty:
        return None
    models = [m for m in summary.get("models", {}) if m != "dense"]
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
    ax.legend(loc="lower right", fontsize=9)
    return _save(fig, figdir, name)


def moe_layer_ratios(ratios: pd.DataFrame, figdir: Path, goal: dict[str, float],
                     labels: dict[str, str] | None = None, name: str = "moe_layer_ratios") -> Path | None:
    """``ours_grouped / other`` time ratios of one MoE-layer CSV (``reports.moe_layer.ratios``, with its
    ``config`` label column): median (point) and interquartile range (bar) per configuration; left panel against the floors (dense FFN, per-expert and dense GEMMs) with the
    issue-17 goal per shape as a dashed tick, right panel against earlier versions and peers."""
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
        ax.legend(fontsize=7.5, loc="lower right", framealpha=0.85)
    axes[0][0].set_yticks(range(len(configs)), configs, fontsize=8.5)
    axes[0][0].invert_yaxis()
    fig.suptitle("One MoE layer (forward + backward): our grouped backend against the same FLOP elsewhere "
                 "(dashed: the goal vs dense)", fontsize=10.5)
    return _save(fig, figdir, name)
