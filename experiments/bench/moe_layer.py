"""One MoE layer against a dense FFN of equal active flops, a plain matmul floor and peer implementations.

``python -m experiments.bench.moe_layer [--shapes fine coarse] [--dtypes fp32 bf16] [--threads 1 2]
[--repeats 9] [--out reports/data/moe_layer_cpu.csv]``; ``python -m experiments.bench.moe_layer table
before=A.csv after=B.csv`` prints the ratio rows of ``ours_grouped`` as a markdown table.

Per configuration (shape x dtype x thread count) every contender runs forward + backward of ONE layer on
``tokens`` tokens [1, T, d] (input gradient and all parameter gradients; the output gradient is a fixed
random tensor). Contenders:

* ``ours_<backend>``: ``moe.moe_ffn.MoEFFN`` (router + routed experts), backends ``loop``, ``grouped`` and,
  on CUDA with MegaBlocks importable, ``megablocks``; softmax gating, top-k renormalised (Mixtral's routing).
* ``ours_grouped_compiled``, ``dense_compiled`` (``--compile``): the same modules through ``torch.compile``
  (the grouped experts as ``moe.compiled_ops`` custom ops, no graph break); the note gives the compile time
  (the first forward + backward).
* ``dense``: ``dense.ffn.FFN`` of width ``k x d_expert``: the same active parameters and matmul flops per
  token (the MoE layer adds the router's ``2 E d`` per token).
* ``matmul``: the nine plain matmuls of the dense FFN's forward + backward on preallocated operands, no
  autograd, no elementwise work: the floor a layer of these flops can reach here.
* ``grouped_matmul``: the same nine products as one matmul per expert with the run's routing counts
  (``moe.sorted_experts.grouped_mm_into``: ``torch.mm`` per expert on a CPU, ``torch._grouped_mm`` on CUDA),
  preallocated, no autograd: the floor of any layer that computes its experts as per-expert GEMMs. ``grouped_matmul / matmul`` is what
  the matmul library charges for splitting the work into E smaller GEMMs; ``ours / grouped_matmul`` is
  what our layer adds on top (router, gathers, activation, combine).
* peers, when importable: transformers' ``MixtralSparseMoeBlock`` and ``Qwen3MoeSparseMoeBlock`` with
  ``experts_implementation='grouped_mm'`` (``--peer-eager`` adds Mixtral's eager per-expert loop), and
  torchtitan's ``MoE`` (its experts compute in bf16 whatever the input dtype, so its fp32 rows time a
  bf16 computation). Same weights copied in, same routing function (so the same routing up to ties).
  torchtitan is not in the project's environment (its dependencies would change shared packages); the
  committed CPU runs used ``pip install --no-deps --target DIR torchtitan==0.3.0 spmd_types tyro
  docstring_parser triton`` with DIR on PYTHONPATH; without it the row says ``unavailable``.

Before a contender is timed its output on the same input is compared with the reference (our ``loop``
backend in the run's dtype on the same weights, so the routing is computed from the same rounded logits):
relative error ``|y - ref|_2 / |ref|_2`` at most ``1e-4`` (fp32) or ``3e-2`` (bf16 compute), the norms
taken over all tokens but the ``TIE_FRACTION`` (2%) with the largest error: in bf16 the router's rounded
logits tie often, and implementations break top-k ties differently (torchtitan's unsorted top-k); a wrong
weight or formula moves every token and still fails. A contender that fails is recorded with status ``mismatch`` and not
timed. ``dense`` and ``matmul`` compute a different function (same flops) and are not checked.

Timing: ``--warmup`` rounds, then ``--repeats`` rounds; each round runs every contender once, in turn
(round-robin), so slow drifts of the machine's load hit all contenders alike. ``time.perf_counter`` on a
CPU; CUDA events with a synchronize on a GPU. Seconds per step: median, quartiles, min, max.

Flops (2 per multiply-add; fwd + bwd = 3 x fwd): ``flops`` = 3 x 2 x T x (k x m d f) for the expert
matmuls (m = 3 SwiGLU matrices), the same for ``dense`` and ``matmul``; the router's 3 x 2 x T x E d is in
``router_flops`` (MoE contenders only). ``tflops_per_s`` = flops / median_s / 1e12.

``--profile N``: after the timed rounds, every timed contender runs N more steps under the torch profiler;
``<out>.profile.csv`` gets its top operators by self CPU time (``PROFILE_COLUMNS``: calls, self ms and share
of the step, per step; ``experiments.bench.profile.top_ops``), to say where a gap between contenders goes.

Rows (``row``): ``time`` (one per contender) and ``ratio`` (``ours_*`` over every other contender): the
median and quartiles of the PER-ROUND time ratios, so that a load change between rounds cancels. Rows are
appended as each configuration finishes; ``<out>.env.json`` (written before the first configuration and
again, with the end's load and time, after the last) holds the environment (CPU model, cores,
threads, torch, transformers, git commit, load averages at start and end).
"""
from __future__ import annotations

