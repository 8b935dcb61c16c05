"""Normalisation layers: LayerNorm (weight + bias, 2 d parameters), RMSNorm (weight, d parameters) or the
bias-free LayerNorm of DBRX (weight, d parameters).

The choice comes from ``ModelShape.norm_kind`` and the epsilon from ``ModelShape.norm_eps`` (None: torch's
default); ``accounting.params.norm_params`` counts the same parameters.
"""
from __future__ import annotations

from torch import nn

from accounting.shapes import ModelShape


def make_norm(shape: ModelShape, width: int | None = None, kind: str | None = None) -> nn.Module:
    """A norm over the last dimension of width ``width`` (default ``d_model``).

    ``kind`` overrides ``shape.norm_kind`` (q/k norms are RMSNorms whatever the block's norm is).
    Input and output: [..., width]. No matmul, so no flops in either convention.
    """
    width = shape.d_model if width is None else width
    kind = shape.norm_kind if kind is None else kind
    eps = {} if shape.norm_eps is None else {"eps": shape.norm_eps}
    if kind == "layernorm":
        return nn.LayerNorm(width, elementwise_affine=True, bias=True, **eps)
    if kind == "layernorm_nobias":
        return nn.LayerNorm(width, elementwise_affine=True, bias=False, **eps)
    if kind == "rmsnorm":
        return nn.RMSNorm(width, elementwise_affine=True, **eps)
    raise ValueError(f"unknown norm_kind {kind!r}")  # ModelShape already rejects this
