"""The ``grouped`` backend's computation, forward and backward written out (eager, any device).

The routed experts on assignments sorted by expert. Inputs: x [T, d]; ws [A] the routing weights in
expert-sorted order; the stacked weights w_gate [E, d, f] (None for GELU), w_up [E, d, f], w_down [E, f, d];
tok [A] (int64) the token of each sorted assignment; inv and starts: for each kept assignment in
token-major order its sorted row, [T, k] when dropless (starts None), else flat [A] with starts [T] (see
``combine``); offs [E] int32 cumulative end offsets; fold: ``"h"`` multiplies the routing weight into the
down projection's input [A, f], ``"out"`` into its output [A, d] (equal by linearity; the smaller of f
and d is cheaper); bounds: the host copy of ``[0] + offs`` on a CPU (one ``torch.mm`` per expert into
reused rows), None elsewhere (``torch._grouped_mm``).

``forward`` returns the output and what ``backward`` needs; ``SortedExperts`` is the autograd function of
eager mode and ``moe.compiled_ops`` wraps the same two functions as custom ops for ``torch.compile``, so
both modes run these kernels.

Memory: the gathered input, the down projection's output, the gathered output gradient, the input
gradient's two products (summed inside the GEMM, ``addmm_``) and SwiGLU's backward temporaries live in
reused scratch tensors (``_scratch``, ``grouped_mm_into``; on a CPU, where a fresh tensor of tens of MB
costs page faults comparable to a pass over it). x [T, d] is saved instead of its gathered copy [A, d] and
regathered in backward into the buffer of the output gradient's gathered copy once that is dead. SwiGLU
saves g and u and recomputes silu(g) in backward; with fold ``"h"`` the routing weight is multiplied into
h in place and its gradient taken as ``sum_f gh silu(g) u`` there.

Gather and combine use the permutation both ways: the forward's gather ``x[tok]`` has as backward the
combine (one fused gather-and-sum over each token's sorted rows, ``F.embedding_bag``), and the combine has
as backward the gather ``gy[tok]``; no ``index_add_`` (serial on a CPU), with or without drops. Flops: the
3 (SwiGLU) or 2 grouped matmuls forward and twice that backward, as autograd would (2 per multiply-add:
``2 A d f`` per product); nothing is recomputed.
"""
from __future__ import annotations

import atexit
import math
import threading
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch.autograd.function import once_differentiable


_SCRATCH: dict[int, dict] = {}   # thread id -> {(tag, dtype): flat buffer}


def _scratch(tag: str, shape: tuple[int, ...], like: torch.Tensor) -> torch.Tensor:
    """A scratch tensor of ``shape`` for values that die inside one forward or one backward call, reused
    across calls on a CPU (per thread, per tag and dtype, grown to the largest size asked): a fresh
    tensor of tens of MB costs more in page faults than one pass over it. On other devices (caching
    allocators) a fresh ``empty``. Callers never return or save these."""
    if like.device.type != "cpu":
        return torch.empty(shape, dtype=like.dtype, device=like.device)
    bufs = _SCRATCH.setdefault(threading.get_ident(), {})
    n, key = math.prod(shape), (tag, like.dtype)
    buf = bufs.get(key)
    if buf is None or buf.numel() < n:
        buf = bufs[key] = torch.empty(n, dtype=like.dtype)
    return buf[:n].view(shape)


def release_scratch(all_threads: bool = False) -> int:
    """Free the CPU scratch tensors (``_scratch``) of this thread, or of every thread; returns the bytes
    released. They are held between steps on purpose (shared by all layers of a thread): about
    (4 d + 3 f) x T k elements at the largest layer shape seen."""
    owners = list(_SCRATCH) if all_threads else [threading.get_ident()]
    freed = 0
    for owner in owners:
        bufs = _SCRATCH.pop(owner, {})
        freed += sum(b.numel() * b.element_size() for b in bufs.values())
    return freed


# Free every thread's scratch before the interpreter tears down (a precaution: the abort at exit once seen
# under gloo came from the process-group teardown, fixed in experiments.distributed).
atexit.register(release_scratch, all_threads=True)


