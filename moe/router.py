"""Token-choice top-k router: scores, gating, top-k selection, optional capacity, balancing terms.

Per MoE layer: one linear map d -> E (``E d`` parameters, + E for gpt-oss's bias, ``shape.router_bias``; ``2 E d`` flops per token at 2 per
multiply-add), then
    softmax gating: s = softmax(z);  sigmoid gating (DeepSeek-V3): s = sigmoid(z).
    selection scores: s + b, with b the per-expert selection bias (DeepSeek-V3's ``e_score_correction_bias``,
        which ``loss_free`` balancing updates); b affects WHICH experts are chosen only.
    group-limited routing (DeepSeek; ``shape.router_groups`` G > 0): the E experts form G equal groups; a
        group's score is its best selection score (``max``, V2's ``group_limited_greedy``) or the sum of
        its two best (``top2_sum``, V3's ``noaux_tc``); only the ``router_topk_groups`` best groups are
        eligible for the top-k.
    weights: s at the chosen experts, divided by their sum when normalising, times the route scale.
The routing function (gating, normalisation, scale, groups, correction bias) is the architecture's and
comes from the ``ModelShape`` (``router_*`` fields, filled from a config.json by ``accounting.hf_config``);
``RouterConfig.gating`` / ``normalize_topk`` / ``route_scale`` override it when set (not None).
Balancing: ``aux_loss`` (Switch/GShard, alpha E sum f_i P_i, returned as a loss), ``loss_free``
(DeepSeek-V3: b_i += gamma sign(mean load - load_i) in ``update_bias``, outside the gradient, from the
loads accumulated in training-mode forwards since the last update), or ``none``. The router z-loss is
independent (``z_loss_coef``). ``capacity_factor`` C drops assignments beyond ceil(C N k / E) per expert
(first choices first, then token order); None is dropless. ``jitter_eps`` multiplies the router's input
by uniform noise in [1 - eps, 1 + eps] in training (Mixtral's ``router_jitter_noise``, DBRX's
``moe_jitter_eps``).
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

    gating: ``softmax`` or ``sigmoid``; None: the shape's ``router_scoring``. normalize_topk: renormalise
    the k chosen weights to sum to 1; None: the shape's ``router_norm_topk``. balancing: ``none``,
    ``aux_loss`` or ``loss_free``. aux_loss_coef: alpha of the Switch loss. z_loss_coef: weight of the
    router z-loss (0 = off). bias_update_rate: gamma of the loss-free update. capacity_factor: None
    (dropless) or C > 0. route_scale: multiplies the routed weights (DeepSeek-V3's routed_scaling_factor);
    None: the shape's ``router_scale``. jitter_eps: training-time multiplicative input noise (0 = off).
    """

    gating: str | None = None
    normalize_topk: bool | None = None
    balancing: str = "none"
    aux_loss_coef: float = 0.01
    z_loss_coef: float = 0.0
    bias_update_rate: float = 1e-3
    capacity_factor: float | None = None
    route_scale: float | None = None
    jitter_eps: float = 0.0

    def __post_init__(self) -> None:
        if self.gating is not None and self.gating not in GATINGS:
            raise ValueError(f"RouterConfig.gating must be one of {GATINGS}, got {self.gating!r}")
        if self.balancing not in BALANCINGS:
            raise ValueError(f"RouterConfig.balancing must be one of {BALANCINGS}, got {self.balancing!r}")
        if self.normalize_topk is not None and not isinstance(self.normalize_topk, bool):
            raise ValueError(f"RouterConfig.normalize_topk must be true or false, got {self.normalize_topk!r}")
        for name in ("aux_loss_coef", "z_loss_coef", "bias_update_rate", "jitter_eps"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
                raise ValueError(f"RouterConfig.{name} must be a number >= 0, got {value!r}")
        if self.route_scale is not None and (isinstance(self.route_scale, bool) or not self.route_scale > 0):
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
        self.gating = config.gating if config.gating is not None else shape.router_scoring
        self.normalize = shape.router_norm_topk if config.normalize_topk is None else config.normalize_topk
        self.scale = shape.router_scale if config.route_scale is None else config.route_scale
        self.groups, self.topk_groups = shape.router_groups, shape.router_topk_groups
        self.group_score = shape.router_group_score
        self.gate = nn.Linear(shape.d_model, shape.n_experts, bias=shape.router_bias)  # bias: gpt-oss
        # Buffers (not parameters, so not in accounting's counts); saved in checkpoints. The bias stays
        # float32 under model.to(bf16) (see _apply): bf16 cannot resolve steps of 1e-3 near 0.5.
        if config.balancing == "loss_free" or shape.router_score_bias:
            self.register_buffer("bias", torch.zeros(shape.n_experts))
        else:
            self.bias = None
        if config.balancing == "loss_free":  # loads since the last update (an integer count)
            self.register_buffer("load_accum", torch.zeros(shape.n_experts, dtype=torch.long))
        else:
            self.load_accum = None

    def select(self, select: torch.Tensor) -> torch.Tensor:
        """Top-k expert indices [N, k] from selection scores [N, E], group-limited when configured."""
        if self.groups:
            N, G = select.size(0), self.groups
            grouped = select.view(N, G, self.n_experts // G)
            if self.group_score == "top2_sum":
                group_scores = grouped.topk(2, dim=-1).values.sum(dim=-1)          # [N, G]
            else:
                group_scores = grouped.max(dim=-1).values
            chosen = group_scores.topk(self.topk_groups, dim=-1).indices           # [N, topk_groups]
            allowed = torch.zeros_like(group_scores, dtype=torch.bool).scatter_(1, chosen, True)
            select = select.masked_fill(~allowed.repeat_interleave(self.n_experts // G, dim=1), float("-inf"))
        return select.topk(self.top_k, dim=-1).indices

    def forward(self, x: torch.Tensor) -> Routing:
        cfg = self.config
        if self.training and cfg.jitter_eps > 0:
            x = x * torch.empty_like(x).uniform_(1.0 - cfg.jitter_eps, 1.0 + cfg.jitter_eps)
        logits = self.gate(x).float()                                   # [N, E]
        if self.gating == "softmax":
            scores = probs = F.softmax(logits, dim=-1)
        else:
            scores = torch.sigmoid(logits)
            probs = scores / scores.sum(dim=-1, keepdim=True)
        select = scores if self.bias is None else scores + self.bias  # bias steers selection only
        indices = self.select(select)                                  # [N, k]
        weights = scores.gather(-1, indices)                           # [N, k]
        if self.normalize:
            weights = weights / weights.sum(dim=-1, keepdim=True).clamp_min(1e-20)
        weights = weights * self.scale
        counts = expert_counts(indices, self.n_experts)
        keep, n_dropped = self._capacity_mask(indices)
        if self.training and self.load_accum is not None:
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
        if self.bias is None or self.load_accum is None:
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
