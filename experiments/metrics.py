"""metrics.jsonl: one JSON object per logged step, appended by rank 0; plus the helpers that fill it.

Fields of a line (units in the names; flops are FLOP, TWO per multiply-add):
  step, tokens (trained so far), train_loss (LM cross-entropy, mean over the step's micro-batches),
  train_total_loss (LM + auxiliary losses), val_loss (when evaluated), lr, grad_norm (before clipping),
  step_time_s (mean over the steps since the last line), tokens_per_s,
  train_flops_fma2_per_token (3 x forward, dropless top-k, accounting), train_flops_fma2_per_token_routed
  (the same with the (token, expert) pairs the routers actually produced), achieved_flops_fma2_per_s, mfu
  (achieved / peak_flops_per_s), memory_bytes, and ``router``: one dict per MoE layer with
  load_fraction [E], tokens_per_expert [E], cv (population std / mean of the loads), max_vio
  (max load / mean load - 1), dropped_fraction, entropy, aux_loss, z_loss, bias [E] or null.
"""
from __future__ import annotations

import json
import math
import os
import sys
from pathlib import Path
from typing import Any, Iterable, Sequence

import torch

from accounting.flops import FLOP, forward_flops
from accounting.shapes import ModelShape
from moe.balance import load_stats, routed_assignments as kept_assignments

from .atomic import write_text_atomic

METRICS = "metrics.jsonl"


class MetricsError(RuntimeError):
    """A metrics.jsonl that cannot be read back; ``str(err)`` names the file and the line number."""


def parse_metrics(path: str | Path, warn=None) -> list[dict]:
    """The records of a metrics.jsonl. A torn LAST line (no trailing newline, or not JSON: what a crash
    mid-append leaves) is dropped with a warning through ``warn`` (default: one line on stderr); any other
    line that is not a JSON object with an integer ``step`` raises `MetricsError` naming its number."""
    path = Path(path)
    raw = path.read_bytes()
    lines = raw.split(b"\n")
    complete = raw.endswith(b"\n") or not raw
    if lines and lines[-1] == b"":
        lines.pop()
    out = []
    for i, ln in enumerate(lines, start=1):
        if not ln.strip():
            continue
        last = i == len(lines)
        try:
            rec = json.loads(ln.decode("utf-8"))
            bad = None if isinstance(rec, dict) and type(rec.get("step")) is int else "no integer 'step'"
        except (UnicodeDecodeError, ValueError):
            rec, bad = None, "not JSON"
        if last and (not complete or bad == "not JSON"):
            (warn or _stderr)(f"warning: {path}: dropping torn last line {i} ({len(ln)} bytes, {bad or 'no newline'}),"
                              f" left by an interrupted write")
            break
        if bad:
            raise MetricsError(f"{path} line {i}: {bad}: {ln[:60]!r}")
        out.append(rec)
    return out


