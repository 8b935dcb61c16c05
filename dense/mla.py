"""Multi-head latent attention (MLA, DeepSeek-V2/V3): low-rank queries and a compressed key/value latent.

Per token, with d = d_model, H heads, ranks r_q (``q_lora_rank``), r_kv (``kv_lora_rank``) and per-head
widths n (``qk_nope_head_dim``), p (``qk_rope_head_dim``), v (``v_head_dim``):

* queries: ``x -> W_qa (d x r_q) -> norm -> W_qb (r_q x H (n + p))``, or one ``d x H (n + p)`` matrix when
  r_q = 0 (DeepSeek-V2-Lite);
* keys/values: ``x -> W_kva (d x (r_kv + p))`` gives the latent c (r_kv, then normed) and ONE rotary key
  k_pe (p) shared by all heads; ``c -> W_kvb (r_kv x H (n + v))`` gives each head's non-rotary key and value;
* output: ``W_o (H v x d)``. Queries and keys are ``[non-rotary | rotary]`` of width n + p; the softmax
  scale is ``1 / sqrt(n + p)``, times YaRN's ``mscale(factor, mscale_all_dim)^2`` when the shape scales
  RoPE with YaRN (DeepSeek-V2/V3).

Parameters equal ``accounting.params.attention_params`` (no biases; the two norms count as their weights).

Two ways to compute the same attention, chosen by whether a cache is passed:

* without a cache (training, full forwards): keys and values are expanded per head from the latent. Flops
  (2 per multiply-add, as FlopCounterMode counts) per token: the projections of
  ``accounting.flops.attention_projection_macs_per_token``; per (query, key) pair ``H (n + p + v)``,
  counted over the full T x T matrix.
* with a ``LatentCache`` (decoding): the cache holds only c and k_pe, ``r_kv + p`` numbers per layer and
  token (``accounting.memory``'s MLA cache), and ``W_kvb`` is absorbed into the query and the output
  (DeepSeek's inference form): ``q_latent = q_nope W_UK`` (H n r_kv), attention over ``[c | k_pe]`` with
  the latent as value (``H (2 r_kv + p)`` per key), then ``o W_UV`` (H r_kv v). This is what
  ``accounting.flops.decode_flops_per_token`` prices.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from accounting.shapes import ModelShape

from .attention import attention_mask
from .kv_cache import LatentCache
from .norm import make_norm
from .rope import RotaryEmbedding, yarn_softmax_scale


class MultiHeadLatentAttention(nn.Module):
    """Input and output [B, T, d]. With a ``LatentCache`` the T new tokens attend to the cached prefix."""

    def __init__(self, shape: ModelShape, layer: int = 0):
        super().__init__()
        s, d = shape, shape.d_model
        self.layer, self.n_heads = layer, s.n_heads
        self.nope, self.rope_dim, self.v_dim, self.kv_rank = (s.qk_nope_head_dim, s.qk_rope_head_dim,
                                                              s.v_head_dim, s.kv_lora_rank)
        q_head = self.nope + self.rope_dim
        if s.q_lora_rank:
            self.wq_a = nn.Linear(d, s.q_lora_rank, bias=False)
            self.q_norm = make_norm(s, s.q_lora_rank)
            self.wq_b = nn.Linear(s.q_lora_rank, s.n_heads * q_head, bias=False)
        else:
            self.wq = nn.Linear(d, s.n_heads * q_head, bias=False)
        self.wkv_a = nn.Linear(d, self.kv_rank + self.rope_dim, bias=False)
        self.kv_norm = make_norm(s, self.kv_rank)
        self.wkv_b = nn.Linear(self.kv_rank, s.n_heads * (self.nope + self.v_dim), bias=False)
        self.wo = nn.Linear(s.n_heads * self.v_dim, d, bias=False)
        self.scale = q_head ** -0.5 * yarn_softmax_scale(s)

    def forward(self, x: torch.Tensor, rope: RotaryEmbedding | None = None,
                cache: LatentCache | None = None) -> torch.Tensor:
        B, T, _ = x.shape
        H, n, p, v, r = self.n_heads, self.nope, self.rope_dim, self.v_dim, self.kv_rank
        q = self.wq_b(self.q_norm(self.wq_a(x))) if hasattr(self, "wq_a") else self.wq(x)
        q_nope, q_pe = q.view(B, T, H, n + p).transpose(1, 2).split([n, p], dim=-1)  # [B, H, T, n], [.., p]
        c, k_pe = self.wkv_a(x).split([r, p], dim=-1)
        c, k_pe = self.kv_norm(c), k_pe.unsqueeze(1)                                  # [B, T, r], [B, 1, T, p]
        start = 0 if cache is None else cache.pos
        if rope is not None:
            q_pe, k_pe = rope(q_pe, start), rope(k_pe, start)
        mask, causal = attention_mask(T, start, x.device)

        if cache is None:   # expanded form: per-head keys and values from the latent
            k_nope, val = self.wkv_b(c).view(B, T, H, n + v).transpose(1, 2).split([n, v], dim=-1)
            k = torch.cat([k_nope, k_pe.expand(B, H, T, p)], dim=-1)
            y = F.scaled_dot_product_attention(torch.cat([q_nope, q_pe], dim=-1), k, val, attn_mask=mask,
                                               is_causal=causal, scale=self.scale)      # [B, H, T, v]
        else:               # absorbed form over the cached latent (one shared "KV head")
            c_all, k_pe_all = cache.update(self.layer, c, k_pe.squeeze(1))           # [B, S, r], [B, S, p]
            w_uk, w_uv = self.wkv_b.weight.view(H, n + v, r).split([n, v], dim=1)    # [H, n, r], [H, v, r]
            q_latent = torch.einsum("bhtn,hnr->bhtr", q_nope, w_uk)
            keys = torch.cat([c_all, k_pe_all], dim=-1).unsqueeze(1)                  # [B, 1, S, r + p]
            o = F.scaled_dot_product_attention(torch.cat([q_latent, q_pe], dim=-1), keys, c_all.unsqueeze(1),
                                               attn_mask=mask, is_causal=causal, scale=self.scale,
                                               enable_gqa=True)                         # [B, H, T, r]
            y = torch.einsum("bhtr,hvr->bhtv", o, w_uv)
        return self.wo(y.transpose(1, 2).reshape(B, T, H * v))