import argparse
import contextlib
import csv
import importlib.metadata
import importlib.util
import json
import os
import sys
import time
from pathlib import Path
from typing import Callable

import torch

from dense.ffn import FFN

from ..atomic import write_text_atomic
from ..environment import cpu_features, cpu_model, device_name, git_commit
from .moe_layer_contenders import (Contender, available_peers, check_contenders, compiled_contender, copy_ours,
                                   grouped_matmul_contender, matmul_contender, module_contender, moe_shape, ours,
                                   peer_contenders)
from .profile import top_ops
from .timing import DTYPES, quartiles, round_robin, timed

SHAPES = {  # name: (n_experts E, top_k k, d_expert f)
    "fine": (64, 8, 256),     # DeepSeek-style fine-grained experts
    "coarse": (8, 2, 1024),   # Mixtral-style
}
COLUMNS = ["row", "shape", "n_experts", "top_k", "d_model", "d_expert", "tokens", "dtype", "threads",
           "contender", "vs", "status", "rel_err", "median", "q1", "q3", "min", "max", "repeats", "flops",
           "router_flops", "tflops_per_s", "unit", "load1_start", "load1_end", "device", "device_name",
           "torch", "git_commit", "note"]
PROFILE_COLUMNS = ["shape", "dtype", "threads", "contender", "operator", "calls_per_step", "self_ms_per_step",
                   "share_of_step", "step_ms"]
PROFILE_TOP = 15   # operators kept per contender


def _ours_contenders(shape, ref_mod, x, gy, device, dtype, args) -> tuple[list[Contender], list[dict]]:
    """Our layer on each backend of ``args.backends`` (+ megablocks on CUDA in bf16 when importable), with
    ``ref_mod``'s weights; a skipped row for each that cannot be built."""
    cs: list[Contender] = []
    skipped: list[dict] = []
    backends = list(args.backends)
    if device.type == "cuda" and importlib.util.find_spec("megablocks") is not None and dtype == torch.bfloat16:
        backends.append("megablocks")
    for b in backends:
        try:
            kw = {"device": device, "dtype": dtype} if b == "megablocks" else {}
            m = ours(shape, b, device, dtype, **kw)
            copy_ours(m, ref_mod)
            cs.append(module_contender(f"ours_{b}", m, x, gy))
        except Exception as e:  # noqa: BLE001
            skipped.append({"contender": f"ours_{b}", "status": "unavailable", "note": f"{type(e).__name__}: {e}"[:200]})
    return cs, skipped


