"""Routed experts with biases and the shape's gated activation: gpt-oss's experts.

Same interface as the backends of ``moe.experts`` (``(x [N, d], indices [N, k], weights [N, k], keep) ->
y [N, d]``) and the same stacked weights (``w_gate``, ``w_up`` [E, d, f], ``w_down`` [E, f, d]), plus,
with ``shape.expert_bias``, ``b_gate``, ``b_up`` [E, f] and ``b_down`` [E, d]. The hidden activation is
``dense.ffn.gated`` (``swiglu`` or gpt-oss's ``swiglu_clamped``), or GELU. An expert computes
``down(act(x gate + b_gate, x up + b_up)) + b_down``, and its output, bias included, is weighted by the
routing weight (as transformers' ``GptOssExperts`` does).

Parameters: ``E (m d f + (m - 1) f + d)`` (``accounting.params.expert_params``); flops per kept
assignment ``2 m d f`` (2 per multiply-add; the bias additions are not matmuls). Only the readable loop
runs these experts: ``MoEFFN`` refuses another backend for such shapes in one line.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from accounting.shapes import ModelShape
from dense.ffn import gated
from dense.model import INIT_STD

from .experts import ExpertWeights, flatten_assignments


def needs_biased_experts(shape: ModelShape) -> bool:
    """Whether ``shape``'s experts need this module (expert biases or the clamped SwiGLU)."""
    return shape.expert_bias or shape.ffn_kind == "swiglu_clamped"


class BiasedLoopExperts(ExpertWeights):
    """A Python loop over experts (gather, two or three matmuls with biases, weighted scatter-add)."""

    def __init__(self, shape: ModelShape):
        super().__init__(shape)
        E, d, f = shape.n_experts, shape.d_model, shape.d_expert
        self.shape = shape
        if shape.ffn_kind != "gelu" and self.w_gate is None:   # ExpertWeights builds w_gate for 'swiglu' only
            self.w_gate = nn.Parameter(torch.empty(E, d, f))
            nn.init.normal_(self.w_gate, mean=0.0, std=INIT_STD)
        has_bias = shape.expert_bias
        self.b_up = nn.Parameter(torch.zeros(E, f)) if has_bias else None
        self.b_gate = nn.Parameter(torch.zeros(E, f)) if has_bias and shape.ffn_kind != "gelu" else None
        self.b_down = nn.Parameter(torch.zeros(E, d)) if has_bias else None

    def forward(self, x: torch.Tensor, indices: torch.Tensor, weights: torch.Tensor,
                keep: torch.Tensor | None = None) -> torch.Tensor:
        token, expert, weight = flatten_assignments(indices, weights, keep)
        y = torch.zeros_like(x)
        for e in range(self.n_experts):
            sel = torch.where(expert == e)[0]
            if sel.numel() == 0:
                continue
            h = x[token[sel]]                                              # [n_e, d]
            up = h @ self.w_up[e] + (self.b_up[e] if self.b_up is not None else 0)
            if self.w_gate is not None:
                gate = h @ self.w_gate[e] + (self.b_gate[e] if self.b_gate is not None else 0)
                h = gated(self.shape, gate, up)                            # [n_e, f]
            else:
                h = F.gelu(up)
            out = h @ self.w_down[e] + (self.b_down[e] if self.b_down is not None else 0)
            y.index_add_(0, token[sel], out * weight[sel, None])
        return y
