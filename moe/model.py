"""``build_model(shape, router, backend)``: a ``dense.Transformer`` for a dense shape, else an ``MoETransformer``:
``dense.Transformer`` with the FFN of every block where ``shape.is_moe_layer(i)`` (every
``i >= first_dense_layers``, or the ``M`` layers of ``shape.moe_layer_pattern``) replaced by an ``MoEFFN``
(router, routed experts on the chosen backend, shared experts).

Parameters equal ``accounting.params.count_parameters(shape).total`` exactly; forward flops under
FlopCounterMode equal ``accounting.flops.forward_flops(shape, T, batch=B, flops_per_mac=2,
routed_assignments=A)['total']`` with A the kept (token, expert) pairs summed over MoE layers.

With ``shape.mtp_modules`` the model also builds DeepSeek-V3's multi-token-prediction modules
(``moe.mtp``; ``self.mtp``), whose parameters equal ``count_parameters(shape).mtp_total``; they add the
weighted loss ``aux_losses["mtp"]`` when targets are given.

Each MoE layer leaves its weighted losses and ``RouterStats`` on itself after a forward; ``forward``
collects them (main blocks, then MTP blocks) into ``MoEOutput``, so a training loop cannot forget the
losses. The loss-free bias update runs as an optimizer step pre-hook (``register_bias_update``, as in
torchtitan), so the training loop needs no MoE-specific call.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from accounting.shapes import ModelShape
from dense.block import Block
from dense.model import ModelOutput, Transformer

from .balance import RouterStats
from .experts import BACKENDS

from .moe_ffn import MoEFFN
from .mtp import MTPModule, mtp_loss
from .router import RouterConfig


def check_backend(backend: str) -> None:
    """ValueError naming the choices unless ``backend`` is one of ``BACKENDS``."""
    if backend not in BACKENDS:
        raise ValueError(f"unknown expert backend {backend!r}; choose one of {BACKENDS}")


@dataclass
class MoEOutput(ModelOutput):
    """``dense.ModelOutput`` plus ``router_stats``: one ``RouterStats`` per MoE layer that ran (main layers,
    then MTP blocks). ``aux_losses`` holds ``load_balance``, ``z_loss`` (summed over layers) and ``mtp``."""

    router_stats: list[RouterStats] = field(default_factory=list)


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
        check_backend(backend)
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

    def forward(self, idx: torch.Tensor, targets: torch.Tensor | None = None, *, cache=None,
                last_only: bool = False) -> MoEOutput:
        """As ``dense.Transformer.forward``, with the router losses, the MTP loss (with targets) and the
        router statistics."""
        hidden = self.trunk(idx, cache)
        mtp = mtp_loss(self, hidden, idx, targets) if targets is not None else {}
        aux_losses, router_stats = self._collect_routing()
        out = self.output(hidden, targets, {**aux_losses, **mtp}, last_only=last_only)
        return MoEOutput(**vars(out), router_stats=router_stats)

    def moe_layers(self) -> list[MoEFFN]:
        """The MoE FFNs of the main blocks, then of the MTP blocks."""
        blocks = [*self.blocks, *(m.block for m in self.mtp)]
        return [b.ffn for b in blocks if isinstance(b.ffn, MoEFFN)]

    def _collect_routing(self) -> tuple[dict[str, torch.Tensor], list[RouterStats]]:
        """Sum the layers' weighted losses by name and list their stats; clears what the layers left."""
        losses: dict[str, torch.Tensor] = {}
        stats: list[RouterStats] = []
        for ffn in self.moe_layers():
            if ffn.last_aux_losses is None:  # an MTP block that did not run (no targets)
                continue
            for name, value in ffn.last_aux_losses.items():
                losses[name] = losses[name] + value if name in losses else value
            stats.append(ffn.last_stats)
            ffn.last_aux_losses, ffn.last_stats = None, None
        return losses, stats

    def update_router_biases(self) -> None:
        """The loss-free balancing step of every MoE layer (no-op unless balancing='loss_free')."""
        for ffn in self.moe_layers():
            ffn.update_router_bias()


def register_bias_update(model: nn.Module, optimizer: torch.optim.Optimizer):
    """Run ``model.update_router_biases()`` before every ``optimizer.step()`` (torchtitan's optimizer
    pre-hook) when ``model`` balances with DeepSeek-V3's loss-free bias; the hook handle, or None (a dense
    model, or another balancing method: nothing to update)."""
    if not isinstance(model, MoETransformer) or model.router_config.balancing != "loss_free":
        return None
    return optimizer.register_step_pre_hook(lambda *_: model.update_router_biases())


def build_model(shape: ModelShape, router: RouterConfig | dict | None = None, backend: str = "loop",
                mtp_loss_weight: float = 0.3, **backend_kwargs) -> nn.Module:
    """A ``dense.Transformer`` when ``shape.n_experts == 0``, else a ``MoETransformer`` (with DeepSeek-V3's
    MTP modules when ``shape.mtp_modules``; ``mtp_loss_weight`` weighs their loss).

    ``router`` and ``backend`` are validated in both cases (a dense model ignores them).
    """
    check_backend(backend)
    config = RouterConfig.from_any(router)
    if not shape.is_moe:
        return Transformer(shape)
    return MoETransformer(shape, router=config, backend=backend, mtp_loss_weight=mtp_loss_weight, **backend_kwargs)
