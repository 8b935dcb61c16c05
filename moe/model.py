"""``MoETransformer``: ``dense.Transformer`` with the FFN of every block ``i >= first_dense_layers``
replaced by an ``MoEFFN`` (router, routed experts on the chosen backend, shared experts).

Parameters equal ``accounting.params.count_parameters(shape).total`` exactly; forward flops under
FlopCounterMode equal ``accounting.flops.forward_flops(shape, T, batch=B, flops_per_mac=2,
routed_assignments=A)['total']`` with A the kept (token, expert) pairs summed over MoE layers.
"""
from __future__ import annotations

from accounting.shapes import ModelShape
from dense.model import Transformer

from .experts import BACKENDS
from .moe_ffn import MoEFFN
from .router import RouterConfig


class MoETransformer(Transformer):
    """Args: shape (``n_experts > 0``), router (``RouterConfig``, dict or None), backend (``BACKENDS``),
    backend_kwargs (e.g. ``device=`` for megablocks)."""

    def __init__(self, shape: ModelShape, router: RouterConfig | dict | None = None, backend: str = "loop",
                 **backend_kwargs):
        if not shape.is_moe:
            raise ValueError("MoETransformer needs n_experts > 0; build a dense shape with dense.Transformer "
                             "(or moe.build_model)")
        if backend not in BACKENDS:
            raise ValueError(f"unknown expert backend {backend!r}; choose one of {BACKENDS}")
        config = RouterConfig.from_any(router)

        def ffn_factory(layer: int):
            if not shape.is_moe_layer(layer):
                return None
            return MoEFFN(shape, config, backend, layer, **backend_kwargs)

        super().__init__(shape, ffn_factory=ffn_factory)
        self.router_config, self.backend = config, backend


def routed_assignments(router_stats) -> int:
    """Kept (token, expert) pairs summed over MoE layers, from ``ModelOutput.router_stats`` (exact integer;
    what ``accounting.flops.forward_flops(routed_assignments=...)`` takes)."""
    total = 0
    for s in router_stats:
        selected = int(round(float(s.tokens_per_expert.sum())))
        total += selected - int(round(float(s.dropped_fraction) * selected))
    return total
