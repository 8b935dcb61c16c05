"""Position-wise feed-forward network: GELU (2 matrices) or SwiGLU (3 matrices), no biases.

Flops (FlopCounterMode convention, 2 per multiply-add): ``2 * ffn_matrices * d * width`` per token.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from accounting.shapes import ModelShape


class FFN(nn.Module):
    """``gelu``: down(gelu(up(x))); ``swiglu``: down(silu(gate(x)) * up(x)).

    Args:
        shape: gives ``d_model`` and ``ffn_kind``.
        width: hidden width (``d_ff`` for a dense layer; ``n_shared * d_shared_expert`` for shared experts).
    Input and output: [..., d_model].
    """

    def __init__(self, shape: ModelShape, width: int):
        super().__init__()
        d = shape.d_model
        self.kind = shape.ffn_kind
        self.up = nn.Linear(d, width, bias=False)
        self.gate = nn.Linear(d, width, bias=False) if self.kind == "swiglu" else None
        self.down = nn.Linear(width, d, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.kind == "swiglu":
            return self.down(F.silu(self.gate(x)) * self.up(x))
        return self.down(F.gelu(self.up(x)))
