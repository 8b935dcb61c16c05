"""Causal self-attention (multi-head or grouped-query) through ``F.scaled_dot_product_attention``.

Parameters: W_q d x H*hd, W_k and W_v d x KV*hd, W_o H*hd x d, as ``accounting.params.attention_params``
counts; with ``shape.qkv_bias`` q, k and v have biases (Qwen2-MoE), with ``shape.attention_bias`` o too
(gpt-oss). A sliding-window layer (``shape.attention_window(layer)`` W > 0) lets query i see keys
i - W + 1 .. i only; ``shape.attention_sinks`` adds one learned logit per head to each softmax (gpt-oss),
computed explicitly by ``sink_attention`` (SDPA has no sink column); other layers use SDPA. Optional q/k RMSNorms
(``shape.qk_norm``: ``head`` per head over hd, Qwen3; ``full`` over the whole projection, OLMoE) run
before RoPE, and ``shape.clip_qkv`` clamps q, k, v to [-c, c] after them (DBRX, OLMoE). Softmax scale
1/sqrt(hd). Flops per forward over T tokens (2 per multiply-add, the
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
from .norm import make_norm
from .rope import RotaryEmbedding


def window_mask(T: int, start: int, device: torch.device, window: int = 0) -> torch.Tensor:
    """Boolean [T, start + T]: True where new query i (position start + i) may see key j, i.e.
    ``j <= start + i`` and, with a sliding ``window`` W > 0, ``j > start + i - W`` (W keys, itself included,
    as transformers' and OpenAI's gpt-oss masks)."""
    q = torch.arange(start, start + T, device=device)[:, None]
    k = torch.arange(start + T, device=device)[None, :]
    allowed = k <= q
    return allowed & (k > q - window) if window else allowed


def sink_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, sinks: torch.Tensor, mask: torch.Tensor,
                   scale: float) -> torch.Tensor:
    """Softmax attention with one extra logit per head (gpt-oss's attention sinks), written out.

    q [B, H, T, hd], k and v [B, KV, S, hd] (KV divides H), sinks [H], mask bool [T, S]. Each row's softmax
    runs over its S scores and the head's sink logit; the sink's probability is dropped, so the weights
    on the keys sum to less than 1. Returns [B, H, T, hd]. Flops (2 per multiply-add) ``2 * 2 B H T S hd``,
    the same two matmuls SDPA counts."""
    rep = q.size(1) // k.size(1)
    if rep > 1:
        k, v = k.repeat_interleave(rep, dim=1), v.repeat_interleave(rep, dim=1)
    scores = (q @ k.transpose(-2, -1)) * scale                                  # [B, H, T, S]
    scores = scores.masked_fill(~mask, float("-inf"))
    sink = sinks.to(scores.dtype).view(1, -1, 1, 1).expand(scores.size(0), -1, scores.size(2), 1)
    probs = torch.softmax(torch.cat([scores, sink], dim=-1), dim=-1)[..., :-1]
    return probs.to(v.dtype) @ v


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
        q_width, kv_width = self.n_heads * self.head_dim, self.n_kv_heads * self.head_dim
        qkv_bias = shape.qkv_bias or shape.attention_bias
        self.wq = nn.Linear(d, q_width, bias=qkv_bias)
        self.wk = nn.Linear(d, kv_width, bias=qkv_bias)
        self.wv = nn.Linear(d, kv_width, bias=qkv_bias)
        self.wo = nn.Linear(q_width, d, bias=shape.attention_bias)
        self.window = shape.attention_window(layer)
        self.sinks = nn.Parameter(torch.zeros(self.n_heads)) if shape.attention_sinks else None
        self.qk_norm, self.clip = shape.qk_norm, shape.clip_qkv
        if shape.qk_norm != "none":
            widths = (self.head_dim, self.head_dim) if shape.qk_norm == "head" else (q_width, kv_width)
            self.q_norm = make_norm(shape, widths[0], kind="rmsnorm")
            self.k_norm = make_norm(shape, widths[1], kind="rmsnorm")

    def forward(self, x: torch.Tensor, rope: RotaryEmbedding | None = None,
                cache: KVCache | None = None) -> torch.Tensor:
        B, T, _ = x.shape
        q, k, v = self.wq(x), self.wk(x), self.wv(x)
        if self.qk_norm == "full":
            q, k = self.q_norm(q), self.k_norm(k)
        q = q.view(B, T, self.n_heads, self.head_dim)
        k = k.view(B, T, self.n_kv_heads, self.head_dim)
        if self.qk_norm == "head":
            q, k = self.q_norm(q), self.k_norm(k)
        if self.clip is not None:
            q, k, v = q.clamp(-self.clip, self.clip), k.clamp(-self.clip, self.clip), v.clamp(-self.clip, self.clip)
        q = q.transpose(1, 2)                                                      # [B, H, T, hd]
        k = k.transpose(1, 2)                                                      # [B, KV, T, hd]
        v = v.view(B, T, self.n_kv_heads, self.head_dim).transpose(1, 2)           # [B, KV, T, hd]
        start = 0 if cache is None else cache.pos
        if rope is not None:
            q, k = rope(q, start), rope(k, start)
        if cache is not None:
            k, v = cache.update(self.layer, k, v)                                  # [B, KV, start+T, hd]
        if self.sinks is not None:
            y = sink_attention(q, k, v, self.sinks, window_mask(T, start, x.device, self.window),
                               self.head_dim ** -0.5)                              # [B, H, T, hd]
        else:
            mask, causal = attention_mask(T, start, x.device)
            if self.window and start + T > self.window:
                mask, causal = window_mask(T, start, x.device, self.window), False
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=causal,
                                               enable_gqa=self.n_kv_heads != self.n_heads)  # [B, H, T, hd]
        return self.wo(y.transpose(1, 2).reshape(B, T, self.n_heads * self.head_dim))
