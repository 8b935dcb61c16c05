"""A FlopCounterMode formula for ``aten._grouped_mm`` (torch has none: it would count 0 flops).

``_grouped_mm(a, b, offs)`` multiplies G groups; whatever the layout (2D x 3D, 3D x 2D, 2D x 2D with
``offs`` splitting rows, columns or the reduction dimension), the groups together cost
``2 * M * K * N`` flops (2 per multiply-add, FlopCounterMode's convention) with M = a.shape[-2],
K = a.shape[-1], N = b.shape[-1], times G when both are 3D (batched). Its backward calls ``_grouped_mm``
again, so training flops are counted too. Importing ``moe`` registers it (once).
"""
from __future__ import annotations

import torch
from torch.utils import flop_counter as fc


def grouped_mm_flop(a_shape, b_shape, *args, **kwargs) -> int:
    """Flops of ``torch._grouped_mm(a, b, offs)`` from the input shapes (see module docstring)."""
    m, k, n = a_shape[-2], a_shape[-1], b_shape[-1]
    groups = a_shape[0] if len(a_shape) == 3 and len(b_shape) == 3 else 1
    return 2 * groups * m * k * n


_target = getattr(torch.ops.aten, "_grouped_mm", None)
if _target is not None and _target not in fc.flop_registry:
    fc.register_flop_formula(_target)(grouped_mm_flop)
