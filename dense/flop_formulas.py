"""FlopCounterMode formulas for the CPU attention kernel.

``torch.utils.flop_counter`` knows the CUDA SDPA kernels (flash, efficient, cudnn) but not
``aten._scaled_dot_product_flash_attention_for_cpu``, which ``F.scaled_dot_product_attention`` runs on
the CPU: without this it counts attention as 0 flops. We reuse torch's own SDPA formulas (2 flops per
multiply-add, full T x T score matrix, grouped-query heads broadcast). Importing ``dense`` registers
them; registering twice, or on a torch that already has them, is a no-op.
"""
from __future__ import annotations

import torch
from torch.utils import flop_counter as fc

aten = torch.ops.aten


def _register(target, formula) -> None:
    if target is not None and target not in fc.flop_registry:
        fc.register_flop_formula(target)(formula)


def _sdpa_cpu_forward(query_shape, key_shape, value_shape, *args, **kwargs) -> int:
    """Flops of ``_scaled_dot_product_flash_attention_for_cpu``: Q K^T and P V, 2 per multiply-add."""
    return fc.sdpa_flop_count(query_shape, key_shape, value_shape)


def _sdpa_cpu_backward(grad_out_shape, query_shape, key_shape, value_shape, *args, **kwargs) -> int:
    """Flops of its backward (torch's count for the CUDA kernels' backward)."""
    return fc.sdpa_backward_flop_count(grad_out_shape, query_shape, key_shape, value_shape)


_register(getattr(aten, "_scaled_dot_product_flash_attention_for_cpu", None), _sdpa_cpu_forward)
_register(getattr(aten, "_scaled_dot_product_flash_attention_for_cpu_backward", None), _sdpa_cpu_backward)
