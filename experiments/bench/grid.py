"""Micro-benchmarks: ``python -m experiments.bench [--grid cpu|gpu] [--out bench.csv]``.

(``experiments.bench.grid``; ``python -m experiments.bench`` runs it, as does ``python -m experiments.bench.grid``.)

Rows of the CSV (``kind``):
  * ``matmul_peak``: the best n x n x n matmul, the measured peak MFU-style numbers can be held against;
  * ``layer``: forward + backward of ONE FFN layer (dense FFN, or the MoE FFN with each expert backend:
    loop, grouped, and megablocks when importable on CUDA) on ``tokens`` tokens;
  * ``model``: forward + backward of a whole model (dense or MoE per backend), ``tokens`` = batch x seq;
  * ``decode`` / ``recompute``: one new token with a KV cache vs a full forward over the context, per
    context length (``experiments.bench.decode_vs_recompute.time_decode``).
Each timed row is the MEDIAN of ``--repeats`` runs after ``--warmup`` runs (CUDA events on a GPU,
``time.perf_counter`` on a CPU). ``flops`` are accounting's count in FLOP (2 per multiply-add;
training = 3 x forward), ``tflops_per_s = flops / median_s / 1e12``. Every row carries the environment
(device name, torch version, dtype, git commit).

The MoE layer under test is the FFN of the first MoE block of a one-layer model; the dense FFN has
width ``top_k x d_expert`` so that both touch the same active parameters per token.
"""
from __future__ import annotations

import argparse
import csv
import importlib.util
import os
import statistics
import sys
from dataclasses import dataclass
from pathlib import Path

import torch

import moe
from accounting.flops import FLOP, decode_flops_per_token, ffn_macs_per_token, forward_flops, \
    full_recompute_flops
from accounting.shapes import ModelShape

from ..environment import device_name, git_commit, measure_matmul_peak
from .decode_vs_recompute import time_decode
from .timing import DTYPES, time_fn


@dataclass(frozen=True)
class Grid:
    """Benchmark grid: widths, expert counts, top-k, token counts, decode contexts, dtype."""

    d_model: int
    n_heads: int
    d_expert: int
    n_layers: int
    vocab_size: int
    experts: tuple[int, ...]
    top_k: tuple[int, ...]
    tokens: tuple[int, ...]
    seq_len: int
    contexts: tuple[int, ...]
    dtype: str


GRIDS = {
    "cpu": Grid(d_model=128, n_heads=4, d_expert=256, n_layers=2, vocab_size=512, experts=(4, 8),
                top_k=(1, 2), tokens=(512, 2048), seq_len=128, contexts=(64, 128, 256, 512, 1024, 2048),
                dtype="fp32"),
    "gpu": Grid(d_model=1024, n_heads=16, d_expert=2048, n_layers=8, vocab_size=32768,
                experts=(8, 32, 64), top_k=(1, 2, 4, 8), tokens=(4096, 16384), seq_len=1024,
                contexts=(128, 512, 2048, 8192), dtype="bf16"),
}

COLUMNS = ["kind", "ffn", "backend", "d_model", "n_experts", "top_k", "d_expert", "tokens", "context",
           "dtype", "median_s", "min_s", "repeats", "flops", "flop_convention", "tflops_per_s",
           "device", "device_name", "torch", "git_commit", "note", "cpu_count", "torch_threads"]

def available_backends(device: torch.device) -> list[str]:
    """loop and grouped always; megablocks when importable and on CUDA."""
    out = ["loop", "grouped"]
    if device.type == "cuda" and importlib.util.find_spec("megablocks") is not None:
        out.append("megablocks")
    return out


def make_shape(g: Grid, n_experts: int, top_k: int, n_layers: int, seq_len: int) -> ModelShape:
    """Dense (E = 0, d_ff = top_k x d_expert) or MoE shape of the grid."""
    common = dict(vocab_size=g.vocab_size, d_model=g.d_model, n_layers=n_layers, n_heads=g.n_heads,
                  seq_len=seq_len)
    if n_experts == 0:
        return ModelShape(**common, d_ff=top_k * g.d_expert)
    return ModelShape(**common, d_ff=top_k * g.d_expert, n_experts=n_experts, top_k=top_k,
                      d_expert=g.d_expert)


