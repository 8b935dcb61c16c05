"""How fast this CPU streams a weight matrix through a matmul with few rows: the decode step's GEMMs.

    PYTHONPATH=. python scripts/skinny_gemm.py --d-model 1024 --ffn 4096 --batches 1 2 4 8 16 32

For each batch B it times ``x[B, d] @ W[d, f]`` (fp32, one thread, median of ``--repeats``) and prints the
achieved weight-read bandwidth (bytes of W / time) and FLOP rate (2 per multiply-add), beside a large
matmul's rate: a roofline that assumes the weights stream at full bandwidth for every B (memory-bound
decode) is only as good as these rows.
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch


def time_matmul(x: torch.Tensor, w: torch.Tensor, repeats: int) -> float:
    """Median seconds of ``x @ w`` over ``repeats`` calls after one warm-up call."""
    x @ w
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        x @ w
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--d-model", type=int, default=1024)
    p.add_argument("--ffn", type=int, default=4096)
    p.add_argument("--batches", type=int, nargs="+", default=[1, 2, 4, 8, 16, 32])
    p.add_argument("--repeats", type=int, default=50)
    a = p.parse_args()
    torch.set_num_threads(1)
    w = torch.randn(a.d_model, a.ffn)
    big = time_matmul(torch.randn(1024, a.d_model), w, 5)
    print(f"large matmul (1024 rows): {2 * 1024 * a.d_model * a.ffn / big / 1e9:.1f} GFLOP/s")
    for b in a.batches:
        s = time_matmul(torch.randn(b, a.d_model), w, a.repeats)
        print(f"B={b:<3d} {1e3 * s:7.3f} ms  weights {w.numel() * 4 / s / 1e9:5.1f} GB/s  "
              f"{2 * b * a.d_model * a.ffn / s / 1e9:6.1f} GFLOP/s")


if __name__ == "__main__":
    main()
