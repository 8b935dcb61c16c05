"""Rotary position embeddings (RoPE, Su et al. 2021): no parameters, a rotation of query/key pairs.

Pairs are the two halves of each head (the GPT-NeoX / Llama "rotate_half" layout). Rotations depend only
on the position difference between a query and a key, so a KV cache can store rotated keys. Checkpoints
that pair adjacent dimensions instead (DeepSeek's interleaved layout) are permuted into this layout when
imported (``moe.hf``), which leaves every q.k product unchanged.

YaRN (Peng et al. 2023, as DeepSeek-V2/V3 and transformers compute it): frequencies are blended between
the original (high-frequency dimensions) and divided by ``factor`` (low-frequency ones) with a linear ramp
between the dimensions that rotate ``beta_fast`` and ``beta_slow`` times over ``original_max_len``
positions, and cos/sin are multiplied by an attention factor ``m(factor, mscale) / m(factor,
mscale_all_dim)`` (or ``m(factor, 1)`` when the mscales are not given), ``m(s, a) = 0.1 a ln s + 1``.
The matching softmax-scale correction ``m(factor, mscale_all_dim)^2`` is applied by the attention
(``yarn_softmax_scale``).
"""
from __future__ import annotations

import math

import torch
from torch import nn


def yarn_mscale(factor: float, mscale: float = 1.0) -> float:
    """``0.1 mscale ln(factor) + 1`` for factor > 1, else 1."""
    return 1.0 if factor <= 1 else 0.1 * mscale * math.log(factor) + 1.0


def yarn_softmax_scale(shape) -> float:
    """Multiplier of the softmax scale 1/sqrt(head width) under YaRN with ``mscale_all_dim`` (DeepSeek);
    1 otherwise."""
    if shape.rope_scaling == "yarn" and shape.rope_mscale_all_dim:
        return yarn_mscale(shape.rope_factor, shape.rope_mscale_all_dim) ** 2
    return 1.0


def yarn_inv_freq(dim: int, base: float, factor: float, original_max_len: int, beta_fast: float,
                  beta_slow: float) -> torch.Tensor:
    """YaRN's blended inverse frequencies [dim / 2] (float64)."""
    def correction_dim(rotations: float) -> float:
        return dim * math.log(original_max_len / (rotations * 2 * math.pi)) / (2 * math.log(base))
    low = max(math.floor(correction_dim(beta_fast)), 0)
    high = min(math.ceil(correction_dim(beta_slow)), dim - 1)
    if low == high:
        high += 0.001
    ramp = ((torch.arange(dim // 2, dtype=torch.float64) - low) / (high - low)).clamp(0, 1)
    extrapolation = 1.0 / base ** (torch.arange(0, dim, 2, dtype=torch.float64) / dim)
    keep = 1 - ramp  # 1: keep the original frequency, 0: interpolate (divide by factor)
    return extrapolation / factor * (1 - keep) + extrapolation * keep


class RotaryEmbedding(nn.Module):
    """Precomputed cos/sin tables for positions ``0 .. max_len - 1``.

    Args:
        head_dim: per-head width (even).
        max_len: largest position + 1 (the shape's ``seq_len``).
        base: the frequency base theta (10000 as in RoFormer and Llama 2).
        yarn: None, or a dict with ``factor``, ``original_max_len``, ``beta_fast``, ``beta_slow``,
            ``mscale``, ``mscale_all_dim`` (see the module docstring).
    """

    def __init__(self, head_dim: int, max_len: int, base: float = 10000.0, yarn: dict | None = None):
        super().__init__()
        if head_dim % 2:
            raise ValueError(f"RoPE needs an even head_dim, got {head_dim} (set position='none' or change "
                             "head_dim)")
        scale = 1.0
        if yarn is None:
            inv_freq = 1.0 / base ** (torch.arange(0, head_dim, 2, dtype=torch.float64) / head_dim)
        else:
            inv_freq = yarn_inv_freq(head_dim, base, yarn["factor"], yarn["original_max_len"],
                                     yarn["beta_fast"], yarn["beta_slow"])
            m, m_all = yarn["mscale"], yarn["mscale_all_dim"]
            scale = (yarn_mscale(yarn["factor"], m) / yarn_mscale(yarn["factor"], m_all) if m and m_all
                     else yarn_mscale(yarn["factor"]))
        angles = torch.outer(torch.arange(max_len, dtype=torch.float64), inv_freq)  # [max_len, hd/2]
        angles = torch.cat([angles, angles], dim=-1)                                # [max_len, hd]
        # Buffers, not parameters (accounting counts RoPE as 0 parameters); not saved in checkpoints.
        self.register_buffer("cos", (angles.cos() * scale).float(), persistent=False)
        self.register_buffer("sin", (angles.sin() * scale).float(), persistent=False)
        self.max_len = max_len

    @classmethod
    def from_shape(cls, shape, head_dim: int) -> "RotaryEmbedding":
        """The rotation a ``ModelShape`` asks for (base ``rope_theta``, YaRN when ``rope_scaling='yarn'``)."""
        yarn = None
        if shape.rope_scaling == "yarn":
            yarn = {"factor": shape.rope_factor, "original_max_len": shape.rope_original_max_len,
                    "beta_fast": shape.rope_beta_fast, "beta_slow": shape.rope_beta_slow,
                    "mscale": shape.rope_mscale, "mscale_all_dim": shape.rope_mscale_all_dim}
        return cls(head_dim, shape.seq_len, shape.rope_theta, yarn)

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
