"""Rotary position embeddings (RoPE, Su et al. 2021): no parameters, a rotation of query/key pairs.

Pairs are the two halves of each head (the GPT-NeoX / Llama "rotate_half" layout). Rotations depend only
on the position difference between a query and a key, so a KV cache can store rotated keys.
"""
from __future__ import annotations

import torch
from torch import nn


class RotaryEmbedding(nn.Module):
    """Precomputed cos/sin tables for positions ``0 .. max_len - 1``.

    Args:
        head_dim: per-head width (even).
        max_len: largest position + 1 (the shape's ``seq_len``).
        base: the frequency base theta (10000 as in RoFormer and Llama 2).
    """

    def __init__(self, head_dim: int, max_len: int, base: float = 10000.0):
        super().__init__()
        if head_dim % 2:
            raise ValueError(f"RoPE needs an even head_dim, got {head_dim} (set position='none' or change "
                             "head_dim)")
        inv_freq = 1.0 / base ** (torch.arange(0, head_dim, 2, dtype=torch.float64) / head_dim)
        angles = torch.outer(torch.arange(max_len, dtype=torch.float64), inv_freq)  # [max_len, hd/2]
        angles = torch.cat([angles, angles], dim=-1)                                # [max_len, hd]
        # Buffers, not parameters (accounting counts RoPE as 0 parameters); not saved in checkpoints.
        self.register_buffer("cos", angles.cos().float(), persistent=False)
        self.register_buffer("sin", angles.sin().float(), persistent=False)
        self.max_len = max_len

    def forward(self, x: torch.Tensor, start: int = 0) -> torch.Tensor:
        """Rotate ``x`` [B, heads, T, hd] holding positions ``start .. start + T - 1``."""
        T = x.size(-2)
        if start + T > self.max_len:
            raise ValueError(f"positions up to {start + T - 1} exceed the RoPE table (seq_len={self.max_len})")
        cos = self.cos[start:start + T].to(x.dtype)
        sin = self.sin[start:start + T].to(x.dtype)
        half = x.size(-1) // 2
        rotated = torch.cat([-x[..., half:], x[..., :half]], dim=-1)
        return x * cos + rotated * sin
