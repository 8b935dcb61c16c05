"""Token-choice top-k router: scores, gating, top-k selection, optional capacity, balancing terms.

Per MoE layer: one bias-free linear map d -> E (``E d`` parameters; ``2 E d`` flops per token at 2 per
multiply-add), then
    softmax gating: s = softmax(z);  sigmoid gating (DeepSeek-V3): s = sigmoid(z).
    selection: top-k of s (+ b, the loss-free bias, which affects WHICH experts are chosen only).
    weights: s at the chosen experts, divided by their sum when ``normalize_topk``, times ``route_scale``.
Balancing: ``aux_loss`` (Switch/GShard, alpha E sum f_i P_i, returned as a loss), ``loss_free``
(DeepSeek-V3: b_i += gamma sign(mean load - load_i) in ``update_bias``, outside the gradient, from the
loads accumulated in training-mode forwards since the last update), or ``none``. The router z-loss is
independent (``z_loss_coef``). ``capacity_factor`` C drops assignments beyond ceil(C N k / E) per expert
(first choices first, then token order); None is dropless.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from accounting.shapes import ModelShape

from .balance import expert_counts, switch_aux_loss, z_loss

GATINGS = ("softmax", "sigmoid")
BALANCINGS = ("none", "aux_loss", "loss_free")


@dataclass(frozen=True)
class RouterConfig:
    """Router settings (validated on construction; a bad value raises one ValueError naming the field).

    gating: ``softmax`` or ``sigmoid``. normalize_topk: renormalise the k chosen weights to sum to 1.
    balancing: ``none``, ``aux_loss`` or ``loss_free``. aux_loss_coef: alpha of the Switch loss.
    z_loss_coef: weight of the router z-loss (0 = off). bias_update_rate: gamma of the loss-free update.
    capacity_factor: None (dropless) or C > 0. route_scale: multiplies the routed weights (DeepSeek-V3's
    routed_scaling_factor).
    """

    gating: str = "softmax"
    normalize_topk: bool = True
    balancing: str = "none"
    aux_loss_coef: float = 0.01
    z_loss_coef: float = 0.0
    bias_update_rate: float = 1e-3
    capacity_factor: float | None = None
    route_scale: float = 1.0

    def __post_init__(self) -> None:
        if self.gating not in GATINGS:
            raise ValueError(f"RouterConfig.gating must be one of {GATINGS}, got {self.gating!r}")
        if self.balancing not in BALANCINGS:
            raise ValueError(f"RouterConfig.balancing must be one of {BALANCINGS}, got {self.balancing!r}")
        if not isinstance(self.normalize_topk, bool):
            raise ValueError(f"RouterConfig.normalize_topk must be true or false, got {self.normalize_topk!r}")
        for name in ("aux_loss_coef", "z_loss_coef", "bias_update_rate"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
                raise ValueError(f"RouterConfig.{name} must be a number >= 0, got {value!r}")
        if self.route_scale is None or isinstance(self.route_scale, bool) or not self.route_scale > 0:
            raise ValueError(f"RouterConfig.route_scale must be > 0, got {self.route_scale!r}")
        cf = self.capacity_factor
        if cf is not None and (isinstance(cf, bool) or not isinstance(cf, (int, float)) or cf <= 0):
            raise ValueError(f"RouterConfig.capacity_factor must be None (dropless) or > 0, got {cf!r}")

    @classmethod
    def from_any(cls, router: "RouterConfig | dict | None") -> "RouterConfig":
        """A ``RouterConfig`` from itself, a mapping of its fields, or None (defaults)."""
        if router is None:
            return cls()
        if isinstance(router, cls):
            return router
        if isinstance(router, dict) or hasattr(router, "items"):
            names = set(cls.__dataclass_fields__)
            unknown = sorted(set(router) - names)
            if unknown:
                raise ValueError(f"unknown RouterConfig field(s): {', '.join(map(str, unknown))}")
            return cls(**dict(router))
        raise ValueError(f"router must be a RouterConfig, a dict or None, got {type(router).__name__}")


@dataclass
class Routing:
    """One layer's routing of N tokens.

    indices [N, k] (long): chosen experts. weights [N, k] (x's dtype): their gate weights.
    keep [N, k] (bool) or None: False where a capacity limit dropped the assignment (None: dropless).
    counts [E] (float): selected assignments per expert (before dropping). probs [N, E] (float32): the
    router's distribution (softmax, or normalised sigmoid scores). logits [N, E] (float32).
    n_dropped: scalar tensor. aux_loss, z_loss: unweighted scalars (see ``moe.balance``).
    """

    indices: torch.Tensor
    weights: torch.Tensor
    keep: torch.Tensor | None
    counts: torch.Tensor
    probs: torch.Tensor
    logits: torch.Tensor
    n_dropped: torch.Tensor
    aux_loss: torch.Tensor
    z_loss: torch.Tensor


class Router(nn.Module):
    """Routes tokens x [N, d] to ``top_k`` of ``n_experts`` experts (see module docstring)."""

    def __init__(self, shape: ModelShape, config: RouterConfig, layer: int = 0):
        super().__init__()
        self.config, self.layer = config, layer
        self.n_experts, self.top_k = shape.n_experts, shape.top_k
        self.gate = nn.Linear(shape.d_model, shape.n_experts, bias=False)
        if config.balancing == "loss_free":
            # Buffers (not parameters, so not in accounting's counts); saved in checkpoints.
            # The bias stays float32 under model.to(bf16) (see _apply): bf16 cannot resolve steps of 1e-3
            # near 0.5. The accumulated load is an integer count.
            self.register_buffer("bias", torch.zeros(shape.n_experts))
            self.register_buffer("load_accum", torch.zeros(shape.n_experts, dtype=torch.long))
        else:
            self.bias = None
            self.load_accum = None

    def forward(self, x: torch.Tensor) -> Routing:
        cfg = self.config
        logits = self.gate(x).float()                                   # [N, E]
        if cfg.gating == "softmax":
            scores = probs = F.softmax(logits, dim=-1)
        else:
            scores = torch.sigmoid(logits)
            probs = scores / scores.sum(dim=-1, keepdim=True)
        select = scores if self.bias is None else scores + self.bias  # bias steers selection only
        indices = select.topk(self.top_k, dim=-1).indices              # [N, k]
        weights = scores.gather(-1, indices)                           # [N, k]
        if cfg.normalize_topk:
            weights = weights / weights.sum(dim=-1, keepdim=True).clamp_min(1e-20)
        weights = weights * cfg.route_scale
        counts = expert_counts(indices, self.n_experts)
        keep, n_dropped = self._capacity_mask(indices)
        if self.training and self.bias is not None:
            with torch.no_grad():
                self.load_accum += counts.long()
        return Routing(indices=indices, weights=weights.to(x.dtype), keep=keep, counts=counts, probs=probs,
                       logits=logits, n_dropped=n_dropped, aux_loss=switch_aux_loss(counts, probs),
                       z_loss=z_loss(logits))

    def capacity(self, n_tokens: int) -> int | None:
        """Assignments each expert accepts: ceil(C N k / E), or None when dropless."""
        cf = self.config.capacity_factor
        return None if cf is None else math.ceil(cf * n_tokens * self.top_k / self.n_experts)

    def _capacity_mask(self, indices: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor]:
        """keep [N, k] (first choices first, then token order) and the number dropped."""
        cap = self.capacity(indices.size(0))
        if cap is None:
            return None, torch.zeros((), device=indices.device)
        flat = indices.t().reshape(-1)                                  # [k N], slot-major
        onehot = F.one_hot(flat, self.n_experts)                        # [k N, E]
        position = (onehot.cumsum(dim=0) * onehot).sum(dim=-1) - 1      # rank within its expert
        keep = (position < cap).view(self.top_k, -1).t()                # [N, k]
        return keep, (~keep).sum()

    @torch.no_grad()
    def update_bias(self) -> None:
        """DeepSeek-V3 loss-free step: b_i += gamma * sign(mean load - load_i), from the loads accumulated
        since the last call (summed over data-parallel ranks when torch.distributed is initialised)."""
        if self.bias is None:
            return
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.all_reduce(self.load_accum)
        load = self.load_accum.double()
        if load.sum() > 0:
            self.bias += self.config.bias_update_rate * torch.sign(load.mean() - load).to(self.bias.dtype)
        self.load_accum.zero_()

    def _apply(self, fn, recurse=True):
        """Keep the loss-free bias in float32 whatever dtype the module is cast to."""
        super()._apply(fn, recurse)
        if self.bias is not None and self.bias.dtype != torch.float32:
            self.bias = self.bias.float()
        return self
