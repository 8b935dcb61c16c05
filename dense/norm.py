"""Normalisation layers: LayerNorm (weight + bias, 2 d parameters) or RMSNorm (weight, d parameters).

The choice comes from ``ModelShape.norm_kind``; ``accounting.params.norm_params`` counts the same.
"""
from __future__ import annotations

from torch import nn

from accounting.shapes import ModelShape


def make_norm(shape: ModelShape, width: int | None = None) -> nn.Module:
    """A norm over the last dimension of width ``width`` (default ``d_model``).

    Input and output: [..., width]. No matmul, so no flops in either convention.
    """
    width = shape.d_model if width is None else width
    if shape.norm_kind == "layernorm":
        return nn.LayerNorm(width, elementwise_affine=True, bias=True)
    if shape.norm_kind == "rmsnorm":
        return nn.RMSNorm(width, elementwise_affine=True)
    raise ValueError(f"unknown norm_kind {shape.norm_kind!r}")  # ModelShape already rejects this
