"""Paired benchmark of training cost per FLOP, MoE vs dense: ``python -m experiments.bench.paired``.

  python -m experiments.bench.paired                                  # demo models, 1 thread, CPU
  python -m experiments.bench.paired --models dense moe deepseek --repeats 300 --out reports/data/paired_cpu
  python -m experiments.bench.paired --device cuda --size small --threads 0 --out reports/data/paired_h100
  python -m experiments.bench.paired --compile --repeats 200 --out runs/paired_compiled   # + torch.compile

The demo's training runs report MFU one run at a time; on a shared machine their throughput swings with
whatever else runs (two identical MoE models measured 9.7% and 38.3% MFU in one demo). Here every model is
built in ONE process from the same configs as ``python -m experiments.train`` (``conf/``, the given
``experiment`` and ``size``) and their training steps (forward, backward, AdamW step) are INTERLEAVED: each
repeat times one step of every model, in an order that rotates from repeat to repeat, so a disturbance hits
all models of a repeat alike. Per repeat and MoE model::

    cost_ratio = (t_moe / F_moe) / (t_dense / F_dense)

where ``t`` is the step's wall time and ``F`` its training FLOP from the accounting (2 per multiply-add,
``experiments.metrics.train_flops_per_token``): > 1 means an MoE FLOP costs more time (so more dollars)
than a dense FLOP; 1 / cost_ratio is the MoE/dense MFU ratio. The summary is the median over repeats with
a percentile interval of that median from a moving-block bootstrap (blocks of ``BLOCK`` consecutive repeats,
so that a slow drift of the machine's load widens the interval instead of hiding in it). The interval
covers the noise within one run; the load average at start and end is recorded, because another run at
another load can land outside it.

``--compile`` adds a ``torch.compile``'d copy of every model (``<model>_compiled``, same weights, compiled
during the warm-up; the compile time per model is in ``summary.json``, ``compile_s``), interleaved with the
eager ones; a compiled MoE model's ratio is taken against the compiled dense model.

Inputs are random token ids (routing of untrained routers on them is near uniform; dropless routing does the
same FLOP either way). Writes ``<out>/paired.csv`` (one row per repeat and model), ``<out>/summary.json``
(per MoE model: median, interval, repeats) and ``<out>/env.json`` (``experiments.environment``).
"""
from __future__ import annotations

import argparse
import contextlib
import csv
import json
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
from hydra.errors import HydraException
from omegaconf.errors import OmegaConfBaseException

import moe

from ..config import ConfigError, compose, config_error, first_line, validate
from ..environment import environment
from ..metrics import train_flops_per_token
from ..trainer import build_model, make_optimizer  # the trainer's own model and optimiser
from .timing import timed

CSV_COLUMNS = ["repeat", "position", "model", "step_s", "tokens", "train_flops_fma2_per_token", "flops_fma2",
               "flops_fma2_per_s", "cost_ratio_vs_dense"]
BLOCK = 20
"""Repeats per bootstrap block."""
CONCLUSIVE_WIDTH = 0.10
"""An interval is 'narrow enough' when (high - low) / median is at most this (10%)."""


