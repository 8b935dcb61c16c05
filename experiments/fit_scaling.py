"""Fit the isoFLOP study (conf/experiment/isoflop_*.yaml) and measure what our experts are worth.

    python -m experiments.fit_scaling [--runs reports/data/isoflop] [--collect runs] [--bootstrap 200]
                                      [--out reports/data/isoflop/fit.json]

``--collect DIR`` first copies every finished job's records (metrics.jsonl, config.yaml, env.json,
summary.json; never checkpoints) from ``DIR/isoflop_*/<model>/<size>-seed<s>/`` into ``--runs``.

Fits (scipy), each with bootstrap intervals (residual bootstrap: the fitted values plus resampled residuals):

* **Approach 2** (Hoffmann et al. 2022): per family and budget, a parabola of the final validation loss in
  ``ln N`` (N = active parameters); its vertex gives ``N_opt(C)`` and ``L_opt(C)``; ``N_opt = k C^a``
  across budgets.
* **Approach 3**: ``L = E + A / N^alpha + B / D^beta`` per family, by the Huber loss (delta 1e-3) on the
  residuals of ``ln L`` with ``ln L_pred = logsumexp(ln A - alpha ln N, ln B - beta ln D, ln E)``, minimised
  by L-BFGS-B from a grid of starts, as Epoch's replication of Chinchilla does (Besiroglu et al. 2024).
* **Measured leverage** of the MoE over the dense model at each budget C: the dense envelope
  ``L_opt,dense(C)`` (piecewise linear in ln C through the dense parabola vertices, extended linearly past
  the ends) gives the dense compute ``C_eq`` that reaches the MoE's ``L_opt,moe(C)``; leverage = ``C_eq / C``.
  When a parabola vertex falls outside the sampled sizes, the headline uses each family's best measured
  size per budget instead (both are reported). Published MoE laws are put to the same tiny models (the best
  measured MoE size at each budget).

Compute C is the package's own count (accounting's training FLOP, 2 per multiply-add, 3 x forward,
full n x n attention), the budget each job trained to (``train.flops_budget``).
"""
from __future__ import annotations

import argparse
import json
import math
import shutil
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import yaml

from accounting import scaling_evaluation as S
from accounting.cli import load_config

RECORD_FILES = ("metrics.jsonl", "config.yaml", "env.json", "summary.json")
DEFAULT_RUNS = Path("reports/data/isoflop")
HUBER_DELTA = 1e-3


# ----- reading runs -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Run:
    """One finished isoFLOP job: family (dense/moe), budget C (FLOP), size label, active and total
    parameters, tokens trained, the package's training FLOP, final validation loss (nats/token)."""

    family: str
    budget: float
    size: str
    params_active: float
    params_total: float
    tokens: float
    flops: float
    loss: float
    path: str


def read_runs(root: Path) -> list[Run]:
    """Every completed job under ``root/isoflop_*/<model>/<size>-seed*/`` (summary.json + config.yaml)."""
    runs = []
    for summary in sorted(Path(root).glob("isoflop_*/*/*/summary.json")):
        s = json.loads(summary.read_text())
        if s.get("status") != "completed" or s.get("final_val_loss") is None:
            continue
        cfg = yaml.safe_load((summary.parent / "config.yaml").read_text())
        runs.append(Run(cfg["model"]["name"], float(cfg["train"]["flops_budget"]), cfg["model"]["size"],
                        float(s["parameters_active"]), float(s["parameters_total"]), float(s["tokens"]),
                        float(s["train_flops"]), float(s["final_val_loss"]), str(summary.parent)))
    return runs


def collect(src: Path, dst: Path) -> int:
    """Copy the records of every finished job under ``src/isoflop_*`` into ``dst`` (same layout)."""
    n = 0
    for summary in sorted(Path(src).glob("isoflop_*/*/*/summary.json")):
        if json.loads(summary.read_text()).get("status") != "completed":
            continue
        rel = summary.parent.relative_to(src)
        (dst / rel).mkdir(parents=True, exist_ok=True)
        for f in RECORD_FILES:
            if (summary.parent / f).is_file():
                shutil.copy2(summary.parent / f, dst / rel / f)
        n += 1
    return n


# ----- Approach 2 -------------------------------------------------------------------------------------
def parabola_vertex(log_n: np.ndarray, loss: np.ndarray) -> tuple[float, float, float]:
    """Least-squares ``L = a x^2 + b x + c`` in ``x = ln N``: (ln N_opt, L_opt, a); a <= 0 means no minimum."""
    a, b, c = np.polyfit(log_n, loss, 2)
    if a <= 0:
        i = int(np.argmin(loss))
        return float(log_n[i]), float(loss[i]), float(a)
    x = -b / (2 * a)
    return float(x), float(c - b * b / (4 * a)), float(a)


