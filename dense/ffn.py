"""Position-wise feed-forward network: GELU (2 matrices), SwiGLU or gpt-oss's clamped SwiGLU (3 matrices), no
biases.

Flops (FlopCounterMode convention, 2 per multiply-add): ``2 * ffn_matrices * d * width`` per token.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from accounting.shapes import ModelShape


def clamped_swiglu(gate: torch.Tensor, up: torch.Tensor, alpha: float, limit: float) -> torch.Tensor:
    """gpt-oss's gated unit: with g = min(gate, limit) and u = clamp(up, -limit, limit),
    ``(u + 1) * g * sigmoid(alpha g)`` (shapes as the inputs)."""
    gate = gate.clamp(max=limit)
    return (up.clamp(-limit, limit) + 1) * (gate * torch.sigmoid(alpha * gate))


def gated(shape: ModelShape, gate: torch.Tensor, up: torch.Tensor) -> torch.Tensor:
    """The hidden activation of a gated FFN kind: ``silu(gate) * up`` (``swiglu``) or ``clamped_swiglu``."""
    if shape.ffn_kind == "swiglu_clamped":
        return clamped_swiglu(gate, up, shape.swiglu_alpha, shape.swiglu_limit)
    return F.silu(gate) * up


class FFN(nn.Module):
    """``gelu``: down(gelu(up(x))); ``swiglu``: down(silu(gate(x)) * up(x)); ``swiglu_clamped``:
    down(clamped_swiglu(gate(x), up(x))).

    Args:
        shape: gives ``d_model`` and ``ffn_kind``.
        width: hidden width (``d_ff`` for a dense layer; ``n_shared * d_shared_expert`` for shared experts).
    Input and output: [..., d_model].
    """

    def __init__(self, shape: ModelShape, width: int):
        super().__init__()
        d = shape.d_model
        self.kind, self.shape = shape.ffn_kind, shape
        self.up = nn.Linear(d, width, bias=False)
        self.gate = nn.Linear(d, width, bias=False) if self.kind != "gelu" else None
        self.down = nn.Linear(width, d, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.kind != "gelu":
            return self.down(gated(self.shape, self.gate(x), self.up(x)))
        return self.down(F.gelu(self.up(x)))
