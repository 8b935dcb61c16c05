"""The routed experts' grouped products as ops that ``torch.compile`` traces in any dtype.

``torch._grouped_mm`` runs eagerly on a CPU in fp32, but in torch 2.13 its fake-tensor (meta) check accepts
bf16 only, so a compiled fp32 model cannot trace it. ``moe_ops::grouped_mm`` and
``moe_ops::grouped_mm_wgrad`` are custom ops (``torch.library.custom_op``) with their own fake
implementations (output shapes only), and ``grouped_mm`` has a registered backward; inside they run
``torch._grouped_mm`` where it is fast (CUDA, bf16) and one ``torch.mm`` per expert elsewhere (the same
per-group loop as ``torch._grouped_mm``'s CPU path, into one fresh output).

Offsets: ``offs`` int32 [E], cumulative END row of each expert's group in the expert-sorted assignments
(``offs[-1] = A``); the shapes never depend on the routing (A = T x k when dropless), so one compiled
graph serves every step. Flops: 2 per multiply-add, ``2 A K M`` per product, as the eager backend.

``gather_rows`` and ``combine_rows`` move rows between token order and expert-sorted order with a gather
each way (forward and backward), so neither direction needs a scatter-add.
"""
from __future__ import annotations

import torch

_NAMESPACE = "moe_ops"


def _use_fused(a: torch.Tensor) -> bool:
    """``torch._grouped_mm`` itself (one fused kernel) off the CPU in bf16; the per-expert loop otherwise."""
    return a.device.type != "cpu" and a.dtype == torch.bfloat16 and hasattr(torch, "_grouped_mm")


@torch.library.custom_op(f"{_NAMESPACE}::grouped_mm", mutates_args=())
def grouped_mm(a: torch.Tensor, b: torch.Tensor, offs: torch.Tensor) -> torch.Tensor:
    """a [A, K] @ b [E, K, M] -> [A, M]: rows ``offs[e-1]:offs[e]`` of ``a`` times ``b[e]``."""
    if _use_fused(a):
        return torch._grouped_mm(a, b, offs=offs)
    out = a.new_empty(a.size(0), b.size(-1))
    lo = 0
    for e, hi in enumerate(offs.tolist()):
        if hi > lo:
            torch.mm(a[lo:hi], b[e], out=out[lo:hi])
        lo = hi
    return out


@grouped_mm.register_fake
def _(a, b, offs):
    return a.new_empty(a.size(0), b.size(-1))


@torch.library.custom_op(f"{_NAMESPACE}::grouped_mm_wgrad", mutates_args=())
def grouped_mm_wgrad(a: torch.Tensor, g: torch.Tensor, offs: torch.Tensor) -> torch.Tensor:
    """Per-expert ``a[rows_e].T @ g[rows_e]``: a [A, K], g [A, M] -> [E, K, M] (zeros for an empty group);
    the gradient of ``grouped_mm``'s weights."""
    if _use_fused(a):
        return torch._grouped_mm(a.t(), g, offs=offs)
    out = a.new_empty(offs.numel(), a.size(1), g.size(1))
    lo = 0
    for e, hi in enumerate(offs.tolist()):
        if hi > lo:
            torch.mm(a[lo:hi].t(), g[lo:hi], out=out[e])
        else:
            out[e].zero_()
        lo = hi
    return out


@grouped_mm_wgrad.register_fake
def _(a, g, offs):
    return a.new_empty(offs.size(0), a.size(1), g.size(1))


def _setup_context(ctx, inputs, output):
    a, b, offs = inputs
    ctx.save_for_backward(a, b, offs)


def _backward(ctx, grad):
    a, b, offs = ctx.saved_tensors
    grad = grad.contiguous()
    ga = grouped_mm(grad, b.transpose(-2, -1), offs) if ctx.needs_input_grad[0] else None
    gb = grouped_mm_wgrad(a, grad, offs) if ctx.needs_input_grad[1] else None
    return ga, gb, None


grouped_mm.register_autograd(_backward, setup_context=_setup_context)


class _GatherRows(torch.autograd.Function):
    """rows [T, d] -> rows[src] [A, d]; backward sums each token's k copies back with another gather:
    ``grad[inv].view(T, k, d).sum(1)`` (``inv`` [T, k]: the sorted row of each token-major assignment)."""

    @staticmethod
    def forward(ctx, rows, src, inv):
        ctx.save_for_backward(inv)
        return rows.index_select(0, src)

    @staticmethod
    def backward(ctx, grad):
        (inv,) = ctx.saved_tensors
        T, k = inv.shape
        return grad.index_select(0, inv.reshape(-1)).view(T, k, -1).sum(1), None, None


class _CombineRows(torch.autograd.Function):
    """Sorted rows [A, d] -> per token the sum of its k rows [T, d] (``rows[inv].view(T, k, d).sum(1)``);
    backward gathers the token gradient to every sorted row (``grad[src]``)."""

    @staticmethod
    def forward(ctx, rows, inv, src):
        ctx.save_for_backward(src)
        T, k = inv.shape
        return rows.index_select(0, inv.reshape(-1)).view(T, k, -1).sum(1)

    @staticmethod
    def backward(ctx, grad):
        (src,) = ctx.saved_tensors
        return grad.index_select(0, src), None, None


def gather_rows(x: torch.Tensor, tok: torch.Tensor, inv: torch.Tensor) -> torch.Tensor:
    """x [T, d] -> x[tok] [A, d] (expert-sorted copies of the token rows; A = T k)."""
    return _GatherRows.apply(x, tok, inv)


def combine_rows(rows: torch.Tensor, inv: torch.Tensor, tok: torch.Tensor) -> torch.Tensor:
    """Sorted rows [A, d] -> [T, d], each token the sum of its k rows."""
    return _CombineRows.apply(rows, inv, tok)
