"""How fast this device streams weights through a matmul with few rows: the GEMMs of a decode step.

A memory-bound roofline assumes that a decode step reads every weight once at the device's full read
bandwidth, whatever the batch B: the B rows share each weight read. A real matmul library reaches that only
if its kernel for a [B, K] x [K, N] product with small B keeps the weight streaming; on a CPU it often does
not (the kernel for few rows is slower per row than bandwidth allows). This module measures that rate for
the two layouts our decode step uses:

* ``linear``: ``F.linear(x [B, K], W [N, K])`` (``nn.Linear``'s weight layout: attention, dense FFN, head);
* ``mm``: ``x [B, K] @ W [K, N]`` (the routed experts' stacked [E, d, f] weights, ``moe.sorted_experts``).

Each rate is the bytes of the weights read per second, over a set of [N, K] matrices whose total exceeds the
caches (``n_bytes``), best of ``repeats`` passes after a warm-up pass. ``streaming_bound_s`` turns the rates
into the step time a decode made of such GEMMs cannot beat:

    bound = max(compute_s, other weight bytes / linear(B) + routed bytes / mm(B k / distinct) + KV bytes / bw)

The command prints the table (``python -m experiments.bench.weight_streaming --rows 1 2 4 8 16 32``).
"""
from __future__ import annotations

import argparse
import math
import sys
from typing import Sequence

import torch
import torch.nn.functional as F

from .timing import DTYPES, timed

LAYOUTS = ("linear", "mm")


def streaming_rates(device: torch.device, dtype: torch.dtype, rows: Sequence[int], k: int = 1024,
                    n: int = 4096, n_bytes: int = 512 * 2 ** 20, repeats: int = 5) -> dict[str, dict[int, float]]:
    """{layout: {B: weight bytes read per second}} for each B in ``rows`` (see the module's text)."""
    size = torch.finfo(dtype).bits // 8
    count = max(1, math.ceil(n_bytes / (k * n * size)))
    weights = [torch.randn(n, k, device=device, dtype=dtype) for _ in range(count)]   # [N, K] each
    total = count * k * n * size
    rates: dict[str, dict[int, float]] = {layout: {} for layout in LAYOUTS}
    for b in rows:
        x_linear = torch.randn(b, k, device=device, dtype=dtype)
        x_mm = torch.randn(b, n, device=device, dtype=dtype)          # x [B, N] @ W [N, K]: the same bytes
        passes = {"linear": lambda: [F.linear(x_linear, w) for w in weights],
                  "mm": lambda: [x_mm @ w for w in weights]}
        for layout, fn in passes.items():
            fn()
            rates[layout][b] = total / min(timed(fn, device)[0] for _ in range(repeats))
    return rates


def rate_at(rates: dict[int, float], rows: float) -> float:
    """The rate measured at the largest B <= ``rows`` (at least the smallest measured B)."""
    below = [b for b in rates if b <= rows]
    return rates[max(below) if below else min(rates)]


def streaming_bound_s(*, compute_s: float, weight_bytes: float, routed_bytes: float, kv_bytes: float,
                      batch: int, top_k: int, distinct_experts: float | None, rates: dict[str, dict[int, float]],
                      bandwidth: float) -> float:
    """The decode step time that GEMMs at the measured streaming rates allow: the non-routed weights at the
    ``linear`` rate for B rows, the routed experts at the ``mm`` rate for the rows each receives
    (B k / distinct experts), the KV cache at the read bandwidth; never below the compute time."""
    memory = (weight_bytes - routed_bytes) / rate_at(rates["linear"], batch) + kv_bytes / bandwidth
    if routed_bytes:
        memory += routed_bytes / rate_at(rates["mm"], batch * top_k / max(1.0, distinct_experts or 1.0))
    return max(compute_s, memory)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m experiments.bench.weight_streaming",
                                description=__doc__.split("\n")[0])
    p.add_argument("--rows", type=int, nargs="+", default=[1, 2, 4, 8, 16, 32], help="batch rows B")
    p.add_argument("--k", type=int, default=1024, help="input width of each weight")
    p.add_argument("--n", type=int, default=4096, help="output width of each weight")
    p.add_argument("--dtype", choices=sorted(DTYPES), default="fp32")
    p.add_argument("--threads", type=int, default=1, help="CPU threads (0 keeps torch's default)")
    a = p.parse_args(argv)
    if min(a.rows) < 1 or a.k < 1 or a.n < 1:
        p.error("--rows, --k and --n must be positive")
    if a.threads:
        torch.set_num_threads(a.threads)
    rates = streaming_rates(torch.device("cpu"), DTYPES[a.dtype], a.rows, a.k, a.n)
    size = torch.finfo(DTYPES[a.dtype]).bits // 8
    print(f"{'B':>4s} " + " ".join(f"{layout + ' GB/s':>12s} {layout + ' GFLOP/s':>15s}" for layout in LAYOUTS))
    for b in a.rows:   # 2 FLOP per multiply-add: 2 B FLOP per weight element, 2 B / size per byte
        print(f"{b:4d} " + " ".join(f"{rates[layout][b] / 1e9:12.1f} {2 * b * rates[layout][b] / size / 1e9:15.1f}"
                                    for layout in LAYOUTS))
    return 0


if __name__ == "__main__":
    sys.exit(main())