def per_expert_mm(a: torch.Tensor, b: torch.Tensor, bounds: list[int], out: torch.Tensor,
                  accumulate: bool = False) -> torch.Tensor:
    """``torch._grouped_mm(a, b, offs)`` written into ``out`` (``+=`` when ``accumulate``) with one ``torch.mm``
    per expert; expert e owns rows (columns, for the weight gradients' ``a`` [K, A]) ``bounds[e]:bounds[e+1]``.
    Either a [A, K] @ b [E, K, N] -> out [A, N], or a [K, A] @ b [A, N] -> out [E, K, N]."""
    per_row = b.dim() == 3
    for e in range(len(bounds) - 1):
        lo, hi = bounds[e], bounds[e + 1]
        if hi == lo:
            if not per_row and not accumulate:
                out[e].zero_()
            continue
        ae, be, oe = (a[lo:hi], b[e], out[lo:hi]) if per_row else (a[:, lo:hi], b[lo:hi], out[e])
        if accumulate:
            oe.addmm_(ae, be)
        else:
            torch.mm(ae, be, out=oe)
    return out


def grouped_mm_into(a: torch.Tensor, b: torch.Tensor, offs: torch.Tensor, bounds: list[int] | None,
              out: torch.Tensor, accumulate: bool = False) -> torch.Tensor:
    """``out (+)= torch._grouped_mm(a, b, offs=offs)``: on a CPU (``bounds``: the host copy of ``[0] + offs``)
    ``per_expert_mm`` into ``out`` (``addmm_`` when accumulating: the sum rides in the GEMM), as
    ``torch._grouped_mm``'s CPU path does but without a fresh output; elsewhere ``torch._grouped_mm``,
    returned as is (``out`` only receives the accumulated sum)."""
    if bounds is None:                     # not a CPU: the fresh output of the fused kernel, no copy
        r = torch._grouped_mm(a, b, offs=offs)
        return out.add_(r) if accumulate else r
    return per_expert_mm(a, b, bounds, out, accumulate)


def _rowdot(a: torch.Tensor, b: torch.Tensor, buf: torch.Tensor) -> torch.Tensor:
    """Row-wise dot product of two [A, n] tensors -> [A] (the sum accumulated in float32 for bf16), the
    product written into ``buf`` (a dead [A, n] tensor: a fresh one costs page faults on a CPU)."""
    return torch.mul(a, b, out=buf).sum(-1)




class Saved(NamedTuple):
    """What ``forward`` keeps for ``backward`` besides its inputs: g [A, f] the first product (gate for
    SwiGLU, up for GELU), u [A, f] the up product (None for GELU), h [A, f] the activation before the
    routing weight (None when it was folded in place or when it IS ``hw``), hw [A, f] the down
    projection's input."""

    g: torch.Tensor
    u: torch.Tensor | None
    h: torch.Tensor | None
    hw: torch.Tensor


def bounds_of(offs: torch.Tensor) -> list[int] | None:
    """The host copy of ``[0] + offs`` on a CPU (``per_expert_mm``'s row ranges); None elsewhere."""
    return [0] + offs.tolist() if offs.device.type == "cpu" else None


def forward(x, ws, w_gate, w_up, w_down, tok, inv, starts, offs, fold: str,
            bounds: list[int] | None) -> tuple[torch.Tensor, Saved]:
    """y [T, d] = sum over each token's kept assignments of ws x expert(x[tok]); see the module's text."""
    T, d = x.shape
    xs = torch.index_select(x, 0, tok, out=_scratch("xs", (tok.numel(), d), x))   # [A, d]
    if w_gate is not None:
        g, u = torch._grouped_mm(xs, w_gate, offs=offs), torch._grouped_mm(xs, w_up, offs=offs)
        h = F.silu(g).mul_(u)                                            # [A, f]; silu(g) recomputed in backward
    else:
        g = torch._grouped_mm(xs, w_up, offs=offs)
        u = None
        h = F.gelu(g)
    if fold == "h" and w_gate is not None:
        hw, h = h.mul_(ws[:, None]), None    # in place: backward gets d(loss)/d(ws) from silu(g) and u
    elif fold == "h":
        hw = h * ws[:, None]
    else:
        hw, h = h, None                      # backward reads h from hw
    out = grouped_mm_into(hw, w_down, offs, bounds, _scratch("out", (hw.size(0), d), hw))   # [A, d]
    if fold == "out":
        out.mul_(ws[:, None])
    return combine(out, inv, starts), Saved(g, u, h, hw)   # xs is not saved (regathered in backward)


