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

Llama-3.1's ``llama3`` scaling divides the low frequencies by ``factor`` and blends the middle band
(``llama3_inv_freq``), as transformers' ``_compute_llama3_parameters``.
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
                  beta_slow: float, truncate: bool = True) -> torch.Tensor:
    """YaRN's blended inverse frequencies [dim / 2] (float64). ``truncate``: round the ramp's ends down/up
    to whole dimensions (transformers' default; gpt-oss keeps them fractional)."""
    def correction_dim(rotations: float) -> float:
        return dim * math.log(original_max_len / (rotations * 2 * math.pi)) / (2 * math.log(base))
    low, high = correction_dim(beta_fast), correction_dim(beta_slow)
    if truncate:
        low, high = math.floor(low), math.ceil(high)
    low, high = max(low, 0), min(high, dim - 1)
    if low == high:
        high += 0.001
    ramp = ((torch.arange(dim // 2, dtype=torch.float64) - low) / (high - low)).clamp(0, 1)
    extrapolation = 1.0 / base ** (torch.arange(0, dim, 2, dtype=torch.float64) / dim)
    keep = 1 - ramp  # 1: keep the original frequency, 0: interpolate (divide by factor)
    return extrapolation / factor * (1 - keep) + extrapolation * keep


def llama3_inv_freq(dim: int, base: float, factor: float, low_freq_factor: float, high_freq_factor: float,
                    original_max_len: int) -> torch.Tensor:
    """Llama-3.1's ``llama3`` scaled inverse frequencies [dim / 2] (float64): wavelengths longer than
    ``original_max_len / low_freq_factor`` are divided by ``factor``, shorter than ``original_max_len /
    high_freq_factor`` kept, and those between blended with s = (original / wavelength - low) / (high - low):
    ``(1 - s) f / factor + s f``."""
    inv_freq = 1.0 / base ** (torch.arange(0, dim, 2, dtype=torch.float64) / dim)
    wavelen = 2 * math.pi / inv_freq
    low_wavelen, high_wavelen = original_max_len / low_freq_factor, original_max_len / high_freq_factor
    smooth = (original_max_len / wavelen - low_freq_factor) / (high_freq_factor - low_freq_factor)
    blended = (1 - smooth) * inv_freq / factor + smooth * inv_freq
    out = torch.where(wavelen > low_wavelen, inv_freq / factor, inv_freq)
    medium = (wavelen <= low_wavelen) & (wavelen >= high_wavelen)
    return torch.where(medium, blended, out)


class RotaryEmbedding(nn.Module):
    """Precomputed cos/sin tables for positions ``0 .. max_len - 1``.

    Args:
        head_dim: per-head width (even).
        max_len: largest position + 1 (the shape's ``seq_len``).
        base: the frequency base theta (10000 as in RoFormer and Llama 2).
        yarn: None, or a dict with ``factor``, ``original_max_len``, ``beta_fast``, ``beta_slow``,
            ``mscale``, ``mscale_all_dim`` and optionally ``truncate`` (see the module docstring).
        llama3: None, or a dict with ``factor``, ``low_freq_factor``, ``high_freq_factor``,
            ``original_max_len`` (``llama3_inv_freq``; no attention factor).
    """

    def __init__(self, head_dim: int, max_len: int, base: float = 10000.0, yarn: dict | None = None,
                 llama3: dict | None = None):
        super().__init__()
        if head_dim % 2:
            raise ValueError(f"RoPE needs an even head_dim, got {head_dim} (set position='none' or change "
                             "head_dim)")
        scale = 1.0
        if llama3 is not None:
            inv_freq = llama3_inv_freq(head_dim, base, llama3["factor"], llama3["low_freq_factor"],
                                       llama3["high_freq_factor"], llama3["original_max_len"])
        elif yarn is None:
            inv_freq = 1.0 / base ** (torch.arange(0, head_dim, 2, dtype=torch.float64) / head_dim)
        else:
            inv_freq = yarn_inv_freq(head_dim, base, yarn["factor"], yarn["original_max_len"],
                                     yarn["beta_fast"], yarn["beta_slow"], yarn.get("truncate", True))
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
        """The rotation a ``ModelShape`` asks for (base ``rope_theta``, YaRN when ``rope_scaling='yarn'``,
        Llama-3.1's scaling when ``'llama3'``)."""
        yarn = llama3 = None
        if shape.rope_scaling == "yarn":
            yarn = {"factor": shape.rope_factor, "original_max_len": shape.rope_original_max_len,
                    "beta_fast": shape.rope_beta_fast, "beta_slow": shape.rope_beta_slow,
                    "mscale": shape.rope_mscale, "mscale_all_dim": shape.rope_mscale_all_dim,
                    "truncate": shape.rope_truncate}
        elif shape.rope_scaling == "llama3":
            llama3 = {"factor": shape.rope_factor, "low_freq_factor": shape.rope_low_freq_factor,
                      "high_freq_factor": shape.rope_high_freq_factor,
                      "original_max_len": shape.rope_original_max_len}
        return cls(head_dim, shape.seq_len, shape.rope_theta, yarn, llama3)

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
