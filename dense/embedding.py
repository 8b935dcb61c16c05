"""Token embedding (V x d lookup) and the output head (d -> V logits), tied or untied.

Parameters: ``V d`` for the embedding, plus ``V d`` for an untied head (``accounting``'s ``embedding`` and
``output_head``). Flops: the lookup is free; the head costs ``2 V d`` per position (2 per multiply-add).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from accounting.shapes import ModelShape


class TokenEmbedding(nn.Module):
    """``embed``: LongTensor [B, T] -> [B, T, d]; ``unembed``: [B, T, d] -> logits [B, T, V]."""

    def __init__(self, shape: ModelShape):
        super().__init__()
        self.tied = shape.tied_embeddings
        self.wte = nn.Embedding(shape.vocab_size, shape.d_model)
        self.head = None if self.tied else nn.Linear(shape.d_model, shape.vocab_size, bias=False)

    def embed(self, idx: torch.Tensor) -> torch.Tensor:
        return self.wte(idx)

    def unembed(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.wte.weight) if self.tied else self.head(x)
