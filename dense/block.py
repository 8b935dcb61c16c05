"""A pre-norm transformer block: x + attn(norm1(x)), then x + ffn(norm2(x)).

Attention is ``CausalSelfAttention`` (MHA/GQA) or, for ``attention='mla'``, ``MultiHeadLatentAttention``.

The FFN is any module mapping [B, T, d] -> [B, T, d]: the dense ``FFN`` here, or ``moe.MoEFFN`` (the MoE
model builds the same block with its FFN swapped).
"""
from __future__ import annotations

import torch
from torch import nn

from accounting.shapes import ModelShape

from .attention import CausalSelfAttention
from .ffn import FFN
from .kv_cache import Cache
from .mla import MultiHeadLatentAttention
from .norm import make_norm
from .rope import RotaryEmbedding


class Block(nn.Module):
    """Two norms, attention and an FFN. Input and output [B, T, d]."""

    def __init__(self, shape: ModelShape, layer: int = 0, ffn: nn.Module | None = None):
        super().__init__()
        self.layer = layer
        self.norm1 = make_norm(shape)
        self.attn = (MultiHeadLatentAttention(shape, layer) if shape.attention == "mla"
                     else CausalSelfAttention(shape, layer))
        self.norm2 = make_norm(shape)
        self.ffn = ffn if ffn is not None else FFN(shape, shape.d_ff)

    def forward(self, x: torch.Tensor, rope: RotaryEmbedding | None = None,
                cache: Cache | None = None) -> torch.Tensor:
        x = x + self.attn(self.norm1(x), rope, cache)
        return x + self.ffn(self.norm2(x))
