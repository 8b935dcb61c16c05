"""``MoETransformer``: ``dense.Transformer`` with the FFN of every block ``i >= first_dense_layers``
replaced by an ``MoEFFN`` (router, routed experts on the chosen backend, shared experts).

Parameters equal ``accounting.params.count_parameters(shape).total`` exactly; forward flops under
FlopCounterMode equal ``accounting.flops.forward_flops(shape, T, batch=B, flops_per_mac=2,
routed_assignments=A)['total']`` with A the kept (token, expert) pairs summed over MoE layers.

With ``shape.mtp_modules`` the model also builds DeepSeek-V3's multi-token-prediction modules
(``moe.mtp``; ``self.mtp``), whose parameters equal ``count_parameters(shape).mtp_total``; they add the
weighted loss ``aux_losses["mtp"]`` when targets are given.
"""
from __future__ import annotations

from accounting.shapes import ModelShape
from dense.model import Transformer

from .experts import BACKENDS
from torch import nn

from dense.block import Block

from .moe_ffn import MoEFFN
from .mtp import MTPModule, mtp_loss
from .router import RouterConfig


class MoETransformer(Transformer):
    """Args: shape (``n_experts > 0``), router (``RouterConfig``, dict or None), backend (``BACKENDS``),
    mtp_loss_weight (lambda of the MTP loss, a training setting; used when ``shape.mtp_modules > 0``),
    backend_kwargs (e.g. ``device=`` for megablocks)."""

    builds_mtp = True

    def __init__(self, shape: ModelShape, router: RouterConfig | dict | None = None, backend: str = "loop",
                 mtp_loss_weight: float = 0.3, **backend_kwargs):
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
        if isinstance(mtp_loss_weight, bool) or not isinstance(mtp_loss_weight, (int, float)) or mtp_loss_weight < 0:
            raise ValueError(f"mtp_loss_weight must be a number >= 0, got {mtp_loss_weight!r}")
        self.mtp_loss_weight = float(mtp_loss_weight)
        last = shape.n_layers - 1  # an MTP block has the FFN kind of the model's last layer
        self.mtp = nn.ModuleList(
            MTPModule(shape, Block(shape, shape.n_layers + k,
                                   MoEFFN(shape, config, backend, shape.n_layers + k, **backend_kwargs)
                                   if shape.is_moe_layer(last) else None))
            for k in range(shape.mtp_modules))
        if shape.mtp_modules:
            self.mtp.apply(self._init_weights)

    def extra_losses(self, hidden, idx, targets):
        """The MTP loss (``moe.mtp.mtp_loss``); {} without MTP modules."""
        return mtp_loss(self, hidden, idx, targets)

    def extra_blocks(self):
        return [m.block for m in self.mtp]


def routed_assignments(router_stats) -> int:
    """Kept (token, expert) pairs summed over MoE layers, from ``ModelOutput.router_stats`` (exact integer;
    what ``accounting.flops.forward_flops(routed_assignments=...)`` takes)."""
    total = 0
    for s in router_stats:
        selected = int(round(float(s.tokens_per_expert.sum())))
        total += selected - int(round(float(s.dropped_fraction) * selected))
    return total
