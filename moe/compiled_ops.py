"""The grouped backend's forward and backward as two ops that ``torch.compile`` treats as opaque kernels.

``moe_ops::sorted_experts`` and ``moe_ops::sorted_experts_backward`` (``torch.library.custom_op``, each
with a fake implementation that gives only output shapes) run ``moe.sorted_experts.forward`` and
``backward``: the same kernels as eager mode (per-expert ``torch.mm`` into reused scratch rows on a CPU,
``torch._grouped_mm`` elsewhere), one call per layer and direction, so compiling neither re-derives the
backward nor allocates what eager mode reuses. ``sorted_experts`` has a registered backward, so a compiled
graph holds both ops and no graph break. They also make fp32 traceable: in torch 2.13 the fake-tensor
check of ``torch._grouped_mm`` itself accepts bf16 only.

Shapes are static whatever the routing: A = T x k assignments (a dropped one keeps its row with routing
weight 0), offsets [E] int32 carried as tensor data. Flops: 2 per multiply-add, as ``moe.sorted_experts``.
"""
from __future__ import annotations

from typing import Optional

import torch

from moe import sorted_experts as kernels

_NAMESPACE = "moe_ops"


def _none_if_empty(t: torch.Tensor) -> torch.Tensor | None:
    """Custom ops return tensors only: an absent tensor travels as an empty one."""
    return t if t.numel() else None


def _empty_if_none(t: torch.Tensor | None, like: torch.Tensor) -> torch.Tensor:
    return like.new_empty(0) if t is None else t


@torch.library.custom_op(f"{_NAMESPACE}::sorted_experts", mutates_args=())
def sorted_experts(x: torch.Tensor, ws: torch.Tensor, w_gate: Optional[torch.Tensor], w_up: torch.Tensor,
                   w_down: torch.Tensor, tok: torch.Tensor, inv: torch.Tensor, offs: torch.Tensor,
                   fold: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(y [T, d], then ``moe.sorted_experts.Saved``'s g, u, h, hw with empty tensors for absent ones);
    dropless layout (inv [T, k]), arguments as ``moe.sorted_experts.forward``."""
    y, saved = kernels.forward(x, ws, w_gate, w_up, w_down, tok, inv, None, offs, fold, kernels.bounds_of(offs))
    return y, *(_empty_if_none(t, x) for t in saved)


@sorted_experts.register_fake
def _(x, ws, w_gate, w_up, w_down, tok, inv, offs, fold):
    A, f = tok.size(0), w_up.size(-1)
    rows = x.new_empty(A, f)
    u = x.new_empty(A, f) if w_gate is not None else x.new_empty(0)
    h = x.new_empty(A, f) if fold == "h" and w_gate is None else x.new_empty(0)
    return x.new_empty(x.shape), rows, u, h, x.new_empty(A, f)


@torch.library.custom_op(f"{_NAMESPACE}::sorted_experts_backward", mutates_args=())
def sorted_experts_backward(gy: torch.Tensor, x: torch.Tensor, ws: torch.Tensor, w_gate: Optional[torch.Tensor],
                            w_up: torch.Tensor, w_down: torch.Tensor, tok: torch.Tensor, inv: torch.Tensor,
                            offs: torch.Tensor, g: torch.Tensor, u: torch.Tensor, h: torch.Tensor,
                            hw: torch.Tensor, fold: str
                            ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(gx, gws, gw_gate (empty for GELU), gw_up, gw_down): ``moe.sorted_experts.backward``."""
    saved = kernels.Saved(g, _none_if_empty(u), _none_if_empty(h), hw)
    gx, gws, gw_gate, gw_up, gw_down = kernels.backward(gy, x, ws, w_gate, w_up, w_down, tok, inv, None, offs,
                                                        saved, fold, kernels.bounds_of(offs))
    return gx, gws, _empty_if_none(gw_gate, x), gw_up, gw_down


@sorted_experts_backward.register_fake
def _(gy, x, ws, w_gate, w_up, w_down, tok, inv, offs, g, u, h, hw, fold):
    gw_gate = torch.empty_like(w_gate) if w_gate is not None else x.new_empty(0)
    return torch.empty_like(x), torch.empty_like(ws), gw_gate, torch.empty_like(w_up), torch.empty_like(w_down)


def _setup_context(ctx, inputs, output):
    x, ws, w_gate, w_up, w_down, tok, inv, offs, fold = inputs
    _, g, u, h, hw = output
    ctx.save_for_backward(x, ws, w_gate, w_up, w_down, tok, inv, offs, g, u, h, hw)
    ctx.fold = fold


def _backward(ctx, gy, *_unused_grads):
    """Gradients of x, ws and the three weights; the saved outputs (g, u, h, hw) carry none."""
    x, ws, w_gate, w_up, w_down, tok, inv, offs, g, u, h, hw = ctx.saved_tensors
    gx, gws, gw_gate, gw_up, gw_down = sorted_experts_backward(gy, x, ws, w_gate, w_up, w_down, tok, inv, offs,
                                                               g, u, h, hw, ctx.fold)
    return gx, gws, (gw_gate if w_gate is not None else None), gw_up, gw_down, None, None, None, None


sorted_experts.register_autograd(_backward, setup_context=_setup_context)
