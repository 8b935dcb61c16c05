"""One MoE layer against a dense FFN of equal active flops, a plain matmul floor and peer implementations.

``python -m experiments.moe_layer_bench [--shapes fine coarse] [--dtypes fp32 bf16] [--threads 1 2]
[--repeats 9] [--out reports/data/moe_layer_cpu.csv]``; ``python -m experiments.moe_layer_bench table
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
  (``moe.experts.grouped_mm_into``: ``torch.mm`` per expert on a CPU, ``torch._grouped_mm`` on CUDA),
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

Rows (``row``): ``time`` (one per contender) and ``ratio`` (``ours_*`` over every other contender): the
median and quartiles of the PER-ROUND time ratios, so that a load change between rounds cancels. Rows are
appended as each configuration finishes; ``<out>.env.json`` (written before the first configuration and
again, with the end's load and time, after the last) holds the environment (CPU model, cores,
threads, torch, transformers, git commit, load averages at start and end).
"""
from __future__ import annotations

import argparse
import csv
import importlib.util
import itertools
import json
import os
import statistics
import subprocess
import sys
import time
import types
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Callable

import torch

from accounting.shapes import ModelShape
from moe.experts import grouped_mm_into

from .atomic import write_text_atomic
from .bench import time_once
from .environment import REPO, cpu_model, device_name, git_commit

SHAPES = {  # name: (n_experts E, top_k k, d_expert f)
    "fine": (64, 8, 256),     # DeepSeek-style fine-grained experts
    "coarse": (8, 2, 1024),   # Mixtral-style
}
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}
TOL = {torch.float32: 1e-4, torch.bfloat16: 3e-2}
COLUMNS = ["row", "shape", "n_experts", "top_k", "d_model", "d_expert", "tokens", "dtype", "threads",
           "contender", "vs", "status", "rel_err", "median", "q1", "q3", "min", "max", "repeats", "flops",
           "router_flops", "tflops_per_s", "unit", "load1_start", "load1_end", "device", "device_name",
           "torch", "git_commit", "note"]


@dataclass
class Contender:
    """A step (forward + backward, or the matmul floor) and, when ``check``, a forward to verify."""

    name: str
    step: Callable[[], None]
    forward: Callable[[], torch.Tensor] | None = None
    check: bool = True
    tol: float | None = None        # None: the dtype's tolerance
    note: str = ""
    times: list[float] = field(default_factory=list)
    status: str = "ok"
    rel_err: float | None = None


