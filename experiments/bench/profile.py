"""Where a training step's time goes: the top operators by self CPU time of each model's step, eager and
(``--compile``) compiled, with the same models, batches and optimiser as ``experiments.bench.paired``.

    python -m experiments.bench.profile --models dense moe --compile --steps 20 --out runs/profile

Prints, per model, the operators that take the most self time over ``--steps`` profiled steps (after
``--warmup`` unprofiled ones, which also compile), and writes ``<out>/profile.csv`` (and ``env.json``: device, torch, commit): model, operator, calls,
self CPU time per step (ms) and its share of the step. Self time excludes the time of child operators, so
the shares of one model sum to at most 1 (the rest is Python and framework time outside any operator).
"""
from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path
from typing import Callable

import torch
from torch.profiler import ProfilerActivity, profile

from ..config import ConfigError, first_line
from ..environment import environment
from .paired import build, build_states, timed_step


def top_ops(step: Callable[[], float], steps: int, top: int) -> list[dict]:
    """The ``top`` operators by self CPU time over ``steps`` profiled calls of ``step`` (which returns its
    own wall seconds): per operator its calls, self ms and share of the step, per step."""
    wall = 0.0
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(steps):
            wall += step()
    events = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)[:top]
    step_ms = 1e3 * wall / steps
    return [{"operator": e.key, "calls_per_step": e.count / steps,
             "self_ms_per_step": e.self_cpu_time_total / 1e3 / steps,
             "share_of_step": e.self_cpu_time_total / 1e3 / steps / step_ms, "step_ms": step_ms} for e in events]


def run(models: list[str], size: str, steps: int, warmup: int, top: int, compile: bool) -> list[dict]:
    """Rows of `top_ops` for every model (and its compiled copy with ``compile``), one thread, on the CPU."""
    torch.set_num_threads(1)
    dev = torch.device("cpu")
    state = build_states(build(models, "demo", size, []), None, 0, dev, compile)
    rows = []
    for name, s in state.items():
        for _ in range(warmup):
            timed_step(s, dev)
        rows += [{"model": name, **r} for r in top_ops(lambda: timed_step(s, dev), steps, top)]
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m experiments.bench.profile", description=__doc__.split("\n")[0])
    p.add_argument("--models", nargs="+", default=["dense", "moe"], help="conf/model names (default dense moe)")
    p.add_argument("--size", default="tiny", help="conf/size name (default tiny)")
    p.add_argument("--steps", type=int, default=20, help="profiled steps per model (default 20)")
    p.add_argument("--warmup", type=int, default=3, help="unprofiled steps first (default 3; they compile)")
    p.add_argument("--top", type=int, default=12, help="operators shown per model (default 12)")
    p.add_argument("--compile", action="store_true", help="also profile a torch.compile'd copy of every model")
    p.add_argument("--out", default="runs/profile", help="output folder (default runs/profile)")
    a = p.parse_args(argv)
    if a.steps < 1 or a.warmup < 0 or a.top < 1:
        print("error: --steps and --top must be >= 1, --warmup >= 0", file=sys.stderr)
        return 2
    try:
        rows = run(a.models, a.size, a.steps, a.warmup, a.top, a.compile)
    except (ConfigError, ValueError) as e:
        print(f"error: {first_line(e)}", file=sys.stderr)
        return 2
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    env = environment(torch.device("cpu"), "fp32")
    env["command"] = "python -m experiments.bench.profile " + " ".join(sys.argv[1:] if argv is None else argv)
    (out / "env.json").write_text(json.dumps(env, indent=1))
    with (out / "profile.csv").open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    for name in dict.fromkeys(r["model"] for r in rows):
        mine = [r for r in rows if r["model"] == name]
        print(f"{name}: {mine[0]['step_ms']:.2f} ms/step")
        for r in mine:
            print(f"  {r['self_ms_per_step']:7.2f} ms {100 * r['share_of_step']:5.1f}%  x{r['calls_per_step']:<6g} {r['operator']}")
    print(f"wrote {out}/profile.csv, env.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