def _stderr(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


class MetricsWriter:
    """Appends JSON lines to ``<run_dir>/metrics.jsonl`` (a no-op when ``enabled`` is false), and hands each
    record to ``logger`` (`experiments.loggers`: TensorBoard, wandb) when one is given."""

    def __init__(self, run_dir: str | Path, enabled: bool = True, logger=None):
        self.path = Path(run_dir) / METRICS
        self.enabled = enabled
        self.logger = logger if enabled else None

    def reset(self) -> None:
        """Start a fresh file (a new run in an old folder)."""
        if self.enabled:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.path.write_text("")

    def close(self) -> None:
        """Close the logger (metrics.jsonl itself is closed after every line)."""
        if self.logger is not None:
            self.logger.close()

    def truncate_after(self, step: int) -> list[dict]:
        """Drop lines logged after ``step`` (written after the checkpoint a resumed run restarts from), and a
        torn last line; returns the records kept."""
        if not self.enabled or not self.path.exists():
            return []
        keep = [r for r in parse_metrics(self.path) if r["step"] <= step]
        if self.logger is not None:
            self.logger.first_step = step + 1
        write_text_atomic(self.path, "".join(json.dumps(r) + "\n" for r in keep))
        return keep

    def check(self, step: int) -> list[dict]:
        """Parse the file as `truncate_after` will (raising `MetricsError` on a bad line) without changing it."""
        if not self.enabled or not self.path.exists():
            return []
        return [r for r in parse_metrics(self.path, warn=lambda m: None) if r["step"] <= step]

    def write(self, record: dict[str, Any]) -> None:
        if not self.enabled:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        record = _jsonable(record)
        try:
            with self.path.open("a") as f:
                f.write(json.dumps(record) + "\n")
                f.flush()
                os.fsync(f.fileno())
        except OSError as e:  # a full disk: name the file
            if e.filename is None:
                e.filename = str(self.path)
            raise
        if self.logger is not None:
            self.logger.log(record)


def read_metrics(run_dir: str | Path) -> list[dict]:
    """All records of a run's metrics.jsonl (a torn last line dropped with a warning; see `parse_metrics`)."""
    return parse_metrics(Path(run_dir) / METRICS)


def _jsonable(x: Any) -> Any:
    if isinstance(x, dict):
        return {k: _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, float) and not math.isfinite(x):
        return str(x)
    if hasattr(x, "tolist"):
        return x.tolist()
    return x


# ----- router statistics -----------------------------------------------------------------------------
def _as_dict(stats: Any) -> dict:
    return stats.to_dict() if hasattr(stats, "to_dict") else dict(stats)


def aggregate_router_stats(per_micro: Sequence[Sequence[Any]]) -> list[dict]:
    """Merge the router stats of several forwards (micro-batches, ranks) into one dict per MoE layer.

    ``per_micro[m][l]`` is layer ``l``'s `RouterStats` (or its ``to_dict()``) in forward ``m``. Token
    counts are summed and the loads recomputed from them (`load_balance`, i.e. ``moe.balance.load_stats``); losses, entropy and dropped share are averaged;
    the bias is the latest.
    """
    if not per_micro or not per_micro[0]:
        return []
    out = []
    for layer_stats in zip(*[[_as_dict(s) for s in m] for m in per_micro]):
        last = layer_stats[-1]
        rec: dict[str, Any] = {"layer": last.get("layer")}
        counts = [s.get("tokens_per_expert") for s in layer_stats]
        if all(c is not None for c in counts):
            total = [float(sum(col)) for col in zip(*counts)]
            rec["tokens_per_expert"] = total
            rec.update(load_balance(total))
        else:
            fr = [s["load_fraction"] for s in layer_stats]
            rec["load_fraction"] = [sum(col) / len(fr) for col in zip(*fr)]
            rec.update({k: _mean(s.get(k) for s in layer_stats) for k in ("cv", "max_vio")})
        for key in ("dropped_fraction", "entropy", "aux_loss", "z_loss"):
            rec[key] = _mean(s.get(key) for s in layer_stats)
        rec["bias"] = last.get("bias")
        out.append(rec)
    return out


def load_balance(counts: Sequence[float]) -> dict:
    """``load_fraction`` (sums to 1), ``cv`` (population std / mean) and ``max_vio`` (max / mean - 1)."""
    n, total = len(counts), float(sum(counts))
    if n == 0 or total <= 0:
        return {"load_fraction": [0.0] * n, "cv": float("nan"), "max_vio": float("nan")}
    load, cv, vio = load_stats(torch.tensor([float(c) for c in counts], dtype=torch.float64))
    return {"load_fraction": load.tolist(), "cv": float(cv), "max_vio": float(vio)}


def _mean(values: Iterable[Any]) -> float | None:
    vals = [float(v) for v in values if v is not None]
    return sum(vals) / len(vals) if vals else None


# ----- flops -----------------------------------------------------------------------------------------
def train_flops_per_token(shape: ModelShape, routed_assignments_per_window: float | None = None) -> float:
    """Training FLOP per token (2 per multiply-add): 3 x the forward flops of one window of
    ``shape.seq_len`` tokens, divided by its tokens. Attention scores count the full n x n matrix (the
    note's and FlopCounterMode's convention). ``routed_assignments_per_window`` prices the (token,
    expert) pairs the routers produced, summed over MoE layers, instead of dropless top-k."""
    n = shape.seq_len
    assignments = None if routed_assignments_per_window is None else round(routed_assignments_per_window)
    fwd = forward_flops(shape, n, flops_per_mac=FLOP, routed_assignments=assignments)["total"]
    return 3.0 * fwd / n


def routed_assignments(router: Sequence[dict]) -> int | None:
    """(token, expert) pairs the experts processed, summed over layers (``moe.balance.routed_assignments``
    of the logged per-layer dicts); None without per-expert counts."""
    if not router or any(r.get("tokens_per_expert") is None for r in router):
        return None
    return kept_assignments(router)