def bootstrap_median(x, n_boot: int = 2000, level: float = 0.95, seed: int = 0,
                     block: int = 1) -> tuple[float, float, float]:
    """(median, low, high): the median of ``x`` and a percentile-bootstrap interval of it; ``block`` > 1
    resamples runs of ``block`` consecutive values (moving-block bootstrap) for serially correlated noise."""
    x = np.asarray(x, dtype=float)
    x = x[np.isfinite(x)]
    if x.size == 0:
        return float("nan"), float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    b = max(1, min(block, x.size))
    n_blocks = -(-x.size // b)
    starts = rng.integers(0, x.size - b + 1, size=(n_boot, n_blocks))
    idx = (starts[:, :, None] + np.arange(b)[None, None, :]).reshape(n_boot, -1)[:, :x.size]
    meds = np.median(x[idx], axis=1)
    a = (1.0 - level) / 2.0
    return float(np.median(x)), float(np.quantile(meds, a)), float(np.quantile(meds, 1.0 - a))


def verdict(median: float, low: float, high: float, width: float = CONCLUSIVE_WIDTH) -> str:
    """One plain sentence about what the interval allows one to conclude."""
    if not all(np.isfinite([median, low, high])):
        return "no measurement"
    rel = (high - low) / median
    if rel > width:
        return (f"too wide to conclude: the interval spans {100 * rel:.0f}% of the median "
                f"(more than {100 * width:.0f}%)")
    if low <= 1.0 <= high:
        return "an MoE FLOP costs the same as a dense FLOP within the interval"
    return ("an MoE FLOP costs more than a dense FLOP" if low > 1.0 else
            "an MoE FLOP costs less than a dense FLOP")


BASELINES = ("dense", "dense_compiled")
"""The dense models every MoE model's cost per FLOP is taken against (eager and compiled)."""


def baseline_of(model: str) -> str:
    """The dense model ``model``'s cost ratio is taken against: ``dense_compiled`` for a compiled copy."""
    return BASELINES[1] if model.endswith("_compiled") else BASELINES[0]


def build(models: list[str], experiment: str, size: str, overrides: list[str]):
    """{name: (model spec, shape)} for ``model=<name> experiment=... size=...`` composed from conf/."""
    out = {}
    for name in models:
        ov = [f"model={name}", f"size={size}"] + ([f"experiment={experiment}"] if experiment else []) + overrides
        try:
            out[name] = validate(compose(ov))
        except (HydraException, OmegaConfBaseException) as e:
            raise config_error(e) from None
    return out


def run(models: list[str], experiment: str = "demo", size: str = "tiny", repeats: int = 200, warmup: int = 10,
        threads: int = 1, device: str = "cpu", batch_size: int | None = None, seed: int = 0,
        overrides: list[str] | None = None, progress: bool = True,
        compile: bool = False) -> tuple[list[dict], dict, dict]:
    """Time interleaved training steps; returns (csv rows, summary, environment). ``threads`` applies
    during the call only (torch's thread count is restored after)."""
    before = torch.get_num_threads()
    try:
        return _run(models, experiment, size, repeats, warmup, threads, device, batch_size, seed, overrides, progress,
                    compile)
    finally:
        torch.set_num_threads(before)


def build_states(specs: dict, batch_size: int | None, seed: int, dev: torch.device, compile: bool) -> dict[str, dict]:
    """Per model: built model, optimiser, a fixed random batch, its tokens and training FLOP per token; with
    ``compile`` also ``<name>_compiled``, a compiled copy with the same starting weights."""
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    state = {}
    for name, spec in specs.items():
        cfg, shape = spec.cfg, spec.shape
        b = batch_size or cfg["train"]["batch_size"]
        model = build_model(spec).to(dev).train()
        opt = make_optimizer(model, cfg["optim"], dev)
        moe.register_bias_update(model, opt)
        idx = torch.randint(0, shape.vocab_size, (b, shape.seq_len + 1), generator=gen).to(dev)
        fpt = train_flops_per_token(shape)
        state[name] = {"model": model, "opt": opt, "x": idx[:, :-1], "y": idx[:, 1:], "tokens": b * shape.seq_len,
                       "fpt": fpt, "shape": shape, "spec": spec, "fn": model, "dense": baseline_of(name)}
    if compile:   # a compiled copy of every model with the same starting weights
        for name in list(state):
            s = state[name]
            twin = build_model(s["spec"]).to(dev).train()
            twin.load_state_dict(s["model"].state_dict())
            opt = make_optimizer(twin, s["spec"].cfg["optim"], dev)
            moe.register_bias_update(twin, opt)
            state[f"{name}_compiled"] = {**s, "model": twin, "opt": opt, "fn": torch.compile(twin),
                                         "dense": baseline_of(f"{name}_compiled")}
    return state


def timed_step(s: dict, dev: torch.device) -> float:
    """Seconds of one training step (forward, backward, optimiser step) of state ``s``; bf16 autocast on CUDA."""
    def step():
        with torch.autocast(dev.type, dtype=torch.bfloat16) if dev.type == "cuda" else contextlib.nullcontext():
            out = s["fn"](s["x"], s["y"])
        out.loss.backward()
        s["opt"].step()
        s["opt"].zero_grad(set_to_none=True)
    return timed(step, dev)[0]


def _time_rotating(state: dict[str, dict], dev: torch.device, repeats: int, progress: bool) -> list[dict]:
    """``repeats`` rounds timing one step of every model, the first model rotating each round; a CSV row per
    (round, model) with its cost per FLOP relative to its dense model of the same round."""
    names = list(state)
    rows, t_start = [], time.perf_counter()
    for r in range(repeats):
        order = names[r % len(names):] + names[:r % len(names)]  # rotate who goes first
        times = {n: timed_step(state[n], dev) for n in order}
        for pos, n in enumerate(order):
            s = state[n]
            dense_cost = times[s["dense"]] / (state[s["dense"]]["fpt"] * state[s["dense"]]["tokens"])
            flops = s["fpt"] * s["tokens"]
            rows.append({"repeat": r, "position": pos, "model": n, "step_s": times[n], "tokens": s["tokens"],
                         "train_flops_fma2_per_token": s["fpt"], "flops_fma2": flops, "flops_fma2_per_s": flops / times[n],
                         "cost_ratio_vs_dense": (times[n] / flops) / dense_cost})
        if progress and (r + 1) % max(1, repeats // 10) == 0:
            el = time.perf_counter() - t_start
            print(f"repeat {r + 1}/{repeats}, {el:.0f} s elapsed, ~{el / (r + 1) * (repeats - r - 1):.0f} s left",
                  file=sys.stderr, flush=True)
    return rows


def _model_summary(n: str, s: dict, rows: list[dict]) -> dict:
    """Median step time and FLOP/s of model ``n``; for an MoE model its cost ratio, interval and verdict."""
    t = [row["step_s"] for row in rows if row["model"] == n]
    entry = {"train_flops_fma2_per_token": s["fpt"], "tokens_per_step": s["tokens"],
             "median_step_s": statistics.median(t), "backend": s["spec"].cfg["model"]["backend"],
             "median_flops_fma2_per_s": statistics.median(row["flops_fma2_per_s"] for row in rows if row["model"] == n)}
    if n not in BASELINES:
        med, lo, hi = bootstrap_median([row["cost_ratio_vs_dense"] for row in rows if row["model"] == n],
                                       block=BLOCK)
        entry.update(cost_ratio_median=med, cost_ratio_low=lo, cost_ratio_high=hi, verdict=verdict(med, lo, hi))
    return entry


def _run(models, experiment, size, repeats, warmup, threads, device, batch_size, seed, overrides, progress,
         compile=False):
    if len(models) < 2 or "dense" not in models:
        raise ValueError("--models needs 'dense' and at least one MoE model")
    dev = torch.device(device)
    if threads:
        torch.set_num_threads(threads)
    state = build_states(build(models, experiment, size, list(overrides or [])), batch_size, seed, dev, compile)
    env = environment(dev, "bf16" if dev.type == "cuda" else "fp32")  # before timing: the commit as it was run
    load_start = _loadavg()
    names = list(state)
    compile_s = {n: timed_step(state[n], dev) for n in names if n.endswith("_compiled")}  # the first step compiles
    for _ in range(warmup):
        for n in names:
            timed_step(state[n], dev)
    t_start = time.perf_counter()
    rows = _time_rotating(state, dev, repeats, progress)
    summary = {"repeats": repeats, "warmup": warmup, "experiment": experiment, "size": size,
               "threads": torch.get_num_threads(), "batch_size": {n: state[n]["tokens"] // state[n]["shape"].seq_len
                                                                 for n in names},
               "flop_convention": "2 per multiply-add",
               "interval": f"95% percentile moving-block bootstrap of the median (blocks of {BLOCK} repeats, 2000 resamples)",
               "loadavg_1min_start": load_start, "loadavg_1min_end": _loadavg(),
               "wall_s": time.perf_counter() - t_start, "compile_s": compile_s,
               "conclusive_width": CONCLUSIVE_WIDTH,
               "models": {n: _model_summary(n, state[n], rows) for n in names}}
    env.update({"command": "python -m experiments.bench.paired " + " ".join(sys.argv[1:])
                if sys.argv and sys.argv[0].endswith("paired.py") else "experiments.bench.paired.run"})
    return rows, summary, env


def _loadavg() -> float | None:
    """The 1-minute load average (None where the OS has none)."""
    try:
        return round(os.getloadavg()[0], 2)
    except (AttributeError, OSError):
        return None


def write(out: str | Path, rows: list[dict], summary: dict, env: dict) -> Path:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    with (out / "paired.csv").open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=CSV_COLUMNS)
        w.writeheader()
        for r in rows:
            w.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in r.items()})
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    (out / "env.json").write_text(json.dumps(env, indent=1))
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m experiments.bench.paired", description=__doc__.split("\n")[0])
    p.add_argument("--models", nargs="+", default=["dense", "moe", "deepseek"],
                   help="conf/model names; 'dense' and at least one MoE (default: dense moe deepseek)")
    p.add_argument("--experiment", default="demo", help="conf/experiment overrides to apply ('' for none)")
    p.add_argument("--size", default="tiny", help="conf/size name (default tiny, the demo's)")
    p.add_argument("--repeats", type=int, default=200, help="interleaved repeats (default 200)")
    p.add_argument("--warmup", type=int, default=10, help="untimed repeats first (default 10)")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1, the demo's; 0 keeps torch's)")
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--batch-size", type=int, default=None, help="sequences per step (default: the config's)")
    p.add_argument("--out", default="runs/paired", help="output folder (default runs/paired)")
    p.add_argument("--compile", action="store_true", help="also time a torch.compile'd copy of every model")
    p.add_argument("overrides", nargs="*", help="extra Hydra overrides applied to every model")
    a = p.parse_args(argv)
    if a.repeats < 2 or a.warmup < 0 or a.threads < 0:
        print("error: --repeats must be >= 2, --warmup and --threads >= 0", file=sys.stderr)
        return 2
    if a.device.startswith("cuda") and not torch.cuda.is_available():
        print("error: --device cuda but CUDA is not available", file=sys.stderr)
        return 2
    try:
        rows, summary, env = run(a.models, a.experiment, a.size, a.repeats, a.warmup, a.threads, a.device,
                                 a.batch_size, overrides=a.overrides, compile=a.compile)
    except (ConfigError, ValueError) as e:
        print(f"error: {first_line(e)}", file=sys.stderr)
        return 2
    out = write(a.out, rows, summary, env)
    for n, m in summary["models"].items():
        if n in summary["compile_s"]:
            print(f"{n}: compiled in {summary['compile_s'][n]:.1f} s (first step)")
        if n in BASELINES:
            print(f"{n}: {m['median_step_s'] * 1e3:.2f} ms/step, {m['median_flops_fma2_per_s'] / 1e9:.3g} GFLOP/s")
        else:
            print(f"{n}: {m['median_step_s'] * 1e3:.2f} ms/step, {m['median_flops_fma2_per_s'] / 1e9:.3g} GFLOP/s; "
                  f"MoE/dense cost per FLOP {m['cost_ratio_median']:.3f} "
                  f"[{m['cost_ratio_low']:.3f}, {m['cost_ratio_high']:.3f}] over {summary['repeats']} repeats: "
                  f"{m['verdict']}")
    print(f"wrote {out}/paired.csv, summary.json, env.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
