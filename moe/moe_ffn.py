"""The MoE FFN of one block: router, routed experts (any backend), optional shared experts.

Input and output [B, T, d]. Parameters (as ``accounting.params.moe_layer_params``): router ``E d`` (+ E
with ``shape.router_bias``), routed experts ``E * m * d * f`` (+ their biases with ``shape.expert_bias``,
``moe.biased_experts``), shared experts ``S * m * d * f_s`` (m = 2 GELU, 3 SwiGLU; the S shared
experts run as one FFN of width ``S f_s``: same parameters and flops; with ``shape.shared_expert_gate``
their output is scaled by ``sigmoid(x w_g)``, w_g of d, as in Qwen2-MoE). Flops per token (2 per
multiply-add): router ``2 E d``, shared ``2 S m d f_s`` (+ ``2 d`` for the gate), routed ``2 m d f`` per
kept assignment.

After each forward, ``last_aux_losses`` holds the weighted losses this layer adds to the model's loss
(``load_balance`` = alpha E sum f_i P_i when balancing='aux_loss'; ``z_loss`` when z_loss_coef > 0) and
``last_stats`` its ``RouterStats``; the model collects both into ``ModelOutput``.

Distributed runs (``experiments.distributed.wrap``) set ``global_counts``: the auxiliary loss then uses the
per-expert counts summed over all ranks (one all-reduce of E numbers; global-batch balancing), so it is the
same whatever the data- and expert-parallel layout; the router statistics stay per rank (summed when
logged). ``moe.expert_parallel.shard_experts`` replaces ``experts`` by its expert-parallel split.
"""
from __future__ import annotations

import torch
from torch import nn

from accounting.shapes import ModelShape
from dense.ffn import FFN

from .balance import RouterStats, balance_stats, switch_aux_loss
from .biased_experts import BiasedLoopExperts, needs_biased_experts
from .experts import make_experts
from .router import Router, RouterConfig


class MoEFFN(nn.Module):
    """Router + routed experts + shared experts for block ``layer``."""

    def __init__(self, shape: ModelShape, config: RouterConfig, backend: str = "loop", layer: int = 0,
                 **backend_kwargs):
        super().__init__()
        if backend == "megablocks" and config.capacity_factor is not None:
            raise ValueError("backend='megablocks' is dropless: set capacity_factor=None")
        self.layer, self.backend, self.config = layer, backend, config
        self.router = Router(shape, config, layer)
        if needs_biased_experts(shape):
            if backend != "loop":
                raise ValueError(f"backend={backend!r}: experts with biases or the clamped SwiGLU (gpt-oss) run on "
                                 "backend='loop' only")
            self.experts = BiasedLoopExperts(shape)
        else:
            self.experts = make_experts(shape, backend, **backend_kwargs)
        width = shape.n_shared_experts * shape.d_shared_expert
        self.shared_experts = FFN(shape, width) if shape.n_shared_experts else None
        self.shared_gate = nn.Linear(shape.d_model, 1, bias=False) if shape.shared_expert_gate else None
        self.last_aux_losses: dict[str, torch.Tensor] | None = None
        self.last_stats: RouterStats | None = None
        self.global_counts = False   # aux loss from counts summed over all ranks (set for distributed runs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, T, d = x.shape
        x = x.reshape(B * T, d)
        r = self.router(x)
        y = self.experts(x, r.indices, r.weights, r.keep)
        if self.shared_experts is not None:
            shared = self.shared_experts(x)
            if self.shared_gate is not None:
                shared = torch.sigmoid(self.shared_gate(x)) * shared
            y = y + shared
        aux = r.aux_loss
        if self.global_counts and torch.distributed.is_available() and torch.distributed.is_initialized():
            counts = r.counts.detach().clone()
            torch.distributed.all_reduce(counts)
            aux = switch_aux_loss(counts, r.probs)
        losses = {}
        if self.config.balancing == "aux_loss" and self.config.aux_loss_coef > 0:
            losses["load_balance"] = self.config.aux_loss_coef * aux
        if self.config.z_loss_coef > 0:
            losses["z_loss"] = self.config.z_loss_coef * r.z_loss
        self.last_aux_losses = losses
        self.last_stats = balance_stats(self.layer, r.counts, r.probs, r.n_dropped, aux, r.z_loss,
                                        self.router.bias)
        return y.view(B, T, d)

    def update_router_bias(self) -> None:
        """The loss-free balancing step for this layer (no-op unless balancing='loss_free')."""
        self.router.update_bias()
