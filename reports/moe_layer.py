"""The report's MoE-layer subsection: one routed layer against a dense FFN of equal active FLOP.

Reads the rows of ``experiments.bench.moe_layer`` CSVs (``reports.collect.load_moe_layer``). Per device the
newest CSV (by the start time in its ``.env.json``) is shown; older ones are named with their commit and load.
Every ratio is a row of the CSV: the median over rounds of the per-round time ratio ``ours_grouped /
other`` (both timed in the same round), with its interquartile range; the per-expert GEMM floor over the
dense FFN is the only number formed here, as a ratio of the two time medians.
"""
from __future__ import annotations

import pandas as pd

from .tables import markdown

CONTENDER = "ours_grouped"
COMPILED = "ours_grouped_compiled"
COMPILED_VS = {"ours_grouped": "eager layer", "dense_compiled": "compiled dense FFN",
               "grouped_matmul": "per-expert GEMM floor", "dense": "eager dense FFN"}
GOAL = {"fine": 1.2, "coarse": 1.1}      # the goal: ours_grouped / dense at most this, per shape
WIDE = 0.10                              # interquartile range / median above this: too noisy to conclude
PEERS = {"mixtral_grouped_mm": "transformers Mixtral", "qwen3moe_grouped_mm": "transformers Qwen3-MoE",
         "torchtitan": "torchtitan"}
SHAPE_ORDER = {"fine": 0, "coarse": 1}
DTYPE_ORDER = {"fp32": 0, "bf16": 1}


def labels(vs_names) -> dict[str, str]:
    """A readable name for each comparison (``vs``) of a ratio row."""
    fixed = {"dense": "dense FFN", "grouped_matmul": "per-expert GEMM floor", "matmul": "dense GEMM floor",
             "ours_loop": "our loop backend", **PEERS}
    return {v: fixed.get(v, f"grouped as of {v.split('@', 1)[1][:7]}" if "@" in v else v) for v in vs_names}


