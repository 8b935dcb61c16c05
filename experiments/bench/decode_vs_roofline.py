"""Measured cached decode vs the serving roofline (``accounting.serving``), on this machine.

Times one decode step (one new token for each of B sequences with a filled KV cache) of four of our own
models -- dense; MoE E=8 k=2; fine-grained MoE E=64 k=8 at the same active parameters; dense FFN with
MLA attention -- for batches 1..256 at several contexts, and in the same run measures this device's matmul
peak and memory read bandwidth, which it feeds to ``accounting.serving.decode_step`` (G = 1) for a
prediction per point. Repeats are interleaved over the batches (round r times every batch once), so a
slow spell on a shared machine spreads over all points instead of sinking one.

    python -m experiments.bench.decode_vs_roofline                 # CPU, ~4-6 min on one core; writes the files below
    python -m experiments.bench.decode_vs_roofline --device cuda   # the same on a GPU (bf16, larger models)
    python -m experiments.bench.decode_vs_roofline --quick --out /tmp/q.csv   # seconds; for tests
    python -m experiments.bench.decode_vs_roofline --compile --out runs/decode_cpu_compiled.csv   # torch.compile'd

The same run also measures how fast a matmul on B rows streams its weights here
(``experiments.bench.weight_streaming``): ``streaming_bound_step_s`` is the step time GEMMs at those rates
allow, so ``measured_over_streaming_bound`` separates the matmul library's few-row kernel (roofline ->
bound) from the rest of the step (bound -> measured).

Writes ``--out`` (CSV, one row per (model, context, batch), appended as each block of points completes,
so a crash keeps what was measured) and ``<out stem>_env.json`` (device, CPU model, cores, threads, torch,
git commit, the measured peak and bandwidth). Columns are documented in docs/experiments.md.
MoE models use the ``loop`` expert backend, which only touches experts that received tokens: the weights
read per step grow with the distinct experts a batch routes to, as in a real serving kernel.

``--compile``: every step runs through ONE ``torch.compile(dynamic=True)`` function per model (batch and cache
position symbolic, so the batches and contexts share its graphs; ``dense.static_cache``), MoE models on the
``grouped`` backend (the ``loop`` backend's per-expert selection has data-dependent shapes), which also only
multiplies the experts that received tokens. The compile time (the first, warm-up step of each model) is in
the env JSON (``compile_s``).
"""
from __future__ import annotations

import argparse
import csv
import json
import math
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import torch

import moe

from accounting.hardware import Hardware
from accounting.memory import kv_cache_elements_per_token
from accounting.params import count_parameters
from accounting.serving import Layout, decode_step, expected_distinct_experts
from accounting.shapes import ModelShape

from ..environment import environment, measure_matmul_peak
from .timing import DTYPES, quartiles, timed
from .weight_streaming import rate_at, streaming_bound_s, streaming_rates

PROG = "python -m experiments.bench.decode_vs_roofline"

FIELDS = ["device", "dtype", "model", "n_experts", "top_k", "attention", "context", "batch", "repeats",
          "step_s_median", "step_s_q1", "step_s_q3", "step_s_min", "step_s_max", "tokens_per_s_median",
          "predicted_step_s", "predicted_compute_s", "predicted_memory_s", "predicted_bound",
          "predicted_bytes", "predicted_kv_bytes", "predicted_routed_bytes", "predicted_flops_fma2",
          "measured_over_predicted_tokens_per_s", "distinct_experts_measured", "distinct_experts_predicted",
          "total_params", "active_params", "peak_flops_per_s", "bandwidth_bytes_per_s",
          "linear_weight_bytes_per_s", "streaming_bound_step_s", "measured_over_streaming_bound"]