def build_contenders(E: int, k: int, d: int, f: int, T: int, device, dtype, args,
                     extra: Callable | None = None) -> tuple[list[Contender], list[dict]]:
    """Contenders of one configuration (weights from one seed) and rows for those that cannot run.
    ``extra(ref_mod, x, gy)`` may add contenders of its own (on the reference weights); all are checked."""
    shape = moe_shape(E, k, d, f, T)
    torch.manual_seed(0)
    ref_mod = ours(shape, "loop", device, torch.float32)   # the weights' source, kept in float32
    x = torch.randn(1, T, d, device=device).to(dtype).requires_grad_()
    gy = torch.randn(1, T, d, device=device, dtype=dtype)
    cs, skipped = _ours_contenders(shape, ref_mod, x, gy, device, dtype, args)
    torch.manual_seed(1)
    dense_ffn = FFN(shape, k * f).to(device=device, dtype=dtype)
    cs.append(module_contender("dense", dense_ffn, x, gy, check=False,
                               note=f"dense SwiGLU FFN of width k*d_expert={k * f}"))
    if getattr(args, "compile", False):
        m = ours(shape, "grouped", device, dtype)
        copy_ours(m, ref_mod)
        cs.append(compiled_contender("ours_grouped_compiled", m, x, gy, device))
        cs.append(compiled_contender("dense_compiled", dense_ffn, x, gy, device, check=False,
                                     note=f"dense SwiGLU FFN of width k*d_expert={k * f}"))
    cs.append(matmul_contender(T, d, k * f, device, dtype))
    with torch.no_grad():
        routed = ref_mod.router(x.detach().float().reshape(-1, d)).indices.reshape(-1)
    cs.append(grouped_matmul_contender(torch.bincount(routed, minlength=E).tolist(), d, f, device, dtype))
    if not args.no_peers:
        peers, why_not = peer_contenders(available_peers(device, args.peer_eager), ref_mod, E, k, d, f, x, gy,
                                         device, dtype)
        cs.extend(peers)
        skipped.extend(why_not)
    if extra is not None:
        cs.extend(extra(ref_mod, x, gy))
    with torch.no_grad():
        ref_run = ours(shape, "loop", device, dtype)
        ref_run.load_state_dict(ref_mod.state_dict())
        ref = ref_run(x.detach()).reshape(-1, d)
    check_contenders(cs, ref, dtype)
    return cs, skipped


def run_config(shape_name: str, dtype_name: str, threads: int, args, device, env: dict, writer,
               extra: Callable | None = None, profile_writer=None) -> list[dict]:
    """Time one configuration and write its rows; returns them. With ``profile_writer`` (``--profile N``)
    every timed contender is then profiled over N more steps (``PROFILE_COLUMNS``)."""
    E, k, f = SHAPES[shape_name] if isinstance(shape_name, str) and shape_name in SHAPES else shape_name
    d, T, dtype = args.d_model, args.tokens, DTYPES[dtype_name]
    if device.type == "cpu":
        torch.set_num_threads(threads)
    load_start = os.getloadavg()[0]
    cs, skipped = build_contenders(E, k, d, f, T, device, dtype, args, extra)
    runnable = [c for c in cs if c.status == "ok"]
    for c, ts in zip(runnable, round_robin([c.step for c in runnable], device, args.warmup, args.repeats)):
        c.times.extend(ts)
    load_end = os.getloadavg()[0]
    flops = 3 * 2 * T * k * 3 * d * f
    base = {"shape": shape_name if isinstance(shape_name, str) else "custom", "n_experts": E, "top_k": k,
            "d_model": d, "d_expert": f, "tokens": T, "dtype": dtype_name, "threads": threads,
            "load1_start": round(load_start, 2), "load1_end": round(load_end, 2), **env}
    rows = []
    for c in cs:
        r = {**base, "row": "time", "contender": c.name, "status": c.status, "note": c.note,
             "rel_err": "" if c.rel_err is None else f"{c.rel_err:.3g}", "unit": "s",
             "flops": flops, "router_flops": 3 * 2 * T * E * d if c.name.startswith("ours") else 0}
        if c.times:
            q1, med, q3 = quartiles(c.times)
            r.update(median=med, q1=q1, q3=q3, min=min(c.times), max=max(c.times), repeats=len(c.times),
                     tflops_per_s=flops / med / 1e12)
        rows.append(r)
    for s in skipped:
        rows.append({**base, "row": "time", **s})
    for a in runnable:
        if not a.name.startswith("ours"):
            continue
        for b in runnable:
            if b is a:
                continue
            ratios = [ta / tb for ta, tb in zip(a.times, b.times)]
            q1, med, q3 = quartiles(ratios)
            rows.append({**base, "row": "ratio", "contender": a.name, "vs": b.name, "status": "ok",
                         "median": med, "q1": q1, "q3": q3, "min": min(ratios), "max": max(ratios),
                         "repeats": len(ratios), "unit": "time ratio (per round)"})
    for r in rows:
        writer.writerow({c: r.get(c, "") for c in COLUMNS})
    if profile_writer is not None:
        for c in runnable:
            for op in top_ops(lambda: timed(c.step, device)[0], args.profile, PROFILE_TOP):
                profile_writer.writerow({**{k: base[k] for k in PROFILE_COLUMNS if k in base},
                                         "contender": c.name, **op})
    return rows