def power_law(x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """``y = k x^e`` by least squares in logs: (k, e)."""
    e, lk = np.polyfit(np.log(x), np.log(y), 1)
    return float(math.exp(lk)), float(e)


# ----- Approach 3 -------------------------------------------------------------------------------------
def _huber(r: np.ndarray, delta: float) -> np.ndarray:
    a = np.abs(r)
    return np.where(a <= delta, 0.5 * r * r, delta * (a - 0.5 * delta))


def _objective(theta: np.ndarray, log_n: np.ndarray, log_d: np.ndarray, log_l: np.ndarray, delta: float):
    la, lb, le, alpha, beta = theta
    terms = np.stack([la - alpha * log_n, lb - beta * log_d, np.full_like(log_n, le)])
    m = terms.max(axis=0)
    w = np.exp(terms - m)
    s = w.sum(axis=0)
    pred = m + np.log(s)
    r = pred - log_l
    a = np.abs(r)
    dh = np.where(a <= delta, r, delta * np.sign(r))  # d huber / d r
    p = w / s  # softmax weights = d pred / d term
    grad = np.array([np.sum(dh * p[0]), np.sum(dh * p[1]), np.sum(dh * p[2]),
                     np.sum(dh * p[0] * -log_n), np.sum(dh * p[1] * -log_d)])
    return float(np.sum(_huber(r, delta))), grad


START_GRID = {"alpha": (0.0, 0.5, 1.0, 1.5, 2.0), "beta": (0.0, 0.5, 1.0, 1.5, 2.0),
              "e": (-1.0, -0.5, 0.0, 0.5, 1.0), "a": (0.0, 5.0, 10.0, 15.0, 20.0, 25.0),
              "b": (0.0, 5.0, 10.0, 15.0, 20.0, 25.0)}
"""Hoffmann et al.'s grid of initialisations (Appendix D.2), as Epoch's replication uses it."""
SMALL_GRID = {"alpha": (0.5,), "beta": (0.5,), "e": (0.0, 0.5), "a": (5.0, 10.0), "b": (5.0, 10.0)}
"""Eight starts, for quick checks and tests."""


@dataclass(frozen=True)
class Approach3:
    """``L = E + A / N^alpha + B / D^beta`` (N active parameters, D tokens, L nats/token)."""

    E: float
    A: float
    B: float
    alpha: float
    beta: float
    objective: float

    def loss(self, n, d):
        return self.E + self.A / np.asarray(n) ** self.alpha + self.B / np.asarray(d) ** self.beta


def fit_approach3(n, d, loss, grid: dict | None = None, starts: list | None = None,
                  delta: float = HUBER_DELTA) -> Approach3:
    """Huber fit of ``ln L`` from every start of ``grid`` (default `START_GRID`) or the given ``starts``
    ([ln A, ln B, ln E, alpha, beta]), L-BFGS-B; the best end point."""
    from scipy.optimize import minimize
    log_n, log_d, log_l = np.log(np.asarray(n, float)), np.log(np.asarray(d, float)), np.log(np.asarray(loss, float))
    if starts is None:
        g = grid or START_GRID
        starts = [[a, b, e, al, be] for a in g["a"] for b in g["b"] for e in g["e"] for al in g["alpha"]
                  for be in g["beta"]]
    best = None
    for x0 in starts:
        r = minimize(_objective, np.asarray(x0, float), args=(log_n, log_d, log_l, delta), jac=True,
                     method="L-BFGS-B")
        if best is None or r.fun < best.fun:
            best = r
    la, lb, le, alpha, beta = best.x
    return Approach3(float(math.exp(le)), float(math.exp(la)), float(math.exp(lb)), float(alpha), float(beta),
                     float(best.fun))


# ----- the study ----------------------------------------------------------------------------------------
def _arrays(runs: list[Run], family: str, budget: float):
    sel = sorted((r for r in runs if r.family == family and r.budget == budget), key=lambda r: r.params_active)
    return (np.log([r.params_active for r in sel]), np.array([r.loss for r in sel]), sel)


def _vertices(runs, family, budgets, losses: dict | None = None):
    """Per budget (ln N_opt, L_opt); ``losses`` replaces the measured losses (bootstrap)."""
    out = []
    for c in budgets:
        x, y, _ = _arrays(runs, family, c)
        out.append(parabola_vertex(x, losses[(family, c)] if losses else y))
    return out


def _best(runs, family, budgets, losses: dict | None = None):
    """Per budget (ln N, loss) of the best measured size (``losses`` replaces the measured losses)."""
    out = []
    for c in budgets:
        x, y, _ = _arrays(runs, family, c)
        y = losses[(family, c)] if losses else y
        i = int(np.argmin(y))
        out.append((float(x[i]), float(y[i]), 0.0))
    return out


def dense_envelope(budgets, loss_opt):
    """``L_opt,dense(C)``: piecewise linear in ln C through the dense vertices, extended linearly beyond the
    first and last budgets; returns (envelope, inverse) where inverse(L) is the compute C reaching L."""
    x, y = np.log(np.asarray(budgets, float)), np.asarray(loss_opt, float)

    def inverse(level: float) -> float:
        for i in range(len(x) - 1):  # the segment that brackets the level, else the nearest end segment
            lo, hi = min(y[i], y[i + 1]), max(y[i], y[i + 1])
            if lo <= level <= hi or (i == 0 and level > hi) or (i == len(x) - 2 and level < lo):
                slope = (y[i + 1] - y[i]) / (x[i + 1] - x[i])
                return math.exp(x[i] + (level - y[i]) / slope)
        return math.exp(x[-1])
    return (lambda c: float(np.interp(math.log(c), x, y))), inverse


def _leverage(dense_v, moe_v, budgets):
    """MoE leverage at each budget: the dense compute reaching the MoE's optimal loss, / C."""
    _, inverse = dense_envelope(budgets, [v[1] for v in dense_v])
    return [inverse(v[1]) / c for v, c in zip(moe_v, budgets)]


def _interval(samples) -> list[float]:
    """The 2.5th and 97.5th percentiles of ``samples`` (a 95% bootstrap interval)."""
    a = np.asarray(samples, float)
    return [float(np.percentile(a, 2.5)), float(np.percentile(a, 97.5))]


def _parabola_fits(runs: list[Run], families, budgets) -> tuple[dict, dict]:
    """Per (family, budget): the parabola's fitted losses and the residuals, in order of active parameters."""
    fitted, resid = {}, {}
    for f in families:
        for c in budgets:
            x, y, _ = _arrays(runs, f, c)
            coef = np.polyfit(x, y, 2)
            fitted[(f, c)] = np.polyval(coef, x)
            resid[(f, c)] = y - fitted[(f, c)]
    return fitted, resid


def _bootstrap_approach2(runs, families, budgets, fitted, resid, rng, n_boot: int):
    """Residual bootstrap: per resample the vertices of every family, and (dense and moe present) the
    leverage by vertex and by best measured size. Returns (vertices per family, leverages, best leverages)."""
    boot_vert = {f: [] for f in families}
    boot_lev, boot_best = [], []
    for _ in range(n_boot):
        losses = {k: fitted[k] + rng.choice(resid[k], size=len(resid[k]), replace=True) for k in fitted}
        bv = {f: _vertices(runs, f, budgets, losses) for f in families}
        for f in families:
            boot_vert[f].append(bv[f])
        if "dense" in bv and "moe" in bv:
            boot_lev.append(_leverage(bv["dense"], bv["moe"], budgets))
            boot_best.append(_leverage(_best(runs, "dense", budgets, losses), _best(runs, "moe", budgets, losses),
                                       budgets))
    return boot_vert, boot_lev, boot_best


def _approach2_family(runs, f, budgets, vert_f, boot_vert_f) -> dict:
    """Approach 2 of one family: per budget the vertex with intervals and the sizes; ``N_opt = k C^a``."""
    n_opt = [math.exp(v[0]) for v in vert_f]
    k, e = power_law(np.array(budgets), np.array(n_opt))
    bv = np.array(boot_vert_f)  # (boot, budget, 3)
    exps = [power_law(np.array(budgets), np.exp(b[:, 0]))[1] for b in bv]
    per_budget = []
    for i, (c, n, v) in enumerate(zip(budgets, n_opt, vert_f)):
        x, y, sel = _arrays(runs, f, c)
        per_budget.append({"budget_flops": c, "n_opt": n, "n_opt_interval": _interval(np.exp(bv[:, i, 0])),
                           "loss_opt": v[1], "loss_opt_interval": _interval(bv[:, i, 1]), "curvature": v[2],
                           "vertex_inside": bool(x.min() <= v[0] <= x.max()),
                           "best_size": sel[int(np.argmin(y))].size, "best_loss": float(y.min()),
                           "sizes": [r.size for r in sel]})
    return {"per_budget": per_budget, "n_opt_power_law": {"k": k, "exponent": e, "exponent_interval": _interval(exps)}}


def _approach3_family(runs, f, budgets, fitted, resid, rng, grid, n_boot: int) -> dict:
    """Approach 3 of one family, with a residual bootstrap (``n_boot`` refits from the fitted optimum)."""
    sel = [r for r in runs if r.family == f]
    a3 = fit_approach3([r.params_active for r in sel], [r.tokens for r in sel], [r.loss for r in sel], grid=grid)
    boot3 = []
    start = [[math.log(a3.A), math.log(a3.B), math.log(a3.E), a3.alpha, a3.beta]]
    for _ in range(n_boot):
        y = np.array([fitted[(r.family, r.budget)][_arrays(runs, f, r.budget)[2].index(r)] for r in sel])
        res = np.concatenate([resid[(f, c)] for c in budgets])
        boot3.append(fit_approach3([r.params_active for r in sel], [r.tokens for r in sel],
                                   np.maximum(y + rng.choice(res, size=len(y)), 1e-3), starts=start))
    return {**asdict(a3), **{f"{k}_interval": _interval([getattr(b, k) for b in boot3])
                             for k in ("E", "A", "B", "alpha", "beta")}}


def _leverage_section(runs, vert, budgets, boot_lev, boot_best, approach2) -> dict:
    """Measured leverage per budget by vertex and by best measured size; the headline method is the vertex
    only when every vertex lies inside its sampled sizes."""
    lev = _leverage(vert["dense"], vert["moe"], budgets)
    best = _leverage(_best(runs, "dense", budgets), _best(runs, "moe", budgets), budgets)
    bl, bb = np.array(boot_lev), np.array(boot_best)
    inside = all(b["vertex_inside"] for f in ("dense", "moe") for b in approach2[f]["per_budget"])
    method = "vertex" if inside else "best_measured"
    rows = []
    for i, c in enumerate(budgets):
        v = {"vertex": (lev[i], _interval(bl[:, i])), "best_measured": (best[i], _interval(bb[:, i]))}
        rows.append({"budget_flops": c, "leverage": v[method][0], "interval": v[method][1],
                     "leverage_vertex": lev[i], "interval_vertex": _interval(bl[:, i]),
                     "leverage_best_measured": best[i], "interval_best_measured": _interval(bb[:, i])})
    return {
        "method": method,
        "why": ("every parabola vertex lies inside its sampled sizes" if inside else
                "some parabola vertices lie outside the sampled sizes (extrapolated), so the headline uses "
                "each family's best measured size per budget"),
        "dense_envelope": {"budgets_flops": budgets, "loss_opt": [v[1] for v in vert["dense"]],
                           "form": "piecewise linear in ln C through the dense optima"},
        "per_budget": rows}


def analyse(runs: list[Run], n_boot: int = 200, seed: int = 0, approach3_grid: dict | None = None,
            approach3_boot: int = 50) -> dict:
    """Approach 2 and 3 per family, measured leverage per budget, bootstrap intervals (2.5/97.5 percentiles)."""
    families = sorted({r.family for r in runs})
    budgets = sorted({r.budget for r in runs})
    rng = np.random.default_rng(seed)
    fitted, resid = _parabola_fits(runs, families, budgets)
    vert = {f: _vertices(runs, f, budgets) for f in families}
    out: dict = {"budgets_flops": budgets, "families": families, "n_runs": len(runs), "bootstrap": n_boot,
                 "approach2": {}, "approach3": {}, "approach3_bootstrap": approach3_boot}
    boot_vert, boot_lev, boot_best = _bootstrap_approach2(runs, families, budgets, fitted, resid, rng, n_boot)
    for f in families:
        out["approach2"][f] = _approach2_family(runs, f, budgets, vert[f], boot_vert[f])
        out["approach3"][f] = _approach3_family(runs, f, budgets, fitted, resid, rng, approach3_grid,
                                                approach3_boot)
    if "dense" in vert and "moe" in vert:
        out["leverage"] = _leverage_section(runs, vert, budgets, boot_lev, boot_best, out["approach2"])
    return out


def published_at_our_scale(runs: list[Run], analysis: dict) -> list[dict]:
    """Each published MoE law's leverage for our MoE at each budget: its best measured size, trained on that
    job's tokens (accounting.scaling; every law is far outside its fitted range here)."""
    out = []
    for row in analysis["approach2"].get("moe", {}).get("per_budget", []):
        sel = [r for r in runs if r.family == "moe" and r.budget == row["budget_flops"]]
        r = min(sel, key=lambda r: r.loss)
        shape, _ = load_config(str(Path(r.path) / "config.yaml"))
        res = S.evaluate_all(shape, r.tokens, S.MOE_LAWS)
        out.append({"budget_flops": row["budget_flops"], "size": r.size, "tokens": r.tokens,
                    "laws": {x.law: {"leverage": x.leverage, "max_extrapolation": x.max_extrapolation}
                             for x in res}})
    return out


def report_text(a: dict, published: list[dict]) -> str:
    lines = [f"{a['n_runs']} runs, budgets {', '.join(f'{c:.0e}' for c in a['budgets_flops'])} FLOP; "
             f"{a['bootstrap']} bootstrap resamples (95% intervals)"]
    for f, v in a["approach2"].items():
        pl = v["n_opt_power_law"]
        lines.append(f"Approach 2, {f}: N_opt = {pl['k']:.3g} C^{pl['exponent']:.3f} "
                     f"[{pl['exponent_interval'][0]:.3f}, {pl['exponent_interval'][1]:.3f}]")
        for b in v["per_budget"]:
            lines.append(f"  C={b['budget_flops']:.0e}: N_opt {b['n_opt']:.3g} [{b['n_opt_interval'][0]:.3g}, "
                         f"{b['n_opt_interval'][1]:.3g}], L_opt {b['loss_opt']:.4f} [{b['loss_opt_interval'][0]:.4f}, "
                         f"{b['loss_opt_interval'][1]:.4f}]{'' if b['vertex_inside'] else ' (vertex outside the sizes)'}; "
                         f"best measured {b['best_size']} {b['best_loss']:.4f} ({', '.join(b['sizes'])})")
    for f, v in a["approach3"].items():
        lines.append(f"Approach 3, {f}: E {v['E']:.3f} A {v['A']:.4g} B {v['B']:.4g} alpha {v['alpha']:.3f} "
                     f"[{v['alpha_interval'][0]:.3f}, {v['alpha_interval'][1]:.3f}] beta {v['beta']:.3f} "
                     f"[{v['beta_interval'][0]:.3f}, {v['beta_interval'][1]:.3f}]")
    if "leverage" in a:
        for b, pub in zip(a["leverage"]["per_budget"], published or [None] * 99):
            laws = "" if not pub else "; published at this scale: " + ", ".join(
                f"{k} {v['leverage']:.3g}x" for k, v in pub["laws"].items() if v["leverage"])
            lines.append(f"Measured leverage of MoE (E=8, k=2) over dense at C={b['budget_flops']:.0e}: "
                         f"{b['leverage']:.3g}x [{b['interval'][0]:.3g}, {b['interval'][1]:.3g}] "
                         f"({a['leverage']['method']}; vertex {b['leverage_vertex']:.3g}x "
                         f"[{b['interval_vertex'][0]:.3g}, {b['interval_vertex'][1]:.3g}], best measured "
                         f"{b['leverage_best_measured']:.3g}x [{b['interval_best_measured'][0]:.3g}, "
                         f"{b['interval_best_measured'][1]:.3g}]){laws}")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m experiments.fit_scaling", description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=Path, default=DEFAULT_RUNS, help="root holding isoflop_*/<model>/<size>-seed*/")
    ap.add_argument("--collect", type=Path, default=None, help="copy finished jobs' records from this runs root first")
    ap.add_argument("--bootstrap", type=int, default=200, help="bootstrap resamples (default 200)")
    ap.add_argument("--out", type=Path, default=None, help="write the fit as JSON here (default: <runs>/fit.json)")
    ap.add_argument("--starts", choices=("full", "small"), default="full",
                    help="Approach 3 starts: Hoffmann's full grid (4,500; default) or 8 (quick checks)")
    args = ap.parse_args(argv)
    try:
        if args.collect:
            print(f"collected {collect(args.collect, args.runs)} runs from {args.collect} into {args.runs}")
        runs = read_runs(args.runs)
        budgets = {r.budget for r in runs}
        if len(budgets) < 2 or any(len([r for r in runs if r.budget == c and r.family == f]) < 3
                                   for c in budgets for f in {r.family for r in runs}):
            raise ValueError(f"need >= 2 budgets with >= 3 finished sizes per family under {args.runs} "
                             f"(found {len(runs)} runs)")
        a = analyse(runs, args.bootstrap, approach3_grid=None if args.starts == "full" else SMALL_GRID)
        a["published_at_our_scale"] = published_at_our_scale(runs, a)
    except (ValueError, OSError, KeyError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    out = args.out or args.runs / "fit.json"
    out.write_text(json.dumps(a, indent=1))
    print(report_text(a, a["published_at_our_scale"]))
    print(f"-> {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
