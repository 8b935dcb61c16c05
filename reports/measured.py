"""Summaries of the measured data (run folders and bench CSVs) for sections 4 and 5."""
from __future__ import annotations

import numpy as np
import pandas as pd

from .collect import Collected


def run_summary(col: Collected) -> pd.DataFrame:
    """One row per run: family, balancing, device, steps, tokens, losses, median MFU and throughput."""
    if col.metrics.empty:
        return pd.DataFrame()
    m = col.metrics.sort_values("step")
    rows = []
    for run, g in m.groupby("run"):
        info = col.runs[col.runs["run"] == run].iloc[0]
        val = g["val_loss"].dropna()
        rows.append({"run": run, "path": info["path"], "family": info["family"], "is_moe": bool(info["is_moe"]),
                     "balancing": info["balancing"], "size": info["size"], "device_name": info["device_name"],
                     "peak_source": info["peak_source"], "steps": int(g["step"].max()),
                     "tokens": float(g["tokens"].max()), "train_flops": float(g["train_flops"].max()),
                     "final_train_loss": float(g["train_loss"].iloc[-1]),
                     "final_val_loss": float(val.iloc[-1]) if len(val) else np.nan,
                     "mfu": float(g["mfu"].iloc[1:].median() if len(g) > 1 else g["mfu"].median()),
                     "tokens_per_s": float(g["tokens_per_s"].median()),
                     "attention": info["attention"], "kv_cache_per_token": info["kv_cache_per_token"],
                     "parameters_total": info["parameters_total"], "parameters_active": info["parameters_active"]})
    return pd.DataFrame(rows)


def mfu_ratio_runs(summary: pd.DataFrame) -> pd.DataFrame:
    """MoE / dense median MFU for runs on the same device and size."""
    if summary.empty:
        return pd.DataFrame()
    rows = []
    for (dev, size), g in summary.groupby(["device_name", "size"]):
        dense, moe = g[~g["is_moe"]], g[g["is_moe"]]
        if dense.empty or moe.empty:
            continue
        for _, r in moe.iterrows():
            rows.append({"device_name": dev, "size": size, "moe_run": r["run"], "dense_runs": ", ".join(dense["run"]),
                         "dense_mfu": dense["mfu"].median(), "moe_mfu": r["mfu"],
                         "ratio": r["mfu"] / dense["mfu"].median()})
    return pd.DataFrame(rows)


def bench_mfu(bench: pd.DataFrame) -> pd.DataFrame:
    """Bench layer/model rows with MFU against the same CSV's measured matmul peak."""
    if bench.empty or "kind" not in bench:
        return pd.DataFrame()
    peaks = bench[bench["kind"] == "matmul_peak"].groupby("source")["tflops_per_s"].max()
    b = bench[bench["kind"].isin(["layer", "model"]) & bench["tflops_per_s"].notna()].copy()
    b["peak_tflops_per_s"] = b["source"].map(peaks)
    b["mfu_vs_matmul"] = b["tflops_per_s"] / b["peak_tflops_per_s"]
    return b


def mfu_ratio_bench(bm: pd.DataFrame) -> pd.DataFrame:
    """Per CSV, kind and backend: median over shapes of (MoE TFLOP/s / dense TFLOP/s at the same top_k and
    tokens; the dense FFN has width top_k x d_expert, so both do the same work per token)."""
    if bm.empty:
        return pd.DataFrame()
    rows = []
    for (src, kind), g in bm.groupby(["source", "kind"]):
        dense = g[g["backend"] == "dense"].set_index(["top_k", "tokens"])["tflops_per_s"]
        for backend, gb in g[g["backend"] != "dense"].groupby("backend"):
            r = [row["tflops_per_s"] / dense.get((row["top_k"], row["tokens"]), np.nan) for _, row in gb.iterrows()]
            r = [x for x in r if np.isfinite(x)]
            if r:
                rows.append({"source": src, "kind": kind, "backend": backend, "shapes": len(r),
                             "median_ratio": float(np.median(r)), "min_ratio": float(min(r)),
                             "max_ratio": float(max(r)), "device_name": ", ".join(sorted(set(g["device_name"].astype(str))))})
    return pd.DataFrame(rows)