def model_shapes(d: int, layers: int, heads: int, vocab: int, ffn: int, max_len: int) -> dict[str, ModelShape]:
    """The four models: same d, L, H, V; dense FFN width ``ffn``; MoEs with k x d_expert = ffn (equal
    active parameters); MLA with ranks d/2, nope = v = d/H, rope = d/(2H)."""
    base = dict(vocab_size=vocab, d_model=d, n_layers=layers, n_heads=heads, seq_len=max_len, d_ff=ffn)
    hd = d // heads
    return {
        "dense": ModelShape(**base, name="dense"),
        "moe-e8k2": ModelShape(**base, n_experts=8, top_k=2, d_expert=ffn // 2, name="moe-e8k2"),
        "moe-e64k8": ModelShape(**base, n_experts=64, top_k=8, d_expert=ffn // 8, name="moe-e64k8"),
        "mla": ModelShape(**base, attention="mla", q_lora_rank=d // 2, kv_lora_rank=d // 2, qk_nope_head_dim=hd,
                          qk_rope_head_dim=max(2, hd // 2), v_head_dim=hd, name="mla"),
    }


def measure_bandwidth(device: torch.device, n_bytes: int, repeats: int = 5) -> float:
    """Best read bandwidth (bytes/s) of summing an ``n_bytes`` fp32 tensor (reads it once)."""
    x = torch.randn(n_bytes // 4, device=device)
    x.sum()
    best = min(timed(x.sum, device)[0] for _ in range(repeats))
    return x.numel() * 4 / best


def build(shape: ModelShape, device: torch.device, dtype: torch.dtype, backend: str = "loop"):
    return moe.build_model(shape, backend=backend).to(device=device, dtype=dtype).eval()


def decode_step_fn(model, compile: bool = False):
    """``(tokens [B, 1], cache) -> ModelOutput`` of one cached decode step, compiled once with symbolic
    sizes when ``compile`` (one graph for every batch > 1 and position > 1)."""
    def step(tokens, cache):
        return model(tokens, cache=cache, last_only=True)
    if not compile:
        return step
    torch._dynamo.config.cache_size_limit = max(torch._dynamo.config.cache_size_limit, 64)
    return torch.compile(step, dynamic=True)


def filled_cache(model, batch: int, context: int, device: torch.device):
    """A cache for ``batch`` sequences holding ``context`` random entries (allocated by one real step,
    then overwritten with noise: timing needs the sizes, not the values)."""
    cache = model.new_cache(batch, max_len=context + 1)
    model(torch.zeros(batch, 1, dtype=torch.long, device=device), cache=cache, last_only=True)
    for t in cache.tensors():
        t.normal_()
    cache.reset(context)
    return cache


@torch.no_grad()
def bench_block(model, shape: ModelShape, batches: list[int], context: int, repeats: int,
                device: torch.device, max_step_s: float = math.inf, step_fn=None) -> dict[int, dict]:
    """Interleaved timings of one decode step at each batch; distinct experts touched per MoE layer.
    Batches above the first whose warm-up step takes longer than ``max_step_s`` are dropped (time budget)."""
    cache = filled_cache(model, max(batches), context, device)
    views = {b: cache.first(b) for b in batches}
    gen = torch.Generator(device="cpu").manual_seed(context)
    tokens = torch.randint(0, shape.vocab_size, (max(batches), 1), generator=gen).to(device)
    times: dict[int, list[float]] = {b: [] for b in batches}
    distinct: dict[int, list[float]] = {b: [] for b in batches}

    run = step_fn or decode_step_fn(model)

    def step(b: int):
        views[b].reset(context)
        return run(tokens[:b], views[b])

    kept = []
    for b in sorted(batches):  # warm-up, smallest first; stop growing the batch past the time budget
        kept.append(b)
        if timed(lambda: step(b), device)[0] > max_step_s:
            break
    batches = kept
    for _ in range(repeats):
        for b in batches:
            step_s, out = timed(lambda: step(b), device)
            times[b].append(step_s)
            if isinstance(out, moe.MoEOutput):
                distinct[b].append(statistics.fmean(float((s.tokens_per_expert > 0).sum())
                                                    for s in out.router_stats))
    del views, cache
    return {b: {"times": times[b], "distinct": statistics.fmean(distinct[b]) if distinct[b] else None}
            for b in batches}


def parse_args(argv: Sequence[str] | None):
    p = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n")[0])
    p.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    p.add_argument("--dtype", choices=sorted(DTYPES), default=None, help="default: fp32 on CPU, bf16 on CUDA")
    p.add_argument("--out", default=None, help="CSV path (default reports/data/decode_<device>.csv)")
    p.add_argument("--models", nargs="+", default=None, help="subset of: dense moe-e8k2 moe-e64k8 mla")
    p.add_argument("--batches", type=int, nargs="+", default=None, help="default 1 2 4 ... 256")
    p.add_argument("--contexts", type=int, nargs="+", default=None, help="default 64 512 2048")
    p.add_argument("--d-model", type=int, default=None, help="default 512 (CPU), 2048 (CUDA)")
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--heads", type=int, default=8)
    p.add_argument("--vocab", type=int, default=512)
    p.add_argument("--repeats", type=int, default=15)
    p.add_argument("--max-cache-gb", type=float, default=None,
                   help="skip batches whose KV cache exceeds this (default 2 on CPU, 20 on CUDA)")
    p.add_argument("--max-step-s", type=float, default=None,
                   help="stop growing the batch in a block once one step takes longer (default 1 s on CPU)")
    p.add_argument("--threads", type=int, default=1, help="CPU threads (default 1; 0 keeps torch's default)")
    p.add_argument("--quick", action="store_true", help="tiny models, 2 batches, 1 context: for tests")
    p.add_argument("--compile", action="store_true",
                   help="torch.compile each model's decode step (MoE on the grouped backend)")
    a = p.parse_args(argv)
    for name in ("batches", "contexts"):
        values = getattr(a, name)
        if values is not None and min(values) < (1 if name == "batches" else 0):
            p.error(f"--{name} must be positive")
    return a


def _plan(a, gpu: bool) -> tuple[int, int, list[int], list[int], int]:
    """(d_model, layers, batches, contexts, repeats) from the arguments; ``--quick`` is a seconds-long run."""
    if a.quick:
        return 64, 1, [1, 4], [16], 2
    return (a.d_model or (2048 if gpu else 512), a.layers, a.batches or [1, 2, 4, 8, 16, 32, 64, 128, 256],
            a.contexts or [64, 512, 2048], a.repeats)


@dataclass(frozen=True)
class _Setup:
    """What every block of one run shares: device, dtype, the measured roofline and the grid."""

    device: torch.device
    dtype: torch.dtype
    dtype_name: str
    hw: Hardware
    layout: Layout
    peak: float
    bw: float
    batches: list[int]
    contexts: list[int]
    repeats: int
    cap_bytes: float
    max_step_s: float
    row_device: str
    rates: dict[str, dict[int, float]]   # weight_streaming.streaming_rates at every batch
    t_start: float


def _select_models(shapes: dict[str, ModelShape], wanted: list[str] | None) -> dict[str, ModelShape]:
    """``shapes`` restricted to ``wanted`` (all when None); ValueError naming the unknown ones."""
    if not wanted:
        return shapes
    unknown = sorted(set(wanted) - set(shapes))
    if unknown:
        raise ValueError(f"unknown model(s) {', '.join(unknown)}; choose from {', '.join(shapes)}")
    return {k: v for k, v in shapes.items() if k in wanted}


def _measure_roofline(device: torch.device, dtype: torch.dtype, quick: bool) -> tuple[float, float]:
    """This device's matmul peak (FLOP/s, 2 per multiply-add) and read bandwidth (bytes/s), measured now."""
    gpu = device.type == "cuda"
    peak = measure_matmul_peak(device, n=256 if quick else (8192 if gpu else 1024), dtype=dtype)
    bw = measure_bandwidth(device, (16 if quick else (4096 if gpu else 512)) * 2 ** 20)
    return peak, bw


def _bench_model(name: str, shape: ModelShape, model, step_fn, st: _Setup, w, fh) -> None:
    """Every context of one model: time the batches that fit, write a row per batch, print a line."""
    c = count_parameters(shape)
    for n in st.contexts:
        ok = [b for b in st.batches if b * (n + 1) * _kv_bytes_per_token(shape, st.dtype) <= st.cap_bytes]
        if len(ok) < len(st.batches):
            print(f"  {name} context {n}: skipping batch {', '.join(map(str, sorted(set(st.batches) - set(ok))))} "
                  f"(KV cache over {st.cap_bytes / 1e9:g} GB)", flush=True)
        if not ok:
            continue
        res = bench_block(model, shape, ok, n, st.repeats, st.device, st.max_step_s, step_fn)
        if len(res) < len(ok):
            print(f"  {name} context {n}: stopped at batch {max(res)} (a step took over {st.max_step_s:g} s)",
                  flush=True)
        ok = sorted(res)
        for b in ok:
            pred = decode_step(shape, st.hw, st.layout, b, n)
            w.writerow(_row(shape, c, res[b], pred, st, name=name, context=n, batch=b))
        fh.flush()
        print(f"  {name:10s} n={n:5d} " + " ".join(
            f"B{b}:{1e3 * statistics.median(res[b]['times']):.2f}ms" for b in ok)
              + f"  [{time.time() - st.t_start:.0f}s]", flush=True)


def _run_models(shapes: dict[str, ModelShape], st: _Setup, compile: bool, env: dict, out: Path) -> None:
    """Build, optionally compile, and time every model; rows go to ``out`` as they complete."""
    with out.open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=FIELDS)
        w.writeheader()
        fh.flush()
        env["compile"], env["compile_s"] = compile, {}
        for name, shape in shapes.items():
            model = build(shape, st.device, st.dtype, "grouped" if compile and shape.is_moe else "loop")
            step_fn = decode_step_fn(model, compile)
            if compile:   # the first calls compile: batch 1 (specialised) and batch 2 (symbolic), context 2
                env["compile_s"][name], _ = timed(
                    lambda: bench_block(model, shape, [1, 2], 2, 1, st.device, step_fn=step_fn), st.device)
                print(f"  {name}: compiled the decode step in {env['compile_s'][name]:.1f} s", flush=True)
            _bench_model(name, shape, model, step_fn, st, w, fh)
            del model


def main(argv: Sequence[str] | None = None) -> int:
    a = parse_args(argv)
    device = torch.device(a.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("error: --device cuda but no CUDA device is available", file=sys.stderr)
        return 2
    if a.threads and device.type == "cpu":
        torch.set_num_threads(a.threads)
    dtype_name = a.dtype or ("bf16" if device.type == "cuda" else "fp32")
    dtype = DTYPES[dtype_name]
    gpu = device.type == "cuda"
    d, layers, batches, contexts, repeats = _plan(a, gpu)
    max_step = a.max_step_s if a.max_step_s is not None else (math.inf if gpu else 1.0)
    cap = (a.max_cache_gb if a.max_cache_gb is not None else (20.0 if gpu else 2.0)) * 1e9
    out = Path(a.out or f"reports/data/decode_{device.type}.csv")
    out.parent.mkdir(parents=True, exist_ok=True)
    env_path = out.with_name(out.stem + "_env.json")
    try:
        shapes = _select_models(model_shapes(d, layers, a.heads, a.vocab, 4 * d, max(contexts) + 2), a.models)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    torch.manual_seed(0)
    peak, bw = _measure_roofline(device, dtype, a.quick)
    stream_mb = 16 if a.quick else 512
    rates = streaming_rates(device, dtype, sorted(set(batches) | {1}), n_bytes=stream_mb * 2 ** 20)
    env = environment(device, dtype_name)
    env.update({"command": " ".join([PROG, *(argv or sys.argv[1:])]),
                "measured_peak_flops_fma2_per_s": peak, "measured_read_bandwidth_bytes_per_s": bw,
                "peak_method": "best of 5 square fp matmuls, 2 FLOP per multiply-add",
                "bandwidth_method": "best of 5 sums of a large fp32 tensor (bytes read / s)",
                "weight_streaming_bytes_per_s": {k: {str(b): r for b, r in v.items()} for k, v in rates.items()},
                "weight_streaming_method": (f"experiments.bench.weight_streaming: F.linear and x @ W over "
                                            f"{stream_mb} MiB of [4096, 1024] weights, best of 5"),
                "models": {k: s.to_dict() for k, s in shapes.items()}, "batches": batches, "contexts": contexts,
                "repeats": repeats, "max_cache_bytes": cap, "max_step_s": max_step, "csv": str(out), "started_unix_s": time.time()})
    env_path.write_text(json.dumps(env, indent=2))
    print(f"# {env['device_name']} ({env['cpu_model']}), {torch.get_num_threads()} thread(s), {dtype_name}: "
          f"matmul peak {peak / 1e9:.1f} GFLOP/s, read bandwidth {bw / 1e9:.1f} GB/s -> {out}", flush=True)
    st = _Setup(device, dtype, dtype_name,
                Hardware(f"measured {device.type}", peak_bf16_flops_per_s=peak, peak_fp32_flops_per_s=peak,
                         memory_bandwidth_bytes_per_s=bw),
                Layout(gpus=1, weights_dtype=dtype_name, kv_dtype=dtype_name, attention_dtype=dtype_name),
                peak, bw, batches, contexts, repeats, cap, max_step,
                env["cpu_model"] if device.type == "cpu" else env["device_name"], rates, time.time())
    _run_models(shapes, st, a.compile, env, out)
    env["finished_unix_s"] = time.time()
    env_path.write_text(json.dumps(env, indent=2))
    print(f"wrote {out} and {env_path} in {time.time() - st.t_start:.0f}s")
    return 0


def _row(shape: ModelShape, c, res: dict, pred, st: _Setup, *, name: str, context: int, batch: int) -> dict:
    """One CSV row: the measured step times at (context, batch) beside the roofline's prediction ``pred``
    and the bound of GEMMs at this device's measured weight-streaming rates (``weight_streaming``)."""
    ts = res["times"]
    med = statistics.median(ts)
    q1, _, q3 = quartiles(ts)
    kv, routed = pred.parts["attention_cache"].bytes, pred.parts["routed_experts"].bytes
    distinct = expected_distinct_experts(shape.n_experts, shape.top_k, batch) if shape.is_moe else None
    bound = streaming_bound_s(compute_s=pred.compute_s, weight_bytes=pred.bytes - kv, routed_bytes=routed,
                              kv_bytes=kv, batch=batch, top_k=shape.top_k, distinct_experts=distinct,
                              rates=st.rates, bandwidth=st.bw)
    return {"device": st.row_device, "dtype": st.dtype_name, "model": name,
            "n_experts": shape.n_experts, "top_k": shape.top_k, "attention": shape.attention,
            "context": context, "batch": batch, "repeats": len(ts), "step_s_median": med, "step_s_q1": q1,
            "step_s_q3": q3, "step_s_min": min(ts), "step_s_max": max(ts),
            "tokens_per_s_median": batch / med, "predicted_step_s": pred.step_s,
            "predicted_compute_s": pred.compute_s, "predicted_memory_s": pred.memory_s,
            "predicted_bound": pred.bound, "predicted_bytes": pred.bytes,
            "predicted_kv_bytes": kv, "predicted_routed_bytes": routed,
            "predicted_flops_fma2": pred.flops_fma2,
            "measured_over_predicted_tokens_per_s": pred.step_s / med,
            "distinct_experts_measured": res["distinct"], "distinct_experts_predicted": distinct,
            "total_params": c.total, "active_params": c.active,
            "peak_flops_per_s": st.peak, "bandwidth_bytes_per_s": st.bw,
            "linear_weight_bytes_per_s": rate_at(st.rates["linear"], batch),
            "streaming_bound_step_s": bound, "measured_over_streaming_bound": bound / med}


def _kv_bytes_per_token(shape: ModelShape, dtype: torch.dtype) -> float:
    return kv_cache_elements_per_token(shape) * torch.finfo(dtype).bits / 8


if __name__ == "__main__":
    sys.exit(main())