def build(shape: ModelShape, backend: str, device: torch.device, dtype: str) -> torch.nn.Module:
    return moe.build_model(shape, backend=backend).to(device=device, dtype=DTYPES[dtype])


def find_ffn(model: torch.nn.Module) -> torch.nn.Module:
    """The FFN of the first block (``dense.FFN`` or ``moe.MoEFFN``; the shapes here have no leading dense
    layers)."""
    return model.blocks[0].ffn


def bench_layer(g: Grid, n_experts: int, top_k: int, tokens: int, backend: str, device, args) -> dict:
    shape = make_shape(g, n_experts, top_k, n_layers=1, seq_len=min(tokens, g.seq_len))
    ffn = find_ffn(build(shape, backend, device, g.dtype))
    seq = shape.seq_len
    x = torch.randn(tokens // seq, seq, g.d_model, device=device, dtype=DTYPES[g.dtype],
                    requires_grad=True)

    def step():
        ffn(x).float().square().mean().backward()
    times = time_fn(step, device, args.warmup, args.repeats)
    flops = 3 * sum(ffn_macs_per_token(shape, 0).values()) * FLOP * (x.shape[0] * seq)
    return _row("layer", shape, backend, x.shape[0] * seq, g.dtype, times, flops)


def bench_model(g: Grid, n_experts: int, top_k: int, tokens: int, backend: str, device, args) -> dict:
    shape = make_shape(g, n_experts, top_k, n_layers=g.n_layers, seq_len=g.seq_len)
    model = build(shape, backend, device, g.dtype)
    batch = max(1, tokens // g.seq_len)
    idx = torch.randint(0, g.vocab_size, (batch, g.seq_len), device=device)

    def step():
        model(idx, idx).loss.backward()
    times = time_fn(step, device, args.warmup, args.repeats)
    flops = 3 * forward_flops(shape, g.seq_len, batch=batch, flops_per_mac=FLOP)["total"]
    return _row("model", shape, backend, batch * g.seq_len, g.dtype, times, flops)


def bench_decode(g: Grid, device, args) -> list[dict]:
    """Incremental decode vs full recompute per context (``decode_vs_recompute.time_decode``)."""
    rows = []
    for context in g.contexts:
        shape = make_shape(g, 0, 4, n_layers=g.n_layers, seq_len=max(g.contexts) + 1)
        model = build(shape, "loop", device, g.dtype)
        res = time_decode(model, context=context, warmup=args.warmup, repeats=args.repeats)
        for kind, key, flops in (("decode", "cached_s", decode_flops_per_token(shape, context, flops_per_mac=FLOP)),
                                 ("recompute", "recompute_s", full_recompute_flops(shape, context, flops_per_mac=FLOP))):
            t = res[key] if isinstance(res, dict) else getattr(res, key)
            row = _row(kind, shape, "loop", 1, g.dtype, [t], flops)
            row.update(context=context, repeats=args.repeats, backend="dense", top_k="",
                       flop_convention="2 per multiply-add, forward only",
                       note="median per generated token")
            rows.append(row)
    return rows


def _row(kind: str, shape: ModelShape, backend: str, tokens: int, dtype: str, times: list[float],
         flops: float) -> dict:
    med = statistics.median(times)
    return {"kind": kind, "ffn": "moe" if shape.is_moe else "dense", "backend": backend,
            "d_model": shape.d_model, "n_experts": shape.n_experts, "top_k": shape.top_k,
            "d_expert": shape.d_expert if shape.is_moe else shape.d_ff, "tokens": tokens, "dtype": dtype,
            "median_s": med, "min_s": min(times), "repeats": len(times), "flops": int(flops),
            "flop_convention": "2 per multiply-add, fwd+bwd = 3 x fwd", "tflops_per_s": flops / med / 1e12}


def run(args: argparse.Namespace) -> Path:
    """Run the grid and write the CSV; returns its path."""
    g = GRIDS[args.grid]
    changes = {k: tuple(v) if isinstance(v, list) else v for k, v in
               (("dtype", args.dtype), ("experts", args.experts), ("top_k", args.top_k),
                ("tokens", args.tokens), ("contexts", args.contexts)) if v}
    g = Grid(**{**g.__dict__, **changes})
    device = torch.device(args.device if args.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu"))
    torch.manual_seed(0)
    threads = args.threads if args.threads is not None else (1 if device.type == "cpu" else 0)
    if threads:
        torch.set_num_threads(threads)
    env = {"device": str(device), "device_name": device_name(device), "torch": torch.__version__,
           "git_commit": git_commit(), "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads()}
    rows: list[dict] = []
    n = 4096 if device.type == "cuda" else 1024
    peak = measure_matmul_peak(device, n=n, repeats=args.repeats, dtype=DTYPES[g.dtype])
    rows.append({"kind": "matmul_peak", "dtype": g.dtype, "tokens": n, "flops": 2 * n ** 3,
                 "median_s": 2 * n ** 3 / peak, "tflops_per_s": peak / 1e12, "repeats": args.repeats,
                 "flop_convention": "2 per multiply-add", "note": f"best of {args.repeats} {n}^3 matmuls"})
    backends = available_backends(device)
    for what in args.what:
        for tokens in g.tokens:
            for k in g.top_k:
                if what in ("layer", "model"):
                    fn = bench_layer if what == "layer" else bench_model
                    rows.append(_safe(fn, g, 0, k, tokens, "dense", device, args))
                    for e in g.experts:
                        if k <= e:
                            for b in backends:
                                rows.append(_safe(fn, g, e, k, tokens, b, device, args))
        if what == "decode":
            rows.extend(bench_decode(g, device, args))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=COLUMNS)
        w.writeheader()
        for r in rows:
            w.writerow({c: r.get(c, env.get(c, "")) for c in COLUMNS})
    if not args.quiet:
        for r in rows:
            print(f"{r.get('kind'):11} {r.get('ffn', ''):5} {r.get('backend', ''):10} E={r.get('n_experts', '')!s:3} "
                  f"k={r.get('top_k', '')!s:2} tokens={r.get('tokens', '')!s:6} ctx={r.get('context', '')!s:5} "
                  f"{r.get('median_s', float('nan')) * 1e3 if r.get('median_s') else float('nan'):9.3f} ms "
                  f"{r.get('tflops_per_s') or float('nan'):8.4f} TFLOP/s {r.get('note', '')}")
        print(f"wrote {len(rows)} rows to {out}")
    return out


def _safe(fn, g, e, k, tokens, backend, device, args) -> dict:
    """One benchmark; a failing backend becomes a row with the error in ``note``."""
    try:
        if e:
            return fn(g, e, k, tokens, backend, device, args)
        return fn(g, 0, k, tokens, "loop", device, args) | {"backend": "dense", "top_k": k}
    except Exception as exc:  # noqa: BLE001  (record, keep benchmarking the rest)
        return {"kind": fn.__name__.replace("bench_", ""), "ffn": "moe" if e else "dense", "backend": backend,
                "n_experts": e, "top_k": k, "tokens": tokens, "dtype": g.dtype,
                "note": f"error: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"[:200]}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m experiments.bench", description=__doc__.split("\n")[0])
    p.add_argument("--grid", choices=sorted(GRIDS), default="cpu", help="cpu (tiny, default) or gpu")
    p.add_argument("--what", nargs="+", choices=["layer", "model", "decode"],
                   default=["layer", "model", "decode"])
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--dtype", choices=sorted(DTYPES), default=None, help="override the grid's dtype")
    p.add_argument("--experts", type=int, nargs="+", help="override the grid's expert counts")
    p.add_argument("--top-k", type=int, nargs="+", help="override the grid's top-k values")
    p.add_argument("--tokens", type=int, nargs="+", help="override the grid's token counts")
    p.add_argument("--contexts", type=int, nargs="+", help="override the grid's decode contexts")
    p.add_argument("--threads", type=int, default=None,
                   help="torch CPU threads (default: 1 on a CPU, as the demo, robust on a shared machine; "
                        "torch's default on CUDA; 0 keeps torch's default)")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--out", default="runs/bench/bench.csv")
    p.add_argument("--quiet", action="store_true")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    before = torch.get_num_threads()
    try:
        run(parse_args(argv))
    finally:
        torch.set_num_threads(before)  # --threads applies to this benchmark only (tests call main in-process)
    return 0


if __name__ == "__main__":
    sys.exit(main())
