"""What every benchmark here times with: device synchronisation, one timed call, medians with their
spread, and the dtype names the command lines accept.

Conventions: times are seconds (``_s``). On a CPU a call is timed with ``time.perf_counter``; on CUDA
either with a synchronize before and after (``timed``, wall clock of the queued work) or with CUDA events
(``time_once``). Quartiles use ``statistics.quantiles(..., method="inclusive")`` (the sample's own min and
max are the 0th and 4th quartile).
"""
from __future__ import annotations

import statistics
import time
from typing import Callable, TypeVar

import torch

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}
"""Command-line dtype names -> torch dtypes."""

T = TypeVar("T")


def sync(device: torch.device) -> None:
    """Wait for the queued work on ``device`` (a no-op on a CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn: Callable[[], T], device: torch.device) -> tuple[float, T]:
    """(seconds, result) of one call of ``fn``: synchronize, ``perf_counter``, call, synchronize."""
    sync(device)
    t0 = time.perf_counter()
    out = fn()
    sync(device)
    return time.perf_counter() - t0, out


def time_once(fn: Callable[[], object], device: torch.device) -> float:
    """Seconds for one call of ``fn`` (CUDA events on a GPU, so queued kernels are counted; wall clock on a CPU)."""
    if device.type == "cuda":
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        torch.cuda.synchronize(device)
        return start.elapsed_time(end) / 1e3
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def time_fn(fn: Callable[[], object], device: torch.device, warmup: int, repeats: int) -> list[float]:
    """Seconds per call of ``fn`` (``time_once``) for ``repeats`` calls after ``warmup`` untimed calls."""
    for _ in range(warmup):
        fn()
    return [time_once(fn, device) for _ in range(repeats)]


def median_time(fn: Callable[[], object], device: torch.device, warmup: int, repeats: int) -> float:
    """Median seconds of ``repeats`` calls (``timed``) after ``warmup`` untimed calls."""
    for _ in range(warmup):
        fn()
    sync(device)
    return statistics.median(timed(fn, device)[0] for _ in range(repeats))


def round_robin(steps: list[Callable[[], object]], device: torch.device, warmup: int,
                repeats: int) -> list[list[float]]:
    """Interleaved timing: ``warmup`` untimed rounds, then ``repeats`` rounds that each time every step once
    in turn (``time_once``), so a slow drift of the machine hits all steps alike; seconds per step, per round."""
    for _ in range(warmup):
        for step in steps:
            step()
    sync(device)
    times: list[list[float]] = [[] for _ in steps]
    for _ in range(repeats):
        for step, ts in zip(steps, times):
            ts.append(time_once(step, device))
    return times


def quartiles(v: list[float]) -> tuple[float, float, float]:
    """(first quartile, median, third quartile) of ``v`` (inclusive method; one value gives it thrice)."""
    if len(v) == 1:
        return v[0], v[0], v[0]
    q1, med, q3 = statistics.quantiles(v, n=4, method="inclusive")
    return q1, med, q3
