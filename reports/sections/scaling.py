"""The report's scaling section: published laws put to DeepSeek-V3 (accounting.scaling) and our own isoFLOP
measurement of dense vs MoE (reports/data/isoflop, fitted by experiments.fit_scaling).

Two figures: the isoFLOP curves (final validation loss against active parameters, one curve per budget,
dense and MoE, with each budget's parabola) and the leverage of our MoE over our dense model against the
budget (measured, with bootstrap intervals; the published MoE laws as lines at the same tiny scale).
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import seaborn as sns

from accounting.reproduce import deepseek
from accounting import scaling_cli
from experiments import fit_scaling

from ..context import Context
from ..layout import Drawn, plt, save
from ..palette import FAMILY, MARKER
from ..tables import markdown, si
from . import Page, Section

TITLE = "What is an expert worth? Scaling laws and our isoFLOP measurement"
DATA = Path("reports/data/isoflop")
FIT_CMD = "`python -m experiments.fit_scaling --collect runs` (after `python -m experiments.train -m experiment=isoflop_1e11 model=dense,moe` and the same for `isoflop_3e11`, `isoflop_1e12`)"
LAW_STYLE = {"clark2022": ":", "krajewski2024": "--", "abnar2025": "-.", "ludziejewski2025": (0, (5, 1, 1, 1))}
LAW_COLOUR = {"clark2022": 4, "krajewski2024": 2, "abnar2025": 3, "ludziejewski2025": 9}
"""Index into seaborn's colour-blind palette (0 and 1 are dense and MoE)."""


def deepseek_part() -> list[str]:
    """Every law's optimal tokens, leverage and extrapolation for DeepSeek-V3 on 14.8T tokens."""
    d = scaling_cli.deepseek_section(deepseek.deepseek_v3_shape(4096))
    t, a, g = d["token_bases"], d["optimal_tokens_all_laws"], d["disagreement_moe_laws"]
    rows = [["note: 20 x total (Chinchilla)", si(t["note_20x_total"]), "-", "-"],
            ["20 x active", si(t["20x_active"]), "-", "-"]]
    rows += [[r["law"], si(r["optimal_tokens"]) if r["optimal_tokens"] else "-",
              f"{r['leverage']:.3g}x" if r["leverage"] else "-", r["extrapolation"]["summary"]] for r in d["laws"]]
    rows.append(["reported by DeepSeek", si(t["reported"]), "-", "-"])
    return ["### Published laws put to DeepSeek-V3\n",
            "Each law (constants as printed; `accounting.scaling` cites the table for each) on DeepSeek-V3's shape "
            "and 14.8T tokens. Leverage = the compute a compute-optimal dense model needs, by the same paper's dense "
            "law, to reach the predicted loss, divided by the model's own training compute (mostly 6 N_active D). "
            "Optimal tokens: the compute-optimal split of DeepSeek-V3's own budget, its architecture ratios fixed. "
            "Dense laws see only the active parameters (their leverage <= 1 is the cost of the N/D split). "
            f"{d['note'].capitalize()}. `python -m accounting deepseek` prints the same table.\n",
            markdown(rows, ["basis / law", "optimal tokens", "leverage", "outside the fitted range"], "lrrl"),
            f"\nThe laws disagree: optimal tokens {si(a['min'])} to {si(a['max'])} (x{a['spread']:.3g}); the MoE "
            f"laws' leverage {g['leverage_min']:.3g}x to {g['leverage_max']:.3g}x (x{g['leverage_spread']:.3g}). "
            "Every one of them is extrapolated far beyond the models it was fitted on, so none of these numbers is "
            "a measurement of DeepSeek-V3.\n"]


