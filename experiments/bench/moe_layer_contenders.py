"""The contenders of ``experiments.bench.moe_layer``: each a step to time (forward + backward of one MoE
layer, a dense FFN, or a matmul floor) and, when checked, a forward to compare with the reference; the
peers (transformers' Mixtral and Qwen3-MoE blocks, torchtitan's MoE) built with our weights; the relative
error the check uses. Flops are 2 per multiply-add (see ``experiments.bench.moe_layer``).

transformers and torchtitan are optional: imported only where a peer is built (``available_peers`` says
which can be).
"""
from __future__ import annotations

import importlib.util
import itertools
from dataclasses import dataclass, field
from functools import partial
from typing import Callable

import torch

from accounting.shapes import ModelShape
from moe.sorted_experts import grouped_mm_into
from moe.moe_ffn import MoEFFN
from moe.router import RouterConfig

from .timing import timed

TOL = {torch.float32: 1e-4, torch.bfloat16: 3e-2}
"""Largest relative error a checked contender may have, per compute dtype."""


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
    compile_s, _ = timed(c.step, device)
    c.note = (note + f"; torch.compile, compiled in {compile_s:.1f} s").lstrip("; ")
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
    this matmul library: ``moe.sorted_experts.grouped_mm_into``, as the ``grouped`` backend calls it (on a CPU one
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


def peer_contenders(names: dict[str, str | None], ref_mod, E: int, k: int, d: int, f: int, x: torch.Tensor,
                    gy: torch.Tensor, device, dtype) -> tuple[list[Contender], list[dict]]:
    """The available peers of ``names`` (``available_peers``) on ``ref_mod``'s weights, and a skipped row for
    each one unavailable or failing to build."""
    cs: list[Contender] = []
    skipped: list[dict] = []
    for name, why in names.items():
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
    return cs, skipped


def check_contenders(cs: list[Contender], ref: torch.Tensor, dtype) -> None:
    """Compare every checked contender's forward with ``ref``; one over its tolerance (or NaN) becomes
    ``mismatch`` and one that raises ``error``: neither is timed."""
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