def moe_shape(E: int, k: int, d: int, f: int, tokens: int) -> ModelShape:
    return ModelShape(vocab_size=256, d_model=d, n_layers=1, n_heads=max(1, d // 64), seq_len=tokens,
                      d_ff=k * f, n_experts=E, top_k=k, d_expert=f, ffn_kind="swiglu",
                      router_scoring="softmax", router_norm_topk=True)


def ours(shape: ModelShape, backend: str, device, dtype, **kw):
    from moe.moe_ffn import MoEFFN
    from moe.router import RouterConfig

    return MoEFFN(shape, RouterConfig(), backend=backend, **kw).to(device=device, dtype=dtype)


@torch.no_grad()
def copy_ours(dst, src) -> None:
    """Our module's weights into another of ours (any backend)."""
    dst.router.gate.weight.copy_(src.router.gate.weight)
    if hasattr(dst.experts, "copy_from"):
        dst.experts.copy_from(src.experts)
    else:
        dst.experts.load_state_dict(src.experts.state_dict())


def _gate_up(src) -> torch.Tensor:
    """Ours w_gate, w_up [E, d, f] -> transformers' gate_up_proj [E, 2 f, d] (gate rows first)."""
    return torch.cat([src.experts.w_gate.transpose(1, 2), src.experts.w_up.transpose(1, 2)], dim=1)


def transformers_block(kind: str, src, E: int, k: int, d: int, f: int, device, dtype, impl: str):
    """transformers' Mixtral or Qwen3-MoE sparse block with our weights (softmax, top-k, renormalised)."""
    if kind == "mixtral":
        from transformers import MixtralConfig
        from transformers.models.mixtral.modeling_mixtral import MixtralSparseMoeBlock as Block
        cfg = MixtralConfig(hidden_size=d, intermediate_size=f, num_local_experts=E, num_experts_per_tok=k,
                            hidden_act="silu", router_jitter_noise=0.0, experts_implementation=impl)
    else:
        from transformers import Qwen3MoeConfig
        from transformers.models.qwen3_moe.modeling_qwen3_moe import Qwen3MoeSparseMoeBlock as Block
        cfg = Qwen3MoeConfig(hidden_size=d, moe_intermediate_size=f, num_experts=E, num_experts_per_tok=k,
                             hidden_act="silu", norm_topk_prob=True, experts_implementation=impl)
    block = Block(cfg)
    with torch.no_grad():
        block.gate.weight.copy_(src.router.gate.weight)
        block.experts.gate_up_proj.copy_(_gate_up(src))
        block.experts.down_proj.copy_(src.experts.w_down.transpose(1, 2))
    return block.to(device=device, dtype=dtype)


def torchtitan_moe(src, E: int, k: int, d: int, f: int, device, dtype):
    """torchtitan's MoE (token-choice top-k, softmax, renormalised; no load-balance bias) with our weights."""
    from torchtitan.models.common.linear import Linear
    from torchtitan.models.common.moe import GroupedExperts, MoE, RoutedExperts, TokenChoiceTopKRouter
    from torchtitan.models.common.token_dispatcher import LocalTokenDispatcher

    cfg = MoE.Config(
        num_experts=E, load_balance_coeff=None,
        routed_experts=RoutedExperts.Config(
            inner_experts=GroupedExperts.Config(dim=d, hidden_dim=f, num_experts=E),
            token_dispatcher=LocalTokenDispatcher.Config(num_experts=E, top_k=k)),
        router=TokenChoiceTopKRouter.Config(num_experts=E, gate=Linear.Config(in_features=d, out_features=E),
                                            top_k=k, score_func="softmax", route_norm=True))
    m = cfg.build()
    inner = m.routed_experts.inner_experts
    with torch.no_grad():
        m.router.gate.weight.copy_(src.router.gate.weight)
        inner.w1_EFD.copy_(src.experts.w_gate.transpose(1, 2))
        inner.w3_EFD.copy_(src.experts.w_up.transpose(1, 2))
        inner.w2_EDF.copy_(src.experts.w_down.transpose(1, 2))
    return m.to(device=device, dtype=dtype)


def module_contender(name: str, module: torch.nn.Module, x: torch.Tensor, gy: torch.Tensor, *,
                     check: bool = True, tol: float | None = None, note: str = "") -> Contender:
    """forward(x) then backward(gy); parameter and input gradients reset (set to None) before each step."""
    params = [p for p in module.parameters() if p.requires_grad]

    def step():
        x.grad = None
        for p in params:
            p.grad = None
        y = module(x)
        y = y[0] if isinstance(y, tuple) else y
        y.backward(gy)

    def forward():
        with torch.no_grad():
            y = module(x)
        return (y[0] if isinstance(y, tuple) else y).reshape(-1, x.size(-1))
    return Contender(name, step, forward, check=check, tol=tol, note=note)


def compiled_contender(name: str, module: torch.nn.Module, x: torch.Tensor, gy: torch.Tensor, device, *,
                       check: bool = True, note: str = "") -> Contender:
    """``module_contender`` of ``torch.compile(module)``; compiles now (one forward + backward), the time
    in the note."""
    compiled = torch.compile(module)
    c = module_contender(name, compiled, x, gy, check=check, note=note)
    _sync(device)
    t0 = time.perf_counter()
    c.step()
    _sync(device)
    c.note = (note + f"; torch.compile, compiled in {time.perf_counter() - t0:.1f} s").lstrip("; ")
    return c


def matmul_contender(T: int, d: int, width: int, device, dtype) -> Contender:
    """The dense SwiGLU FFN's nine matmuls (3 forward, 6 backward), preallocated, no autograd."""
    g = torch.Generator(device="cpu").manual_seed(1)
    r = lambda *s: torch.randn(*s, generator=g).to(device=device, dtype=dtype)  # noqa: E731
    x, wg, wu, wd = r(T, d), r(d, width), r(d, width), r(width, d)
    h, gy, dh = r(T, width), r(T, d), r(T, width)

    def step():
        a, b = x @ wg, x @ wu               # forward: gate, up
        _ = h @ wd                          # forward: down
        dh_ = gy @ wd.t()                   # backward of down: input and weight
        _ = h.t() @ gy
        _ = dh @ wg.t() + dh @ wu.t()       # backward of gate and up: input (2 mm) ...
        _ = x.t() @ dh, x.t() @ dh          # ... and weights (2 mm)
        del a, b, dh_
    return Contender("matmul", step, check=False, note="9 plain matmuls of the dense FFN's fwd+bwd")


def grouped_matmul_contender(counts: list[int], d: int, f: int, device, dtype) -> Contender:
    """The routed experts' nine products (3 forward, 6 backward) as per-expert matmuls with the run's
    routing counts (``counts[e]`` rows for expert e), on preallocated operands: no autograd, gather,
    routing weight or activation. The floor of any layer that runs its experts as one GEMM per expert with
    this matmul library: ``moe.experts.grouped_mm_into``, as the ``grouped`` backend calls it (on a CPU one
    ``torch.mm`` per expert into preallocated rows, on CUDA ``torch._grouped_mm``)."""
    g = torch.Generator(device="cpu").manual_seed(2)
    r = lambda *s: torch.randn(*s, generator=g).to(device=device, dtype=dtype)  # noqa: E731
    E, A = len(counts), sum(counts)
    xs, h, gout, gg, gu = r(A, d), r(A, f), r(A, d), r(A, f), r(A, f)
    wg, wu, wd = r(E, d, f), r(E, d, f), r(E, f, d)
    o_f, o_d, gw_df, gw_fd = r(A, f), r(A, d), r(E, d, f), r(E, f, d)
    bounds = [0, *itertools.accumulate(counts)]
    offs = torch.tensor(bounds[1:], dtype=torch.int32, device=device)
    mm = partial(grouped_mm_into, offs=offs, bounds=bounds if torch.device(device).type == "cpu" else None)

    def step():
        mm(xs, wg, out=o_f)                                       # forward: gate, up, down
        mm(xs, wu, out=o_f)
        mm(h, wd, out=o_d)
        mm(gout, wd.transpose(-2, -1), out=o_f)                    # backward of down: input, weight
        mm(h.t(), gout, out=gw_fd)
        mm(gg, wg.transpose(-2, -1), out=o_d)                      # backward of gate and up: input ...
        mm(gu, wu.transpose(-2, -1), out=o_d, accumulate=True)
        mm(xs.t(), gg, out=gw_df)                                  # ... and weights
        mm(xs.t(), gu, out=gw_df)
    return Contender("grouped_matmul", step, check=False,
                     note="9 per-expert matmuls of the experts' fwd+bwd, run's routing counts")


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


TIE_FRACTION = 0.02


def rel_err(y: torch.Tensor, ref: torch.Tensor, drop: float = TIE_FRACTION) -> float:
    """``|y - ref| / |ref|`` (Frobenius) over the tokens (rows) left after dropping the ``drop`` fraction
    with the largest squared error (routing ties, see the module docstring); NaN anywhere gives NaN."""
    y, ref = y.float().reshape(-1, y.size(-1)), ref.float().reshape(-1, ref.size(-1))
    err = (y - ref).square().sum(-1)
    if torch.isnan(err).any():
        return float("nan")
    keep = err.argsort()[: err.numel() - int(drop * err.numel())]
    return float(err[keep].sum().sqrt() / ref[keep].square().sum().sqrt().clamp_min(1e-30))


def quartiles(v: list[float]) -> tuple[float, float, float]:
    if len(v) == 1:
        return v[0], v[0], v[0]
    q1, med, q3 = statistics.quantiles(v, n=4, method="inclusive")
    return q1, med, q3


def available_peers(device: torch.device, eager: bool = False) -> dict[str, str | None]:
    """Peer name -> None when importable, else why not."""
    out = {}
    tf = importlib.util.find_spec("transformers") is not None
    names = ["mixtral_grouped_mm", "qwen3moe_grouped_mm"] + (["mixtral_eager"] if eager else [])
    for n in names:
        out[n] = None if tf else "transformers not importable"
    try:
        from torchtitan.models.common import moe  # noqa: F401
        out["torchtitan"] = None
    except Exception as e:  # noqa: BLE001  (any import failure means: not available)
        out["torchtitan"] = f"unavailable: {type(e).__name__}: {e}"[:160]
    return out


def experts_at_commit(commit: str) -> types.ModuleType:
    """``moe/experts.py`` as of git ``commit``, executed as a module of its own: an earlier version of the
    ``grouped`` backend to time beside today's in the same run (``--grouped-from``). Raises ValueError
    with git's message when the commit or file cannot be read."""
    got = subprocess.run(["git", "-C", str(REPO), "show", f"{commit}:moe/experts.py"], capture_output=True,
                         text=True)
    if got.returncode != 0:
        why = (got.stderr.strip().splitlines() or ["git show failed"])[-1]
        raise ValueError(f"--grouped-from {commit}: {why}")
    module = types.ModuleType(f"experts_{commit}")
    exec(compile(got.stdout, f"{commit}:moe/experts.py", "exec"), module.__dict__)  # noqa: S102
    return module


def _grouped_from(module, commit: str, shape: ModelShape, ref_mod, x, gy, device, dtype) -> Contender:
    """Our layer with ``module.GroupedExperts`` (an earlier version) on the reference weights."""
    m = ours(shape, "loop", device, dtype)
    m.load_state_dict(ref_mod.state_dict())
    experts = module.GroupedExperts(shape)
    experts.load_state_dict(ref_mod.experts.state_dict())
    m.experts = experts.to(device=device, dtype=dtype)
    return module_contender(f"ours_grouped@{commit}", m, x, gy, note=f"grouped backend as of {commit}")


def build_contenders(E: int, k: int, d: int, f: int, T: int, device, dtype, args,
                     extra: Callable | None = None) -> tuple[list[Contender], list[dict]]:
    """Contenders of one configuration (weights from one seed) and rows for those that cannot run."""
    shape = moe_shape(E, k, d, f, T)
    torch.manual_seed(0)
    ref_mod = ours(shape, "loop", device, torch.float32)   # the weights' source, kept in float32
    x = torch.randn(1, T, d, device=device).to(dtype).requires_grad_()
    gy = torch.randn(1, T, d, device=device, dtype=dtype)
    skipped: list[dict] = []
    cs: list[Contender] = []
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
    from dense.ffn import FFN
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
    for name, why in available_peers(device, args.peer_eager).items():
        if args.no_peers:
            break
        if why is not None:
            skipped.append({"contender": name, "status": "unavailable", "note": why})
            continue
        try:
            if name == "torchtitan":
                m = torchtitan_moe(ref_mod, E, k, d, f, device, dtype)
                cs.append(module_contender(name, m, x, gy, tol=TOL[torch.bfloat16],
                                           note="torchtitan 0.3 MoE; experts computed in bf16"))
            else:
                kind, impl = name.split("_", 1)
                kind = "mixtral" if kind == "mixtral" else "qwen3moe"
                impl = "grouped_mm" if impl == "grouped_mm" else "eager"
                m = transformers_block(kind, ref_mod, E, k, d, f, device, dtype, impl)
                cs.append(module_contender(name, m, x, gy, note=f"transformers {kind} block, {impl}"))
        except Exception as e:  # noqa: BLE001
            skipped.append({"contender": name, "status": "unavailable", "note": f"{type(e).__name__}: {e}"[:200]})
    for commit, module in getattr(args, "grouped_modules", {}).items():
        cs.append(_grouped_from(module, commit, shape, ref_mod, x, gy, device, dtype))
    if extra is not None:
        cs.extend(extra(ref_mod, x, gy))
    with torch.no_grad():
        ref_run = ours(shape, "loop", device, dtype)
        ref_run.load_state_dict(ref_mod.state_dict())
        ref = ref_run(x.detach()).reshape(-1, d)
    for c in cs:
        if c.check and c.forward is not None:
            try:
                c.rel_err = rel_err(c.forward(), ref)
                tol = c.tol if c.tol is not None else TOL[dtype]
                if not c.rel_err <= tol:  # also catches NaN
                    c.status = "mismatch"
                    c.note = (c.note + f"; rel_err {c.rel_err:.3g} > tol {tol:g}: not timed").lstrip("; ")
            except Exception as e:  # noqa: BLE001
                c.status, c.note = "error", f"{type(e).__name__}: {e}"[:200]
    return cs, skipped


def run_config(shape_name: str, dtype_name: str, threads: int, args, device, env: dict, writer,
               extra: Callable | None = None) -> list[dict]:
    """Time one configuration and write its rows; returns them."""
    E, k, f = SHAPES[shape_name] if isinstance(shape_name, str) and shape_name in SHAPES else shape_name
    d, T, dtype = args.d_model, args.tokens, DTYPES[dtype_name]
    if device.type == "cpu":
        torch.set_num_threads(threads)
    load_start = os.getloadavg()[0]
    cs, skipped = build_contenders(E, k, d, f, T, device, dtype, args, extra)
    timed = [c for c in cs if c.status == "ok"]
    for _ in range(args.warmup):
        for c in timed:
            c.step()
    _sync(device)
    for _ in range(args.repeats):
        for c in timed:
            c.times.append(time_once(c.step, device))
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
    for a in timed:
        if not a.name.startswith("ours"):
            continue
        for b in timed:
            if b is a:
                continue
            ratios = [ta / tb for ta, tb in zip(a.times, b.times)]
            q1, med, q3 = quartiles(ratios)
            rows.append({**base, "row": "ratio", "contender": a.name, "vs": b.name, "status": "ok",
                         "median": med, "q1": q1, "q3": q3, "min": min(ratios), "max": max(ratios),
                         "repeats": len(ratios), "unit": "time ratio (per round)"})
    for r in rows:
        writer.writerow({c: r.get(c, "") for c in COLUMNS})
    return rows


def environment(device: torch.device) -> dict:
    """Where the bench ran (device, CPU model, cores, torch, commit) and the peers' versions."""
    versions = {}
    for mod in ("transformers", "torchtitan", "megablocks"):
        try:
            versions[mod] = __import__(mod).__version__
        except Exception:  # noqa: BLE001
            versions[mod] = None
    return {"device": str(device), "device_name": device_name(device), "cpu_model": cpu_model(),
            "cpu_count": os.cpu_count(),
            "affinity_cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
            "torch": torch.__version__, "python": sys.version.split()[0], "git_commit": git_commit(),
            "mkldnn_bf16": bool(getattr(torch.backends.mkldnn, "is_available", lambda: False)()), **versions}


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
    write_text_atomic(env_path, json.dumps(info, indent=1, default=str) + "\n")   # before the first row: a
    with out.open("w", newline="") as fh:                                            # crash leaves both files
        w = csv.DictWriter(fh, fieldnames=COLUMNS)
        w.writeheader()
        for shape_name in args.shapes:
            for dtype_name in args.dtypes:
                for th in threads:
                    rows = run_config(shape_name, dtype_name, th, args, device, row_env, w, extra)
                    fh.flush()
                    if not args.quiet:
                        _print(rows)
    torch.set_num_threads(threads_before)
    info.update(load_avg_end=os.getloadavg(), time_end_unix_s=time.time())
    write_text_atomic(env_path, json.dumps(info, indent=1, default=str) + "\n")
    return out


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


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m experiments.moe_layer_bench", description=__doc__.split("\n")[0])
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
    p.add_argument("--grouped-from", nargs="+", default=[], metavar="COMMIT",
                   help="also time the grouped backend as of these git commits (same weights, same run)")
    a = p.parse_args(argv)
    for name, low in (("d_model", 1), ("tokens", 1), ("warmup", 0), ("repeats", 1)):
        if getattr(a, name) < low:
            p.error(f"--{name.replace('_', '-')} must be >= {low}, got {getattr(a, name)}")
    if min(a.threads) < 1:
        p.error(f"--threads must be >= 1, got {min(a.threads)}")
    if a.quick:
        a.d_model, a.tokens, a.warmup, a.repeats = 64, 256, 0, 2
    try:
        a.grouped_modules = {c: experts_at_commit(c) for c in a.grouped_from}
    except ValueError as e:
        p.error(str(e))
    return a


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "table":   # python -m experiments.moe_layer_bench table before=A.csv after=B.csv
        print(ratio_table(dict(a.split("=", 1) for a in argv[1:])))
        return 0
    out = run(parse_args(argv))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
