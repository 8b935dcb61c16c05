"""Micro-benchmark: producing one more token with a KV cache vs recomputing the whole window.

Per generated token at context n, the cached path costs the new token's projections and FFN plus
attention over n cached keys (linear in n); full recompute runs a forward over all n + 1 tokens (its
attention is quadratic in n). ``accounting.flops.decode_flops_per_token`` and ``full_recompute_flops``
price the two; this module times them.

    python -m experiments.bench.decode_vs_recompute          # prints a table (CPU, 1 thread, batch 8)
    python -m experiments.bench.decode_vs_recompute --contexts 256 1024 4096 --d-model 128 --device cuda

``time_decode`` is what ``experiments.bench.grid`` calls.
"""
from __future__ import annotations

import argparse
import math
from typing import Sequence

import torch

from accounting.flops import FLOP, decode_flops_per_token, full_recompute_flops
from accounting.memory import kv_cache_elements_per_token
from accounting.shapes import ModelShape

from dense.model import Transformer

from .timing import median_time


@torch.no_grad()
def time_one_context(model: Transformer, context: int, *, warmup: int = 2, repeats: int = 5,
                     batch: int = 1) -> dict:
    """Median seconds to produce token ``context + 1`` with a cache (``cached_s``) and without
    (``recompute_s``, a forward over ``context + 1`` tokens, logits at the last position only)."""
    shape = model.shape
    if context + 1 > shape.seq_len:
        raise ValueError(f"context {context} + 1 exceeds the model's seq_len={shape.seq_len}")
    device = next(model.parameters()).device
    idx = torch.randint(0, shape.vocab_size, (batch, context + 1), device=device)
    cache = model.new_cache(batch, max_len=context + 1)
    model(idx[:, :context], cache=cache, last_only=True)  # prefill once (not timed)

    def cached_step():
        cache.reset(context)  # overwrite the last slot every repeat: same work each time
        model(idx[:, context:], cache=cache, last_only=True)

    def recompute_step():
        model(idx, last_only=True)

    cached_s = median_time(cached_step, device, warmup, repeats)
    recompute_s = median_time(recompute_step, device, warmup, repeats)
    cached_flops = decode_flops_per_token(shape, context, flops_per_mac=FLOP) * batch
    recompute_flops = full_recompute_flops(shape, context, flops_per_mac=FLOP) * batch
    return {"context": context, "batch": batch, "cached_s": cached_s, "recompute_s": recompute_s,
            "cached_ms_per_token": 1e3 * cached_s / batch, "recompute_ms_per_token": 1e3 * recompute_s / batch,
            "speedup": recompute_s / cached_s, "cached_flops": cached_flops, "recompute_flops": recompute_flops,
            "flop_convention": "2 per multiply-add", "device": str(device), "repeats": repeats}


def time_decode(model_or_shape: Transformer | ModelShape, contexts: Sequence[int] | None = None, *,
                context: int | None = None, warmup: int = 2, repeats: int = 5, batch: int = 1,
                device: str | torch.device | None = None, dtype: torch.dtype | None = None):
    """Time cached decode against full recompute, per generated token.

    Args:
        model_or_shape: a built ``Transformer`` (dense or MoE; used as is) or a ``ModelShape`` (a dense model
            is built with ``seq_len`` raised to ``max(contexts) + 1``, on ``device`` in ``dtype``).
        contexts: context lengths n (tokens already in the cache) -> returns a list of rows, one per n.
        context: a single n -> returns that one row (a dict).
        warmup, repeats: untimed and timed calls per measurement; rows hold the median.
    Row keys: ``context``, ``cached_s``, ``recompute_s`` (seconds per step of ``batch`` tokens),
    ``cached_ms_per_token``, ``recompute_ms_per_token``, ``speedup``, ``cached_flops``,
    ``recompute_flops`` (accounting's counts, 2 flops per multiply-add), ``flop_convention``, ``device``.
    """
    if (contexts is None) == (context is None):
        raise ValueError("pass exactly one of contexts (a list) or context (one int)")
    wanted = [context] if context is not None else list(contexts)
    if isinstance(model_or_shape, ModelShape):
        shape = model_or_shape.replace(seq_len=max(model_or_shape.seq_len, max(wanted) + 1))
        model = Transformer(shape).to(device=device or "cpu", dtype=dtype or torch.float32)
    else:
        model = model_or_shape
    was_training = model.training
    model.eval()
    try:
        rows = [time_one_context(model, n, warmup=warmup, repeats=repeats, batch=batch) for n in wanted]
    finally:
        model.train(was_training)
    return rows[0] if context is not None else rows