def environment(device: torch.device) -> dict:
    """Where the bench ran (device, CPU model, cores, torch, commit) and the peers' versions."""
    versions = {}
    for mod in ("transformers", "torchtitan", "megablocks"):
        try:
            versions[mod] = importlib.metadata.version(mod)
        except importlib.metadata.PackageNotFoundError:
            versions[mod] = None
    return {"device": str(device), "device_name": device_name(device), "cpu_model": cpu_model(),
            "cpu_count": os.cpu_count(),
            "affinity_cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
            "torch": torch.__version__, "python": sys.version.split()[0], "git_commit": git_commit(),
            **cpu_features(), **versions}


def run(args: argparse.Namespace, extra: Callable | None = None) -> Path:
    device = torch.device(args.device if args.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu"))
    env = environment(device)
    info = {**env, "load_avg_start": os.getloadavg(), "time_start_unix_s": time.time(), "argv": vars(args)}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    threads = args.threads if device.type == "cpu" else [0]
    row_env = {k: env[k] for k in ("device", "device_name", "torch", "git_commit")}
    threads_before = torch.get_num_threads()
    env_path = Path(str(out) + ".env.json")
    # the env before the first row: a crash leaves both files
    write_text_atomic(env_path, json.dumps(info, indent=1, default=str) + "\n")
    profile_path = Path(str(out) + ".profile.csv") if args.profile else None
    with out.open("w", newline="") as fh, \
            (profile_path.open("w", newline="") if profile_path else contextlib.nullcontext()) as pfh:
        w = csv.DictWriter(fh, fieldnames=COLUMNS)
        w.writeheader()
        pw = csv.DictWriter(pfh, fieldnames=PROFILE_COLUMNS) if pfh else None
        if pw:
            pw.writeheader()
        for shape_name in args.shapes:
            for dtype_name in _dtypes_this_device_runs(args.dtypes, device, env):
                for th in threads:
                    rows = run_config(shape_name, dtype_name, th, args, device, row_env, w, extra, pw)
                    fh.flush()
                    if pfh:
                        pfh.flush()
                    if not args.quiet:
                        _print(rows)
    torch.set_num_threads(threads_before)
    info.update(load_avg_end=os.getloadavg(), time_end_unix_s=time.time())
    write_text_atomic(env_path, json.dumps(info, indent=1, default=str) + "\n")
    return out


def _dtypes_this_device_runs(dtypes: list[str], device: torch.device, env: dict) -> list[str]:
    """``dtypes`` less bf16 on a CPU without a native bf16 matmul (its reference kernel runs ~100x slower
    than fp32, so the timings would say nothing about the layers), with a line saying so."""
    if device.type != "cpu" or env["cpu_bf16_native"] or "bf16" not in dtypes:
        return list(dtypes)
    print(f"note: skipping bf16: this CPU ({env['cpu_capability']}) has no native bf16 matmul in oneDNN",
          file=sys.stderr, flush=True)
    return [d for d in dtypes if d != "bf16"]


def _print(rows: list[dict]) -> None:
    r0 = rows[0]
    print(f"== {r0['shape']} E={r0['n_experts']} k={r0['top_k']} f={r0['d_expert']} {r0['dtype']} "
          f"threads={r0['threads']} load {r0['load1_start']}->{r0['load1_end']}")
    for r in rows:
        if r["row"] == "time":
            med = r.get("median")
            print(f"  {r['contender']:22} {r['status']:11} " + (f"{med * 1e3:9.1f} ms [{r['q1'] * 1e3:.1f}, "
                  f"{r['q3'] * 1e3:.1f}] {r['tflops_per_s'] * 1e3:6.1f} GFLOP/s" if med else "") +
                  f" err={r.get('rel_err', '')} {r.get('note', '')}")
        elif r["vs"] in ("dense", "matmul") or r["contender"] == "ours_grouped":
            print(f"  {r['contender']:>14} / {r['vs']:20} {r['median']:.3f} [{r['q1']:.3f}, {r['q3']:.3f}]")


def ratio_table(paths: dict[str, str | Path], contender: str = "ours_grouped") -> str:
    """A markdown table of ``contender``'s per-round time ratios (median [q1, q3]) against every other
    contender, per configuration, one column group per labelled CSV (e.g. before / after)."""
    data: dict[tuple, dict[str, dict]] = {}
    loads: dict[tuple, dict[str, str]] = {}
    for label, path in paths.items():
        with open(path, newline="") as f:
            for r in csv.DictReader(f):
                key = (r["shape"], r["dtype"], r["threads"])
                loads.setdefault(key, {})[label] = f"{r['load1_start']}-{r['load1_end']}"
                if r["row"] == "ratio" and r["contender"] == contender:
                    data.setdefault(key, {}).setdefault(r["vs"], {})[label] = (
                        f"{float(r['median']):.2f} [{float(r['q1']):.2f}, {float(r['q3']):.2f}]")
    labels = list(paths)
    lines = ["| shape | dtype | threads | vs | " + " | ".join(f"{contender} / vs, {lb}" for lb in labels) + " |",
             "|" + "---|" * (4 + len(labels))]
    for key in sorted(data):
        for vs, cells in sorted(data[key].items()):
            lines.append(f"| {key[0]} | {key[1]} | {key[2]} | {vs} | "
                         + " | ".join(cells.get(lb, "n/a") for lb in labels) + " |")
        lines.append(f"| {key[0]} | {key[1]} | {key[2]} | (load avg, 1 min) | "
                     + " | ".join(loads[key].get(lb, "") for lb in labels) + " |")
    return "\n".join(lines)


def make_parser(prog: str = "python -m experiments.bench.moe_layer") -> argparse.ArgumentParser:
    """The command line's options (``parse_args`` checks them); a script may add its own before parsing."""
    p = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n")[0])
    p.add_argument("--shapes", nargs="+", default=["fine", "coarse"], choices=sorted(SHAPES))
    p.add_argument("--dtypes", nargs="+", default=["fp32", "bf16"], choices=sorted(DTYPES))
    p.add_argument("--threads", type=int, nargs="+", default=[1, 2], help="CPU intra-op threads")
    p.add_argument("--backends", nargs="+", default=["loop", "grouped"], help="our expert backends")
    p.add_argument("--d-model", type=int, default=512)
    p.add_argument("--tokens", type=int, default=4096)
    p.add_argument("--warmup", type=int, default=1, help="untimed rounds")
    p.add_argument("--repeats", type=int, default=9, help="timed rounds (round-robin over contenders)")
    p.add_argument("--no-peers", action="store_true")
    p.add_argument("--peer-eager", action="store_true", help="also transformers' eager Mixtral expert loop")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--out", default="runs/bench/moe_layer.csv")
    p.add_argument("--quiet", action="store_true")
    p.add_argument("--compile", action="store_true",
                   help="add torch.compile'd contenders: ours_grouped_compiled and dense_compiled")
    p.add_argument("--quick", action="store_true", help="tiny sizes for tests: d=64, T=256, 1 repeat")
    p.add_argument("--profile", type=int, default=0, metavar="STEPS",
                   help="after timing, profile every contender over STEPS steps: top operators by self CPU "
                        "time -> <out>.profile.csv")
    return p


def parse_args(argv: list[str] | None = None, parser: argparse.ArgumentParser | None = None) -> argparse.Namespace:
    """Parsed and checked options (exit status 2 with a one-line message on bad input)."""
    p = parser or make_parser()
    a = p.parse_args(argv)
    for name, low in (("d_model", 1), ("tokens", 1), ("warmup", 0), ("repeats", 1), ("profile", 0)):
        if getattr(a, name) < low:
            p.error(f"--{name.replace('_', '-')} must be >= {low}, got {getattr(a, name)}")
    if min(a.threads) < 1:
        p.error(f"--threads must be >= 1, got {min(a.threads)}")
    if a.quick:
        a.d_model, a.tokens, a.warmup, a.repeats = 64, 256, 0, 2
    return a


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "table":   # python -m experiments.bench.moe_layer table before=A.csv after=B.csv
        print(ratio_table(dict(a.split("=", 1) for a in argv[1:])))
        return 0
    out = run(parse_args(argv))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
