"""How many GPUs: the smallest count whose layout fits a GPU's memory (``--gpus auto`` of ``train-memory``
and ``cost``) and the wall-clock time of a run on a given count (``cost --gpus G``)."""
from __future__ import annotations

from .hardware import Hardware
from .shapes import ModelShape
from .training_memory import TrainingMemory, plan
from .training_settings import Layout, LayoutError, Settings, check_layout


def candidate_layouts(shape: ModelShape, gpus: int, gpus_per_node: int = 8):
    """Every layout of ``gpus`` GPUs: tp up to a node dividing the heads, pp up to the layers, ep dividing
    the experts and dp, ZeRO 0-3; the least model parallelism (tp x pp) first, then the lowest ZeRO stage."""
    out = []
    for tp in _divisors(gpus):
        if tp > gpus_per_node:
            continue
        for pp in _divisors(gpus // tp):
            lay0 = Layout(gpus, tp, pp)
            try:
                check_layout(shape, lay0)
            except LayoutError:
                continue
            eps = [e for e in _divisors(lay0.dp) if shape.is_moe and shape.n_experts % e == 0] or [1]
            for ep in eps:
                for zero in range(4):
                    out.append(Layout(gpus, tp, pp, ep, zero, sp=tp > 1))
    out.sort(key=lambda l: (l.tp * l.pp, l.zero, -l.ep, l.tp))
    return out


def _divisors(n: int) -> list[int]:
    return [i for i in range(1, n + 1) if n % i == 0]


def gpu_counts(gpus_per_node: int, limit: int = 1 << 16):
    """GPU counts tried by ``--gpus auto``: 1, 2, 4, ... up to a node, then whole nodes."""
    g = 1
    while g < gpus_per_node:
        yield g
        g *= 2
    k = 1
    while k * gpus_per_node <= limit:
        yield k * gpus_per_node
        k += 1 if k < 8 else k // 8


def auto_layout(shape: ModelShape, settings: Settings, gpu: Hardware, limit: int = 1 << 16) -> tuple[TrainingMemory, str]:
    """(TrainingMemory, reason): the smallest GPU count with a layout that fits ``gpu``'s memory."""
    if gpu.memory_bytes is None:
        raise LayoutError(f"--gpus auto needs the memory of the GPU; {gpu.name} has none recorded")
    for g in gpu_counts(gpu.gpus_per_node, limit):
        for lay in candidate_layouts(shape, g, gpu.gpus_per_node):
            r = plan(shape, settings, lay, gpu)
            if r.fits:
                why = (f"{g} GPUs is the smallest count tried (1, 2, 4, ... a node, then whole nodes) with a layout "
                       f"that fits {gpu.memory_bytes / 1e9:g} GB; among its layouts this one has the least model "
                       f"parallelism (tp x pp = {lay.tp * lay.pp}), then the lowest ZeRO stage ({lay.zero}), then "
                       f"the widest expert parallelism (ep = {lay.ep})")
                return r, why
    raise LayoutError(f"no layout of up to {limit} {gpu.name} GPUs fits this model at this micro-batch")


def wall_clock(gpu_hours: float, gpus: int) -> dict:
    """``cost --gpus G``: the run's wall-clock time on G GPUs, ``gpu_hours / G`` (at the MFU priced)."""
    if isinstance(gpus, bool) or not isinstance(gpus, int) or gpus < 1:
        raise LayoutError(f"--gpus must be a positive integer, got {gpus!r}")
    return {"gpus": gpus, "wall_clock_hours": gpu_hours / gpus, "wall_clock_days": gpu_hours / gpus / 24}


def wall_clock_line(d: dict) -> str:
    """The line ``cost --gpus G`` adds to its table (empty without ``--gpus``)."""
    if "wall_clock_days" not in d:
        return ""
    return f"\nwall clock: {d['wall_clock_days']:,.1f} days on {d['gpus']:,} GPUs (GPU-hours / GPUs, at the MFU above)"