def format_table(rows: list[dict]) -> str:
    """A plain-text table; the growth columns give d log(time) / d log(n) between successive rows."""
    lines = [f"{'context':>8} {'cached ms/tok':>14} {'recompute ms/tok':>17} {'speedup':>8} "
             f"{'cached exp':>10} {'recomp exp':>10} {'cached GFLOP':>13} {'recomp GFLOP':>13}"]
    prev = None
    for r in rows:
        if prev is None:
            ce = re = ""
        else:
            dn = math.log(r["context"] / prev["context"])
            ce = f"{math.log(r['cached_s'] / prev['cached_s']) / dn:.2f}"
            re = f"{math.log(r['recompute_s'] / prev['recompute_s']) / dn:.2f}"
        lines.append(f"{r['context']:>8} {r['cached_ms_per_token']:>14.3f} {r['recompute_ms_per_token']:>17.3f} "
                     f"{r['speedup']:>8.1f} {ce:>10} {re:>10} {r['cached_flops'] / 1e9:>13.4f} "
                     f"{r['recompute_flops'] / 1e9:>13.4f}")
        prev = r
    return "\n".join(lines)


def fit_growth(rows: list[dict]) -> dict:
    """Least-squares fits of seconds per step against context n: cached ``a + b n``, recompute
    ``a + b n + c n^2``; with R^2 of each. A cached path that is linear fits its line well; recompute
    needs the quadratic term."""
    n = torch.tensor([float(r["context"]) for r in rows], dtype=torch.float64)
    out = {}
    for key, powers in (("cached_s", (0, 1)), ("recompute_s", (0, 1, 2))):
        t = torch.tensor([r[key] for r in rows], dtype=torch.float64)
        A = torch.stack([n ** p for p in powers], dim=1)
        coef = torch.linalg.lstsq(A, t[:, None]).solution.flatten()
        resid = t - A @ coef
        r2 = 1 - float(resid.square().sum() / (t - t.mean()).square().sum().clamp_min(1e-300))
        out[key] = {"coef": coef.tolist(), "r2": r2}
    return out


def main(argv: Sequence[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--contexts", type=int, nargs="+", default=[256, 512, 1024, 2048, 4096, 8192])
    p.add_argument("--d-model", type=int, default=64)
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--vocab", type=int, default=256)
    p.add_argument("--batch", type=int, default=8, help="sequences decoded together (amortises the Python "
                   "overhead per step, so the attention term shows); times are per token")
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--attention", choices=["mha", "mla"], default="mha",
                   help="mla: DeepSeek's latent attention with ranks d/2, nope = v = d/H, rope = d/2H "
                        "(as conf/model/deepseek_mla.yaml)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=1, help="CPU threads (1: steadier timings on a shared "
                   "machine; 0 keeps torch's default)")
    a = p.parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    mla = {}
    if a.attention == "mla":
        hd = a.d_model // a.heads
        mla = dict(attention="mla", q_lora_rank=a.d_model // 2, kv_lora_rank=a.d_model // 2,
                   qk_nope_head_dim=hd, qk_rope_head_dim=max(2, hd // 2), v_head_dim=hd)
    shape = ModelShape(vocab_size=a.vocab, d_model=a.d_model, n_layers=a.layers, n_heads=a.heads,
                       seq_len=max(a.contexts) + 1, **mla)
    rows = time_decode(shape, a.contexts, warmup=a.warmup, repeats=a.repeats, batch=a.batch, device=a.device)
    print(f"# d={a.d_model} L={a.layers} H={a.heads} V={a.vocab} attention={a.attention} (cache "
          f"{kv_cache_elements_per_token(shape)} elements/token) batch={a.batch} device={a.device} "
          f"threads={torch.get_num_threads()} torch={torch.__version__}; median of {a.repeats}; "
          "exp = growth exponent vs previous row (1 = linear, 2 = quadratic)")
    print(format_table(rows))
    if len(rows) >= 4:
        fit = fit_growth(rows)
        (a, b), r2c = fit["cached_s"]["coef"], fit["cached_s"]["r2"]
        (a2, b2, c2), r2r = fit["recompute_s"]["coef"], fit["recompute_s"]["r2"]
        print(f"# cached    step_s ~ {a:.3e} + {b:.3e} n            (R^2 {r2c:.3f})")
        print(f"# recompute step_s ~ {a2:.3e} + {b2:.3e} n + {c2:.3e} n^2   (R^2 {r2r:.3f})")


if __name__ == "__main__":
    main()