def backward(gy, x, ws, w_gate, w_up, w_down, tok, inv, starts, offs, saved: Saved, fold: str,
             bounds: list[int] | None) -> tuple[torch.Tensor, ...]:
    """(gx, gws, gw_gate (None for GELU), gw_up, gw_down) from the output gradient gy [T, d]."""
    g, u, h, hw = saved
    if fold == "out":
        h = hw
    gy = gy.contiguous()
    w = ws[:, None]
    gout = torch.index_select(gy, 0, tok, out=_scratch("gout", (tok.numel(), gy.size(-1)), gy))
    A = tok.numel()
    gh = grouped_mm_into(gout, w_down.transpose(-2, -1), offs, bounds,        # [A, f] d(loss)/d(hw)
                         _scratch("gh", (A, w_down.size(1)), gout))
    if h is not None:
        gws = _rowdot(gh, h, _scratch("gg", gh.shape, gh))               # d(loss)/d(ws)
    if fold == "out":
        gout.mul_(w)                                                    # gradient of h @ w_down
    gw_down = torch._grouped_mm(hw.t(), gout, offs=offs)                # [E, f, d]
    xs = torch.index_select(x, 0, tok, out=gout)                        # gout is dead: regather x there
    if w_gate is not None:
        gu = torch.ops.aten.silu.out(g, out=_scratch("gu", g.shape, g)).mul_(gh)  # unweighted d(loss)/d(u)
        if h is None:                                                   # fold "h" in place
            gws = _rowdot(gu, u, _scratch("gg", gu.shape, gu))           # sum_f gh silu(g) u
        gu.mul_(w)
        gh.mul_(w)                                                      # d(loss)/d(h)
        gg = torch.ops.aten.silu_backward.grad_input(gh.mul_(u), g,    # gh * u * silu'(g)
                                                     grad_input=_scratch("gg", g.shape, g))
        gw_gate = torch._grouped_mm(xs.t(), gg, offs=offs)
        gw_up = torch._grouped_mm(xs.t(), gu, offs=offs)
        gxs = grouped_mm_into(gg, w_gate.transpose(-2, -1), offs, bounds, _scratch("gxs", xs.shape, xs))
        grouped_mm_into(gu, w_up.transpose(-2, -1), offs, bounds, gxs, accumulate=True)
    else:
        gg = torch.ops.aten.gelu_backward(gh.mul_(w), g)
        gw_gate, gw_up = None, torch._grouped_mm(xs.t(), gg, offs=offs)
        gxs = grouped_mm_into(gg, w_up.transpose(-2, -1), offs, bounds, _scratch("gxs", xs.shape, xs))
    return combine(gxs, inv, starts), gws, gw_gate, gw_up, gw_down


class SortedExperts(torch.autograd.Function):
    """``forward`` and ``backward`` as the autograd function of eager mode (arguments as ``forward``'s)."""

    @staticmethod
    def forward(ctx, x, ws, w_gate, w_up, w_down, tok, inv, starts, offs, fold, bounds):
        y, saved = forward(x, ws, w_gate, w_up, w_down, tok, inv, starts, offs, fold, bounds)
        ctx.save_for_backward(x, ws, w_gate, w_up, w_down, tok, inv, starts, offs, *saved)
        ctx.fold, ctx.bounds = fold, bounds
        return y

    @staticmethod
    @once_differentiable
    def backward(ctx, gy):
        *inputs, g, u, h, hw = ctx.saved_tensors
        grads = backward(gy, *inputs, Saved(g, u, h, hw), ctx.fold, ctx.bounds)
        return *grads, None, None, None, None, None, None


def combine(rows: torch.Tensor, inv: torch.Tensor, starts: torch.Tensor | None) -> torch.Tensor:
    """Sum the sorted rows [A, d] of each token into [T, d] in one fused gather-and-sum
    (``F.embedding_bag``, mode ``'sum'``; 3-4x faster on a CPU than a gather into token order followed by
    a sum, and no [A, d] temporary). ``inv``: for each kept assignment in token-major order its sorted row,
    shaped [T, k] when dropless (``starts`` None) or flat [A] with ``starts`` [T] the first position of each
    token's kept assignments (a token whose assignments were all dropped gets zeros)."""
    return F.embedding_bag(inv, rows, starts, mode="sum")
