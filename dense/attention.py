"""Causal self-attention (multi-head or grouped-query) through ``F.scaled_dot_product_attention``.

Parameters (no biases): W_q d x H*hd, W_k and W_v d x KV*hd, W_o H*hd x d, as
``accounting.params.attention_params`` counts. Flops per forward over T tokens (2 per multiply-add, the
FlopCounterMode convention): projections ``2 T (2 d H hd + 2 d KV hd)``; scores and the weighted sum of
values ``2 * 2 H hd T^2`` counted over the FULL T x T matrix (FlopCounterMode does not halve causal
attention, and neither does ``accounting.flops.forward_flops(causal=False)``).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from accounting.shapes import ModelShape

from .kv_cache import KVCache
from .rope import RotaryEmbedding


def attention_mask(T: int, start: int, device: torch.device) -> tuple[torch.Tensor | None, bool]:
    """``(attn_mask, is_causal)`` for ``scaled_dot_product_attention``: T new queries after ``start``
    cached keys."""
    if start == 0:          # no prefix: the usual causal mask (query i sees keys 0..i)
        return None, True
    if T == 1:              # one new token sees the whole cache
        return None, False
    # T new tokens after a prefix: query i sees keys 0 .. start + i
    return torch.ones(T, start + T, dtype=torch.bool, device=device).tril(diagonal=start), False


class CausalSelfAttention(nn.Module):
    """Input and output [B, T, d]. With a ``KVCache`` the T new tokens attend to the cached prefix too."""

    def __init__(self, shape: ModelShape, layer: int = 0):
        super().__init__()
        if shape.attention not in ("mha", "gqa"):
            raise ValueError(f"attention={shape.attention!r}: CausalSelfAttention builds 'mha' or 'gqa' "
                             "(MLA is dense.mla.MultiHeadLatentAttention)")
        d, self.n_heads, self.n_kv_heads, self.head_dim = (shape.d_model, shape.n_heads, shape.n_kv_heads,
                                                           shape.head_dim)
        self.layer = layer
        self.wq = nn.Linear(d, self.n_heads * self.head_dim, bias=False)
        self.wk = nn.Linear(d, self.n_kv_heads * self.head_dim, bias=False)
        self.wv = nn.Linear(d, self.n_kv_heads * self.head_dim, bias=False)
        self.wo = nn.Linear(self.n_heads * self.head_dim, d, bias=False)

    def forward(self, x: torch.Tensor, rope: RotaryEmbedding | None = None,
                cache: KVCache | None = None) -> torch.Tensor:
        B, T, _ = x.shape
        q = self.wq(x).view(B, T, self.n_heads, self.head_dim).transpose(1, 2)     # [B, H, T, hd]
        k = self.wk(x).view(B, T, self.n_kv_heads, self.head_dim).transpose(1, 2)  # [B, KV, T, hd]
        v = self.wv(x).view(B, T, self.n_kv_heads, self.head_dim).transpose(1, 2)  # [B, KV, T, hd]
        start = 0 if cache is None else cache.pos
        if rope is not None:
            q, k = rope(q, start), rope(k, start)
        if cache is not None:
            k, v = cache.update(self.layer, k, v)                                  # [B, KV, start+T, hd]
        mask, causal = attention_mask(T, start, x.device)
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=causal,
                                           enable_gqa=self.n_kv_heads != self.n_heads)  # [B, H, T, hd]
        return self.wo(y.transpose(1, 2).reshape(B, T, self.n_heads * self.head_dim))
