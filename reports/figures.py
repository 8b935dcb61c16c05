"""One function per figure. Each takes DataFrames, writes ``<figdir>/<name>.png`` and returns its path,
or None when it has no data. Matplotlib Agg backend; colours from `reports.palette`."""
from __future__ import annotations

import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402

from . import palette as pal  # noqa: E402

sns.set_theme(style="whitegrid", context="notebook")


def _save(fig, figdir: Path, name: str) -> Path:
    figdir.mkdir(parents=True, exist_ok=True)
    path = figdir / f"{name}.png"
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def waterfall(steps, reported_usd: float, figdir: Path, reported_label: str = "reported") -> Path:
    """Cost after each correction, from the note's estimate to the reported cost (bars, log-free $M)."""
    fig, ax = plt.subplots(figsize=(11, 5.2))
    prev = 0.0
    labels = []
    for i, st in enumerate(steps):
        if i == 0:
            ax.bar(i, st.usd / 1e6, color=pal.WATERFALL["total"])
        else:
            lo, hi = sorted((prev, st.usd))
            ax.bar(i, (hi - lo) / 1e6, bottom=lo / 1e6,
                   color=pal.WATERFALL["up" if st.usd >= prev else "down"])
            ax.text(i, hi / 1e6 + 0.05, f"x{st.factor:.3g}", ha="center", va="bottom", fontsize=8)
        ax.hlines(st.usd / 1e6, i - 0.4, i + 1.4 if i + 1 < len(steps) else i + 0.4, color="k", lw=0.6)
        prev = st.usd
        labels.append(st.label)
    ax.bar(len(steps), reported_usd / 1e6, color=pal.FAMILY["deepseek"])
    labels.append(reported_label)
    ax.set_xticks(range(len(labels)), [_wrap(s, 15) for s in labels], fontsize=7)
    ax.set_ylabel("training cost (million USD)")
    ax.set_title("DeepSeek-V3 training cost: the note's estimate corrected step by step")
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
    """Log-log scatter of ``y`` against ``x``, one colour and marker per family, each point labelled."""
    for fam, g in costs.groupby("family"):
        key = "real MoE" if fam == "MoE" else "note (dense)"
        ax.scatter(g[x], g[y], color=pal.FAMILY[key], marker=pal.MARKER[key], s=45, label=fam)
        for _, r in g.iterrows():
            ax.annotate(r["model"], (r[x], r[y]), fontsize=7, xytext=(3, 3), textcoords="offset points")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel(x.replace("_", " ") + " (count)")
    ax.legend()


def cost_vs_params(costs: pd.DataFrame, figdir: Path) -> Path | None:
    """Training cost (Chinchilla tokens on total params) against total and active parameters."""
    if costs.empty:
        return None
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.8))
    for ax, x, y, title in ((axes[0], "total_params", "train_usd_total", "vs total parameters"),
                            (axes[1], "active_params", "train_usd_total", "vs active parameters"),
                            (axes[2], "active_params", "train_usd_active", "vs active, tokens = 20 x active")):
        _cost_scatter(ax, costs, x, y)
        ax.set_ylabel("training cost (USD)")
        ax.set_title(f"Training cost {title}")
    return _save(fig, figdir, "cost_vs_params")


def inference_cost(costs: pd.DataFrame, figdir: Path) -> Path | None:
    """Inference cost per million generated tokens against active and total parameters."""
    if costs.empty:
        return None
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.5))
    for ax, x in zip(axes, ("active_params", "total_params")):
        _cost_scatter(ax, costs, x, "infer_usd_per_mtok")
        ax.set_ylabel("inference cost (USD per million tokens)")
        ax.set_title(f"Decode cost vs {x.split('_')[0]} parameters")
    return _save(fig, figdir, "inference_cost")


def loss_curves(metrics: pd.DataFrame, figdir: Path) -> Path | None:
    """Training loss against tokens and against training FLOP, dense vs MoE."""
    if metrics.empty:
        return None
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    for ax, x, xl in ((axes[0], "tokens", "training tokens"), (axes[1], "train_flops", "training compute (FLOP, 2 per multiply-add)")):
        for i, (run, g) in enumerate(metrics.groupby("run")):
            g = g.sort_values("step")
            fam = g["family"].iloc[0]
            ax.plot(g[x], g["train_loss"], color=pal.family_colour(fam), lw=1.4, label=f"{run} (train)",
                    ls=pal.LINESTYLES[i % len(pal.LINESTYLES)])
            v = g.dropna(subset=["val_loss"])
            if not v.empty:
                ax.plot(v[x], v["val_loss"], "o", color=pal.family_colour(fam), ms=4)
        ax.set_xscale("log")
        ax.set_xlabel(xl)
        ax.set_ylabel("loss (nats per token; dots = validation)")
        ax.set_title(f"Loss vs {xl.split(' (')[0]}")
    axes[0].legend(fontsize=7)
    return _save(fig, figdir, "loss_curves")


def router_heatmap(loads: pd.DataFrame, run: str, figdir: Path, index: int) -> Path | None:
    """Expert x step load fraction, one panel per MoE layer, for one run."""
    g = loads[loads["run"] == run]
    if g.empty:
        return None
    layers = sorted(g["layer"].unique())
    fig, axes = plt.subplots(1, len(layers), figsize=(5 * len(layers), 3.8), squeeze=False)
    n_exp = int(g["expert"].max()) + 1
    for ax, layer in zip(axes[0], layers):
        m = g[g["layer"] == layer].pivot_table(index="expert", columns="step", values="load_fraction")
        sns.heatmap(m, ax=ax, cmap="viridis", vmin=0, vmax=max(2.0 / n_exp, float(m.max().max())),
                    cbar_kws={"label": "share of routed assignments"})
        ax.set_title(f"layer {layer}: load (uniform = {1 / n_exp:.3g})")
        ax.set_xlabel("training step")
        ax.set_ylabel("expert")
    fig.suptitle(f"Router load per expert: {run}")
    return _save(fig, figdir, f"router_load_{index}")