def newest_per_device(df: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(rows of the newest CSV of each device and kind, one row per older CSV: source, device, commit,
    load). The kind is eager or compiled (a CSV with ``ours_grouped_compiled`` rows, ``--compile``), so a
    compiled run does not hide the newest full eager one."""
    if df.empty:
        return df, df
    runs = (df.assign(compiled=df["contender"] == COMPILED).groupby("source", sort=False)
            .agg(device=("device_name", "first"), start=("time_start_unix_s", "first"),
                 commit=("git_commit", "first"), load_lo=("load1_start", "min"), load_hi=("load1_end", "max"),
                 compiled=("compiled", "any"))
            .reset_index())
    runs["start"] = runs["start"].fillna(-1.0)
    newest = runs.sort_values("start").groupby(["device", "compiled"]).tail(1)["source"]
    return df[df["source"].isin(newest)], runs[~runs["source"].isin(newest)]


def config_label(r) -> str:
    """``fine bf16 2t`` on a CPU (intra-op threads); ``fine bf16`` on a GPU (threads recorded as 0)."""
    return f"{r.shape} {r.dtype}" + (f" {int(r.threads)}t" if int(r.threads) > 0 else "")


def _sorted(df: pd.DataFrame) -> pd.DataFrame:
    key = df["shape"].map(SHAPE_ORDER).fillna(9) * 100 + df["dtype"].map(DTYPE_ORDER).fillna(9) * 10 + df["threads"]
    return df.assign(_k=key).sort_values(["source", "_k"]).drop(columns="_k")


def ratios(df: pd.DataFrame) -> pd.DataFrame:
    """The ``ours_grouped / vs`` ratio rows (status ok), sorted by source, shape, dtype, threads."""
    r = df[(df["row"] == "ratio") & (df["contender"] == CONTENDER)]
    if r.empty:
        return r
    r = _sorted(r)
    return r.assign(config=[config_label(x) for x in r.itertuples()])


def floor_over_dense(df: pd.DataFrame) -> pd.DataFrame:
    """Per configuration: median time of the per-expert GEMM floor (``grouped_matmul``) / the dense FFN's."""
    t = df[(df["row"] == "time") & df["contender"].isin(["grouped_matmul", "dense"])]
    if t.empty:
        return pd.DataFrame()
    w = t.pivot_table(index=["source", "shape", "dtype", "threads"], columns="contender", values="median")
    if not {"grouped_matmul", "dense"} <= set(w.columns):
        return pd.DataFrame()
    return (w["grouped_matmul"] / w["dense"]).rename("floor_over_dense").reset_index()


def _cell(r) -> str:
    text = f"{r.median:.2f} [{r.q1:.2f}, {r.q3:.2f}]"
    return text + " ‡" if (r.q3 - r.q1) / r.median > WIDE else text


def table(df: pd.DataFrame) -> tuple[str, list[str]]:
    """Markdown table (one row per configuration) and the comparison columns it shows."""
    r = ratios(df)
    before = sorted(v for v in r["vs"].unique() if v.startswith(f"{CONTENDER}@"))
    present = set(r["vs"])
    cols = [c for c in ["dense", "grouped_matmul", "matmul"] + before + list(PEERS) if c in present]
    names = labels(cols)
    fl = floor_over_dense(df)
    rows = []
    for (shape, dtype, threads), g in r.groupby(["shape", "dtype", "threads"], sort=False):
        by_vs = {x.vs: x for x in g.itertuples()}
        f = fl[(fl["shape"] == shape) & (fl["dtype"] == dtype) & (fl["threads"] == threads)] if not fl.empty else fl
        rows.append([g["config"].iloc[0]]
                    + [_cell(by_vs[c]) if c in by_vs else "-" for c in cols]
                    + [f"{f['floor_over_dense'].iloc[0]:.2f}" if len(f) else "-",
                       f"{g['load1_start'].iloc[0]:.1f}"])
    headers = ["layer, dtype, threads"] + [f"ours / {names[c]}" for c in cols] + ["GEMM floor / dense", "load"]
    return markdown(rows, headers, "l" + "r" * (len(headers) - 1)), cols


def compiled_table(df: pd.DataFrame) -> str | None:
    """Markdown table of the compiled layer's per-round time ratios (``ours_grouped_compiled / vs`` for the
    ``COMPILED_VS`` comparisons) per configuration; None when the CSV holds no compiled rows."""
    r = df[(df["row"] == "ratio") & (df["contender"] == COMPILED) & df["vs"].isin(list(COMPILED_VS))]
    if r.empty:
        return None
    r = _sorted(r)
    cols = [v for v in COMPILED_VS if v in set(r["vs"])]
    rows = []
    for _, g in r.groupby(["shape", "dtype", "threads"], sort=False):
        by_vs = {x.vs: x for x in g.itertuples()}
        rows.append([config_label(next(g.itertuples()))] + [_cell(by_vs[c]) if c in by_vs else "-" for c in cols])
    headers = ["layer, dtype, threads"] + [f"compiled / {COMPILED_VS[c]}" for c in cols]
    return markdown(rows, headers, "l" + "r" * len(cols))


def goal_lines(df: pd.DataFrame) -> list[str]:
    """One sentence per shape: which configurations meet the goal against the dense FFN."""
    r = ratios(df)
    r = r[r["vs"] == "dense"]
    out = []
    for shape, goal in GOAL.items():
        g = r[r["shape"] == shape]
        if g.empty:
            continue
        met = [config_label(x) for x in g.itertuples() if x.median <= goal]
        missed = [f"{config_label(x)} ({x.median:.2f})" for x in g.itertuples() if x.median > goal]
        out.append(f"- {shape}: goal ours/dense <= {goal:g}; met by {', '.join(met) or 'none'}"
                   + (f"; not met by {', '.join(missed)}." if missed else "."))
    return out


def finding(df: pd.DataFrame, source: str) -> str | None:
    """One key-findings line from one CSV: ours/dense per shape and dtype, the GEMM floor / dense, peers."""
    r = ratios(df)
    dense = r[r["vs"] == "dense"]
    if dense.empty:
        return None
    def rng(s: pd.Series) -> str:
        lo, hi = f"{s.min():.2f}", f"{s.max():.2f}"
        return lo if lo == hi else f"{lo}-{hi}"

    parts = []
    for shape, g in dense.groupby("shape", sort=False):
        by_dtype = ", ".join(f"{dt} {rng(h['median'])}" for dt, h in g.groupby("dtype", sort=False))
        E, k = int(g["n_experts"].iloc[0]), int(g["top_k"].iloc[0])
        parts.append(f"{shape} experts (E={E}, k={k}) cost {rng(g['median'])}x the dense FFN ({by_dtype})")
    text = "; ".join(parts)
    fl = floor_over_dense(df)
    if not fl.empty:
        text += f"; the per-expert GEMMs alone cost {rng(fl['floor_over_dense'])}x it"
    peers = r[r["vs"].isin(["mixtral_grouped_mm", "qwen3moe_grouped_mm"])]
    if not peers.empty:
        text += f"; ours takes {rng(peers['median'])}x the time of transformers' Mixtral and Qwen3-MoE blocks"
    compiled = df[(df["row"] == "ratio") & (df["contender"] == COMPILED)]
    vs_dense = compiled[compiled["vs"] == "dense_compiled"]
    if not vs_dense.empty:
        vs_eager = compiled[compiled["vs"] == CONTENDER]
        text += (f"; compiled (torch.compile), the layer costs {rng(vs_dense['median'])}x the compiled dense FFN"
                 + (f" and {rng(vs_eager['median'])}x its own eager time" if not vs_eager.empty else ""))
    threads = ", ".join(str(int(t)) for t in sorted(dense["threads"].unique()))
    return (f"- One routed layer against a dense FFN of equal active FLOP (forward + backward, "
            f"{df['device_name'].iloc[0]}, {threads} threads, median per-round time ratios): {text} "
            f"(section 4; `{source}`).")
