"""Mixture-of-experts models on top of ``dense``: router, balancing, expert backends, MoE FFN and model.

    model = moe.build_model(shape, router=moe.RouterConfig(balancing="loss_free"), backend="grouped")
    out = model(idx, targets)          # out.loss includes the auxiliary losses; out.router_stats per layer
    out.loss.backward(); opt.step(); model.update_router_biases()

Importing ``moe`` registers a FlopCounterMode formula for ``torch._grouped_mm``.
"""
from __future__ import annotations

from torch import nn

from accounting.shapes import ModelShape

from . import flop_formulas  # noqa: F401  (registers the _grouped_mm flop formula)
from .balance import Collapse, RouterStats, detect_collapse
from .experts import BACKENDS, make_experts
from .model import MoETransformer, routed_assignments
from .moe_ffn import MoEFFN
from .router import Router, RouterConfig


def build_model(shape: ModelShape, router: RouterConfig | dict | None = None, backend: str = "loop",
                **backend_kwargs) -> nn.Module:
    """A ``dense.Transformer`` when ``shape.n_experts == 0``, else a ``MoETransformer``.

    ``router`` and ``backend`` are validated in both cases (a dense model ignores them).
    """
    if backend not in BACKENDS:
        raise ValueError(f"unknown expert backend {backend!r}; choose one of {BACKENDS}")
    config = RouterConfig.from_any(router)
    if not shape.is_moe:
        from dense import Transformer
        return Transformer(shape)
    return MoETransformer(shape, router=config, backend=backend, **backend_kwargs)


__all__ = ["BACKENDS", "Collapse", "MoEFFN", "MoETransformer", "Router", "RouterConfig", "RouterStats",
           "build_model", "detect_collapse", "make_experts", "routed_assignments"]
