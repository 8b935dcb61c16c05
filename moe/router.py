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
comes from the ``ModelShape`` only (``router_*`` fields, filled from a config.json by
``accounting.hf_config``); ``RouterConfig`` holds the training knobs below and nothing that changes it.
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
from dataclasses import dataclass, field, fields

import torch
import torch.nn.functional as F
from torch import nn

from accounting.shapes import ModelShape

from .balance import expert_counts, switch_aux_loss, z_loss

BALANCINGS = ("none", "aux_loss", "loss_free")
MOVED_TO_SHAPE = {"gating": "router_scoring", "normalize_topk": "router_norm_topk", "route_scale": "router_scale"}
"""Former `RouterConfig` fields that restated the routing function, and the `ModelShape` field that now
holds each (the only place the routing function is set)."""


def _knob(default, help: str, **check):
    """A `RouterConfig` field: its one-line meaning (``help``) and its check (``choices``, ``min`` or
    ``positive``) in the field's metadata, read by ``__post_init__`` and by ``experiments.config``."""
    return field(default=default, metadata={"help": help, **check})


@dataclass(frozen=True)
class RouterConfig:
    """Training settings of the router (validated on construction; a bad value raises one ValueError naming
    the field). The routing function (softmax or sigmoid scores, top-k normalisation, scale, groups) is the
    shape's (``ModelShape.router_*``), not a setting here. Each field's ``metadata["help"]`` is its
    one-line meaning (listed by ``python -m experiments.describe``)."""

    balancing: str = _knob("none", "load balancing: none | aux_loss (Switch/GShard loss) | loss_free "
                                   "(DeepSeek-V3 per-expert bias)", choices=BALANCINGS)
    aux_loss_coef: float = _knob(0.01, "alpha of the Switch auxiliary loss (balancing=aux_loss)", min=0)
    z_loss_coef: float = _knob(0.0, "weight of the router z-loss (0: off)", min=0)
    bias_update_rate: float = _knob(1e-3, "gamma of the loss-free bias update per step (balancing=loss_free)",
                                    min=0)
    capacity_factor: float | None = _knob(None, "C: each expert takes at most ceil(C N k / E) assignments; "
                                                "null: dropless", positive=True)
    jitter_eps: float = _knob(0.0, "training-time multiplicative noise on the router input, uniform in "
                                   "[1 - eps, 1 + eps] (0: off)", min=0)

    def __post_init__(self) -> None:
        for f in fields(self):
            value, check = getattr(self, f.name), f.metadata
            if "choices" in check:
                if value not in check["choices"]:
                    raise ValueError(f"RouterConfig.{f.name} must be one of {check['choices']}, got {value!r}")
            elif value is None and f.default is None:
                continue
            elif isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise ValueError(f"RouterConfig.{f.name} must be a number, got {value!r}")
            elif check.get("positive") and value <= 0:
                raise ValueError(f"RouterConfig.{f.name} must be {'None or ' if f.default is None else ''}> 0, "
                                 f"got {value!r}")
            elif value < check.get("min", -math.inf):
                raise ValueError(f"RouterConfig.{f.name} must be a number >= {check['min']:g}, got {value!r}")

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
                moved = [f"{k} is the shape's {MOVED_TO_SHAPE[k]}" for k in unknown if k in MOVED_TO_SHAPE]
                raise ValueError(f"unknown RouterConfig field(s): {', '.join(map(str, unknown))}"
                                 + (f" ({'; '.join(moved)})" if moved else ""))
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
        self.gating, self.normalize, self.scale = shape.router_scoring, shape.router_norm_topk, shape.router_scale
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