def isoflop_figure(runs, fit: dict, figdir: Path) -> Drawn:
    """Loss vs active parameters per budget, dense (circles) and MoE (squares), with each parabola."""
    budgets = fit["budgets_flops"]
    fig, axes = plt.subplots(1, len(budgets), figsize=(4.2 * len(budgets), 3.8), sharey=True, squeeze=False)
    for ax, c in zip(axes[0], budgets):
        for fam in fit["families"]:
            sel = sorted((r for r in runs if r.family == fam and r.budget == c), key=lambda r: r.params_active)
            x = np.array([r.params_active for r in sel])
            y = np.array([r.loss for r in sel])
            ax.plot(x, y, MARKER.get(fam, "o"), color=FAMILY[fam], label=fam)
            coef = np.polyfit(np.log(x), y, 2)
            row = next(b for b in fit["approach2"][fam]["per_budget"] if b["budget_flops"] == c)
            xs = np.geomspace(min(x.min(), row["n_opt"]) / 1.3, max(x.max(), row["n_opt"]) * 1.3, 100)
            ax.plot(xs, np.polyval(coef, np.log(xs)), "-", color=FAMILY[fam], lw=1, alpha=0.7)
            ax.plot([row["n_opt"]], [row["loss_opt"]], "*", color=FAMILY[fam], ms=12, mec="black", mew=0.5)
        ax.set_xscale("log")
        ax.set_title(f"C = {c:.0e} FLOP")
        ax.set_xlabel("active parameters")
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("final validation loss (nats/token)")
    axes[0][0].legend(title="star: parabola vertex", loc="upper left")
    return save(fig, figdir, "isoflop_curves")


def leverage_figure(fit: dict, figdir: Path) -> Drawn:
    """Measured leverage of our MoE over our dense model vs budget (95% bootstrap intervals), published MoE laws
    as lines at the same models and tokens."""
    cb = sns.color_palette("colorblind", 10)
    fig, ax = plt.subplots(figsize=(7.2, 5.4))
    rows = fit["leverage"]["per_budget"]
    c = np.array([r["budget_flops"] for r in rows])
    v = np.array([r["leverage"] for r in rows])
    lo = np.array([r["interval"][0] for r in rows])
    hi = np.array([r["interval"][1] for r in rows])
    ax.errorbar(c, v, yerr=[v - lo, hi - v], fmt="s", color=FAMILY["moe"], capsize=4,
                label="measured: our MoE (E=8, k=2) over our dense")
    for law, style in LAW_STYLE.items():
        ys = [p["laws"].get(law, {}).get("leverage") for p in fit.get("published_at_our_scale", [])]
        if ys and all(y is not None for y in ys):
            ax.plot(c, ys, linestyle=style, marker=".", color=cb[LAW_COLOUR[law]], lw=1.6,
                    label=f"{law} (published, far outside its range)")
    ax.axhline(1, color="0.6", lw=0.8)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("training budget C (FLOP, 2 per multiply-add)")
    ax.set_ylabel("leverage (dense FLOP for equal loss / C)")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=2)
    return save(fig, figdir, "isoflop_leverage")


def measured_part(data: Path, page: Page, figdir: Path) -> list[str]:
    """Our isoFLOP study: per-budget optima with intervals, the fitted laws, and the leverage of MoE over dense."""
    fit_path = data / "fit.json"
    runs = fit_scaling.read_runs(data)
    if not runs or not fit_path.is_file():
        return [f"No fitted isoFLOP study under `{data}`; run {FIT_CMD}.\n"]
    fit = json.loads(fit_path.read_text())
    env = next((json.loads((Path(r.path) / "env.json").read_text()) for r in runs
                if (Path(r.path) / "env.json").is_file()), {})
    train_tokens = 2_406_746
    passes = max(r.tokens for r in runs) / train_tokens
    out_lines = ["### Our isoFLOP study: dense vs MoE on Shakespeare\n",
                 f"{len(runs)} runs of `experiments.train` (conf/experiment/isoflop_*.yaml), budgets "
                 f"{', '.join(f'{c:.0e}' for c in fit['budgets_flops'])} FLOP (the package's count, 2 per multiply-add); "
                 "sizes from the conf/size/iso*.yaml ladder; dense (GELU FFN 4d) and MoE (E = 8 experts of "
                 "width 2d, top-2: the same active FLOP); BPE vocabulary 512, windows of 128, 1,024 tokens per step, "
                 f"one seed; at most {passes:.2f} passes over the {train_tokens:,} training tokens. Loss: final "
                 f"validation loss on held-out works (32 x 8 windows). Environment: {env.get('device_name', '?')}, "
                 f"torch {env.get('torch', '?')}, 1 thread per job, commit {str(env.get('git_commit', '?'))[:10]}. "
                 f"Records: `{data}/` (isoflop_<budget>/<model>/<size>-seed0/); fit: `{fit_path}` "
                 f"({fit['bootstrap']} residual-bootstrap resamples, 95% intervals).\n"]
    rows = []
    for fam in fit["families"]:
        for b in fit["approach2"][fam]["per_budget"]:
            rows.append([fam, f"{b['budget_flops']:.0e}", si(b["n_opt"]),
                         f"{si(b['n_opt_interval'][0])}-{si(b['n_opt_interval'][1])}",
                         f"{b['loss_opt']:.3f}", f"{b['loss_opt_interval'][0]:.3f}-{b['loss_opt_interval'][1]:.3f}"])
    out_lines.append(markdown(rows, ["family", "budget", "N_opt (Approach 2)", "95%", "L_opt", "95%"], "lrrrrr"))
    ap = []
    for fam in fit["families"]:
        pl, a3 = fit["approach2"][fam]["n_opt_power_law"], fit["approach3"][fam]
        ap.append(f"- {fam}: Approach 2 N_opt ~ C^{pl['exponent']:.2f} (95% {pl['exponent_interval'][0]:.2f} to "
                  f"{pl['exponent_interval'][1]:.2f}); Approach 3 L = {a3['E']:.2f} + {a3['A']:.3g}/N^{a3['alpha']:.2f} "
                  f"+ {a3['B']:.3g}/D^{a3['beta']:.2f} (alpha 95% {a3['alpha_interval'][0]:.2f}-"
                  f"{a3['alpha_interval'][1]:.2f}, beta {a3['beta_interval'][0]:.2f}-{a3['beta_interval'][1]:.2f})")
    out_lines.append("\n" + "\n".join(ap) + "\n")
    drawn = isoflop_figure(runs, fit, figdir)
    page.record(drawn)
    out_lines.append(f"![isoFLOP curves](figures/{drawn.path.name})\n\n*Figure: final validation loss against active "
                     f"parameters at each budget, dense and MoE, with each budget's parabola in ln N and its vertex; "
                     f"data: {data}.*\n")
    if "leverage" in fit:
        out_lines += _leverage_part(fit, fit_path, page, figdir)
    return out_lines