def maxvio(layers: pd.DataFrame, figdir: Path) -> Path | None:
    """MaxVio (max load / mean load - 1, mean over layers) over steps, per balancing method."""
    if layers.empty:
        return None
    g = layers.groupby(["run", "balancing", "step"], as_index=False)["max_vio"].mean()
    fig, ax = plt.subplots(figsize=(8, 4.5))
    for i, (run, r) in enumerate(g.groupby("run")):
        bal = r["balancing"].iloc[0]
        ax.plot(r["step"], r["max_vio"], color=pal.colour(pal.BALANCING, bal, i), label=f"{bal}: {run}", lw=1.4,
                ls=pal.LINESTYLES[i % len(pal.LINESTYLES)])
    ax.set_xlabel("training step")
    ax.set_ylabel("MaxVio (max/mean load - 1, mean over layers)")
    ax.set_title("Load imbalance over training by balancing method")
    ax.legend(fontsize=7)
    return _save(fig, figdir, "maxvio")


def throughput(bench: pd.DataFrame, figdir: Path) -> Path | None:
    """Achieved TFLOP/s and MFU (vs the CSV's measured matmul peak) per backend, layer and model rows."""
    b = bench[bench["kind"].isin(["layer", "model"]) & bench["tflops_per_s"].notna()].copy()
    if b.empty:
        return None
    b["config"] = "k=" + b["top_k"].fillna(0).astype(int).astype(str) + " T=" + b["tokens"].fillna(0).astype(int).astype(str)
    b["variant"] = [bk if bk == "dense" else f"{bk} E={int(e)}" for bk, e in zip(b["backend"], b["n_experts"].fillna(0))]
    kinds = [k for k in ("layer", "model") if k in set(b["kind"])]
    fig, axes = plt.subplots(len(kinds), 1, figsize=(12, 4.2 * len(kinds)), squeeze=False)
    for ax, kind in zip(axes[:, 0], kinds):
        g = b[b["kind"] == kind]
        order = list(dict.fromkeys(g.sort_values(["top_k", "tokens"])["config"]))
        hue_order = sorted(set(g["variant"]), key=lambda h: (h != "dense", h))
        others = iter(sns.color_palette("colorblind", 10)[1:] + sns.color_palette("dark", 10))
        colours = {h: pal.BACKEND["dense"] if h == "dense" else next(others) for h in hue_order}
        sns.barplot(g, x="config", y="tflops_per_s", hue="variant", order=order, hue_order=hue_order,
                    palette=colours, ax=ax, errorbar=None)
        ax.set_yscale("log")
        ax.set_ylabel("achieved TFLOP/s (accounting FLOP)")
        ax.set_xlabel("top-k and tokens per step (dense FFN width = k x expert width)")
        ax.tick_params(axis="x", rotation=30, labelsize=8)
        ax.legend(title="backend, experts", fontsize=7)
        ax.set_title(f"Throughput per backend, {kind} forward+backward ({', '.join(sorted(set(g['device_name'].astype(str))))})")
    return _save(fig, figdir, "throughput")


def decode(bench: pd.DataFrame, figdir: Path) -> Path | None:
    """Seconds per generated token: KV-cache decode vs full recompute, per context length."""
    d = bench[bench["kind"].isin(["decode", "recompute"]) & bench["median_s"].notna()]
    if d.empty:
        return None
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for i, (kind, g) in enumerate(d.groupby("kind")):
        g = g.sort_values("context")
        ax.plot(g["context"], g["median_s"] * 1e3, marker="o", label=kind, color=pal.colour({}, kind, i))
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("context length (tokens)")
    ax.set_ylabel("time per generated token (ms)")
    ax.set_title("Incremental decode vs full recompute")
    ax.legend()
    return _save(fig, figdir, "decode")


def table3_ratios(t3: pd.DataFrame, figdir: Path) -> Path | None:
    """Heatmap of computed / printed for every cell of the note's Table 3."""
    if t3 is None or t3.empty:
        return None
    m = t3.pivot_table(index="quantity", columns="case", values="ratio", sort=False)
    fig, ax = plt.subplots(figsize=(8, 5))
    lg = np.log2(m.astype(float))
    sns.heatmap(lg, annot=m.map(lambda v: "-" if pd.isna(v) else f"{v:.2f}"), fmt="", cmap="RdBu_r",
                center=0, vmin=-1, vmax=1, ax=ax, cbar_kws={"label": "log2(computed / printed)"})
    ax.set_title("Table 3: recomputed / printed")
    ax.set_xlabel("use case")
    ax.set_ylabel("")
    return _save(fig, figdir, "table3_ratios")


def mfu_by_family(runs_mfu: pd.DataFrame, figdir: Path) -> Path | None:
    """Median MFU per run, coloured by family (dense vs MoE)."""
    if runs_mfu.empty or runs_mfu["mfu"].isna().all():
        return None
    fig, ax = plt.subplots(figsize=(8, 4))
    r = runs_mfu.sort_values("family")
    ax.barh(r["run"], r["mfu"] * 100, color=[pal.family_colour(f) for f in r["family"]])
    ax.set_xlabel("MFU (% of the run's peak, median over logged steps)")
    ax.set_title("Model FLOP utilisation per training run")
    return _save(fig, figdir, "mfu_runs")


def is_finite(x) -> bool:
    try:
        return math.isfinite(float(x))
    except (TypeError, ValueError):
        return False
