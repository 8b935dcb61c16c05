"""Expert-parallel MoE layer timing: dispatch, expert compute and combine measured separately, beside the
bytes each rank sent and the bandwidth of a plain ``all_to_all_single`` of the same buffer.

  python -m experiments.bench.expert_parallel                          # 2 gloo ranks on this CPU, launched by itself
  python -m experiments.bench.expert_parallel --tokens 4096 --d-model 512 --experts 16 --top-k 4 --out runs/ep_bench/ep.json
  torchrun --nproc_per_node=2 -m experiments.bench.expert_parallel     # the same under torchrun (NCCL on GPUs)

One ``MoEFFN`` (GELU experts of width 2 d, softmax router at its random initialisation: close to uniform
routing) with its routed experts split over the ranks (``moe.expert_parallel``); each rank routes
``--tokens`` tokens of width d per forward. Per forward and rank: ``dispatch_s`` (count exchange, gather,
all-to-all), ``compute_s`` (the local backend), ``combine_s`` (all-to-all back, weighting, sum), medians
over ``--repeats`` forwards after ``--warmup``; ``dispatch_bytes``/``combine_bytes`` (rows sent to other
ranks x d x 4, fp32) and ``dedup_dispatch_bytes`` (once per token and remote rank, as DeepEP sends);
``a2a_s`` and ``a2a_bytes_per_s``: a plain ``all_to_all_single`` of the dispatch buffer with the same
splits. ``accounting_bytes_per_token``: ``accounting.serving.expert_parallel_bytes_per_token`` for this
shape on G = ranks GPUs of one node in fp32 (uniform routing, one copy per destination GPU), beside
``measured_bytes_per_token`` (dispatch + combine summed over ranks / tokens of all ranks) and its
deduplicated variant. Forward only (the backward moves the same bytes again). Rank 0 prints a table and
writes ``--out`` (JSON).

  python -m experiments.bench.expert_parallel --from-run runs/<experiment>/<model>/<size>-seed<seed>

reads a finished ``train.expert_parallel`` run instead (no ranks launched): its ``ep_dispatch_bytes`` and
``ep_combine_bytes`` summed over the logged steps and ranks, per token of those steps, beside the same
accounting expectation for the run's shape (the activations' dtype: fp32 on a CPU, bf16 under autocast).
"""
from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch
import torch.distributed as dist
from omegaconf import OmegaConf

from accounting.hardware import get_hardware
from accounting.serving import Layout, expert_parallel_bytes_per_token
from accounting.shapes import ModelShape
from moe.expert_parallel import ExpertParallelExperts
from moe.moe_ffn import MoEFFN
from moe.router import RouterConfig

from ..config import build_shape
from ..environment import REPO
from ..metrics import read_metrics
from .timing import timed