def _leverage_part(fit: dict, fit_path: Path, page: Page, figdir: Path) -> list[str]:
    """The measured leverage of our MoE over our dense model per budget, beside the published MoE laws."""
    lv = fit["leverage"]
    pub = {p["budget_flops"]: p for p in fit.get("published_at_our_scale", [])}
    other = "vertex" if lv["method"] != "vertex" else "best_measured"
    rows = [[f"{r['budget_flops']:.0e}", f"{r['leverage']:.3g}x", f"{r['interval'][0]:.3g}-{r['interval'][1]:.3g}"]
            + [f"{pub[r['budget_flops']]['laws'][k]['leverage']:.3g}x"
               if pub.get(r["budget_flops"], {}).get("laws", {}).get(k, {}).get("leverage") else "-"
               for k in LAW_STYLE]
            + [f"{r['leverage_' + other]:.3g}x ({r['interval_' + other][0]:.3g}-{r['interval_' + other][1]:.3g})"]
            for r in lv["per_budget"]]
    drawn = leverage_figure(fit, figdir)
    page.record(drawn)
    return ["Leverage of our MoE over our dense model: the dense compute whose optimal loss (piecewise "
            "linear in ln C through the dense optima) equals the MoE's optimal loss at the budget, divided "
            f"by the budget. Optimum here: **{lv['method'].replace('_', ' ')}** ({lv['why']}); the other "
            "estimate is in the last columns. Published MoE laws at the same models and tokens (the best "
            "measured MoE size): all of them are orders of magnitude below the sizes they were fitted on.\n",
            markdown(rows, ["budget", "measured", "95%", *LAW_STYLE, f"measured ({other.replace('_', ' ')})"],
                     "lrr" + "r" * len(LAW_STYLE) + "r"),
            f"\n![leverage](figures/{drawn.path.name})\n\n*Figure: measured leverage with 95% bootstrap "
            f"intervals; lines: published MoE laws evaluated at our models; data: {fit_path}.*\n"]


def section(ctx: Context, data: str | Path = DATA) -> Section:
    """The scaling section (markdown with its ``## `` heading); the isoFLOP records are read from ``data``."""
    page = Page(f"## {TITLE}\n", *deepseek_part())
    try:
        page.add(*measured_part(Path(data), page, ctx.figdir))
    except Exception as e:  # noqa: BLE001  (a malformed record must not sink the report)
        page.add(f"The isoFLOP records under `{data}` could not be read: `{type(e).__name__}: {e}`\n")
    return page.section()