MODULE = "experiments.bench.expert_parallel"
PHASES = ("dispatch_s", "compute_s", "combine_s", "dedup_dispatch_bytes")
"""Per-forward entries of ``ExpertParallelExperts.profile`` recorded per repeat."""


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m experiments.bench.expert_parallel", description=__doc__.splitlines()[0])
    p.add_argument("--nproc", type=int, default=2, help="ranks to launch when not under torchrun (default 2)")
    p.add_argument("--tokens", type=int, default=2048, help="tokens per rank per forward")
    p.add_argument("--d-model", type=int, default=256)
    p.add_argument("--experts", type=int, default=8)
    p.add_argument("--top-k", type=int, default=2)
    p.add_argument("--backend", choices=("loop", "grouped"), default="grouped")
    p.add_argument("--repeats", type=int, default=10)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads per rank")
    p.add_argument("--timeout", type=float, default=600, help="seconds before the launched ranks are stopped")
    p.add_argument("--out", default="runs/ep_bench/ep_bench.json")
    p.add_argument("--from-run", default=None, help="a train.expert_parallel run folder: its bytes vs accounting")
    a = p.parse_args(argv)
    if a.from_run is not None:
        return a
    for name in ("nproc", "tokens", "d_model", "experts", "top_k", "repeats", "threads"):
        if getattr(a, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be >= 1")
    if a.warmup < 0:
        p.error("--warmup must be >= 0")
    if a.experts % a.nproc or a.top_k > a.experts:
        p.error(f"--nproc {a.nproc} must divide --experts {a.experts}, and --top-k <= --experts")
    return a


def launch(argv: list[str], a: argparse.Namespace) -> int:
    """Run this module as ``a.nproc`` gloo ranks on this machine (env://, as torchrun would)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    repo = str(REPO)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [repo, os.environ.get("PYTHONPATH")])),
           "OMP_NUM_THREADS": str(a.threads), "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port),
           "WORLD_SIZE": str(a.nproc)}
    procs = [subprocess.Popen([sys.executable, "-m", MODULE, *argv],
                              env={**env, "RANK": str(r), "LOCAL_RANK": str(r)}) for r in range(a.nproc)]
    deadline = time.time() + a.timeout
    try:
        for p in procs:
            p.wait(timeout=max(1.0, deadline - time.time()))
    except subprocess.TimeoutExpired:
        print(f"error: ep_bench ranks still running after {a.timeout:.0f} s; stopped", file=sys.stderr)
        return 1
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    return max(p.returncode for p in procs)


def _init_rank(threads: int) -> tuple[torch.device, int, int]:
    """Thread count, device (this rank's GPU, else the CPU) and process group (NCCL / gloo): (device, rank, world)."""
    torch.set_num_threads(threads)
    device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0"))) if torch.cuda.is_available() \
        else torch.device("cpu")
    if device.type == "cuda":
        torch.cuda.set_device(device)
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return device, dist.get_rank(), dist.get_world_size()


def _plain_all_to_all_s(layer: MoEFFN, x: torch.Tensor, world: int, device: torch.device) -> float:
    """Seconds of a plain ``all_to_all_single`` of a buffer with the dispatch's split sizes (gloo's/NCCL's
    bandwidth on this routing)."""
    ep = layer.experts
    r = layer.router(x.reshape(-1, x.size(-1)))
    dest = r.indices.reshape(-1).div(ep.n_local, rounding_mode="floor")
    send = torch.bincount(dest, minlength=world)
    recv = torch.empty_like(send)
    dist.all_to_all_single(recv, send)
    buf = torch.empty(int(send.sum()), x.size(-1), device=device)
    out = torch.empty(int(recv.sum()), x.size(-1), device=device)
    dist.barrier()
    return timed(lambda: dist.all_to_all_single(out, buf, recv.tolist(), send.tolist()), device)[0]


def _time_phases(layer: MoEFFN, x: torch.Tensor, a: argparse.Namespace, world: int,
                 device: torch.device) -> dict[str, float]:
    """This rank's medians over ``a.repeats`` forwards (after ``a.warmup``) of each phase and byte count."""
    ep = layer.experts
    rows: dict[str, list[float]] = {k: [] for k in ("dispatch_s", "compute_s", "combine_s", "a2a_s",
                                                    "dispatch_bytes", "combine_bytes", "dedup_dispatch_bytes")}
    with torch.no_grad():
        for i in range(a.warmup + a.repeats):
            ep.profile = {}
            layer(x)
            a2a = _plain_all_to_all_s(layer, x, world, device)
            if i >= a.warmup:
                for k in PHASES:
                    rows[k].append(ep.profile.get(k, 0))
                rows["dispatch_bytes"].append(ep.last_dispatch_bytes)
                rows["combine_bytes"].append(ep.last_combine_bytes)
                rows["a2a_s"].append(a2a)
            dist.barrier()
    mine = {k: statistics.median(v) for k, v in rows.items()}
    mine["a2a_bytes_per_s"] = mine["dispatch_bytes"] / mine["a2a_s"] if mine["a2a_s"] > 0 else None
    return mine


def measure(a: argparse.Namespace) -> dict | None:
    """Every rank: time the phases; rank 0 returns the record (others None)."""
    device, rank, world = _init_rank(a.threads)
    shape = ModelShape(vocab_size=256, d_model=a.d_model, n_layers=1, n_heads=1, seq_len=a.tokens,
                       n_experts=a.experts, top_k=a.top_k, d_expert=2 * a.d_model)
    torch.manual_seed(0)
    layer = MoEFFN(shape, RouterConfig(), a.backend).to(device)
    layer.experts = ExpertParallelExperts(layer.experts)
    x = torch.randn(1, a.tokens, a.d_model, generator=torch.Generator().manual_seed(rank)).to(device)
    mine = _time_phases(layer, x, a, world, device)
    gathered = [None] * world
    dist.all_gather_object(gathered, mine)
    dist.destroy_process_group()
    if rank:
        return None
    hw = get_hardware("h100-sxm")
    expected = expert_parallel_bytes_per_token(shape, hw, Layout(gpus=world, dispatch_dtype="fp32",
                                                                 combine_dtype="fp32"))
    tokens = a.tokens * world
    measured = sum(g["dispatch_bytes"] + g["combine_bytes"] for g in gathered) / tokens
    dedup = sum(2 * g["dedup_dispatch_bytes"] for g in gathered) / tokens
    accounting = expected["network"] + expected["nvlink"]
    return {"device": str(device), "backend": "nccl" if device.type == "cuda" else "gloo", "ranks": world,
            "tokens_per_rank": a.tokens, "d_model": a.d_model, "experts": a.experts, "top_k": a.top_k,
            "expert_backend": a.backend, "threads": a.threads, "repeats": a.repeats, "per_rank": gathered,
            "measured_bytes_per_token": measured, "dedup_bytes_per_token": dedup,
            "accounting_bytes_per_token": accounting,
            "measured_over_accounting": measured / accounting if accounting else None,
            "dedup_over_accounting": dedup / accounting if accounting else None,
            "torch": torch.__version__}


def report(rec: dict) -> str:
    lines = [f"ep_bench: {rec['ranks']} {rec['backend']} ranks, {rec['tokens_per_rank']} tokens/rank, d={rec['d_model']}, "
             f"E={rec['experts']}, k={rec['top_k']}, {rec['expert_backend']} experts (medians of {rec['repeats']})",
             "rank  dispatch_ms  compute_ms  combine_ms  dispatch_MB  combine_MB  a2a_ms  a2a_MB/s"]
    for r, g in enumerate(rec["per_rank"]):
        bw = g["a2a_bytes_per_s"]
        lines.append(f"{r:>4}  {1e3 * g['dispatch_s']:>11.3f}  {1e3 * g['compute_s']:>10.3f}  {1e3 * g['combine_s']:>10.3f}  "
                     f"{g['dispatch_bytes'] / 1e6:>11.3f}  {g['combine_bytes'] / 1e6:>10.3f}  {1e3 * g['a2a_s']:>6.3f}  "
                     f"{'-' if bw is None else f'{bw / 1e6:.0f}':>8}")
    lines.append(f"bytes/token (dispatch+combine, all ranks): measured {rec['measured_bytes_per_token']:.1f}, "
                 f"once per remote rank {rec['dedup_bytes_per_token']:.1f}, accounting (uniform) "
                 f"{rec['accounting_bytes_per_token']:.1f}; ratios {rec['measured_over_accounting']:.3f}, "
                 f"{rec['dedup_over_accounting']:.3f}")
    return "\n".join(lines)


def from_run(folder: str) -> dict:
    """Bytes per token of a finished expert-parallel run vs ``accounting.serving``'s uniform expectation."""
    run = Path(folder)
    cfg = OmegaConf.to_container(OmegaConf.load(run / "config.yaml"))
    rows = [r for r in read_metrics(run) if "ep_dispatch_bytes" in r]
    if not rows:
        raise ValueError(f"{run}: no ep_dispatch_bytes in metrics.jsonl (not a train.expert_parallel run?)")
    env = json.loads((run / "env.json").read_text())
    shape, t = build_shape(cfg["model"]["shape"]), cfg["train"]
    world, tokens_per_step = len(rows[0]["ep_dispatch_bytes"]), env["tokens_per_step"]
    dtype = "bf16" if env.get("dtype") == "bf16" else "fp32"
    expected = expert_parallel_bytes_per_token(shape, get_hardware("h100-sxm"),
                                               Layout(gpus=t["expert_parallel"], dispatch_dtype=dtype,
                                                      combine_dtype=dtype))
    sent = sum(sum(r["ep_dispatch_bytes"]) + sum(r["ep_combine_bytes"]) for r in rows)
    measured = sent / (tokens_per_step * len(rows))
    accounting = expected["network"] + expected["nvlink"]
    return {"run": str(run), "ranks": world, "expert_parallel": t["expert_parallel"], "steps": len(rows),
            "tokens": tokens_per_step * len(rows), "bytes": sent, "measured_bytes_per_token": measured,
            "accounting_bytes_per_token": accounting, "measured_over_accounting": measured / accounting,
            # uniform routing, one row per remote ASSIGNMENT (this implementation) vs one per remote GPU:
            # k (1 - 1/G) / ((G - 1)(1 - (1 - 1/G)^k)) = k / (G (1 - (1 - 1/G)^k))
            "per_assignment_expectation_over_accounting":
                shape.top_k / (t["expert_parallel"] * (1 - (1 - 1 / t["expert_parallel"]) ** shape.top_k))}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    a = parse(argv)
    if a.from_run is not None:
        try:
            rec = from_run(a.from_run)
        except (OSError, ValueError, KeyError) as e:
            print(f"error: --from-run {a.from_run}: {e}", file=sys.stderr)
            return 2
        print(json.dumps(rec, indent=1))
        return 0
    if "RANK" not in os.environ:
        return launch(argv, a)
    rec = measure(a)
    if rec is not None:
        out = Path(a.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(rec, indent=1))
        print(report(rec))
        print(f"-> {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
