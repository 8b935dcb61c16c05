"""Load-balance measures and losses of one MoE layer, and collapse detection.

Definitions (over the N tokens of one forward, k routed assignments each, E experts):
    tokens_per_expert c_i: assignments the router SELECTED for expert i (before any capacity dropping);
        sum_i c_i = N k.
    load_fraction f_i = c_i / (N k) (sums to 1).
    cv = std(c) / mean(c) (population std), 0 when perfectly balanced.
    max_vio = max(c) / mean(c) - 1 (DeepSeek's MaxVio), 0 when perfectly balanced, E - 1 at worst (k = 1).
    dropped_fraction: share of the N k assignments a capacity limit dropped.
    entropy: mean over tokens of -sum_i p_i log p_i of the router's distribution (nats; log E is uniform).
    Switch/GShard auxiliary loss: alpha * E * sum_i f_i P_i with P_i the mean router probability of
        expert i; E sum f_i P_i is 1 when both are uniform. Router z-loss (ST-MoE): mean (logsumexp z)^2.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable, Mapping

import torch


@dataclass
class RouterStats:
    """Balance statistics of one MoE layer for one forward pass (detached tensors).

    tokens_per_expert [E] (selected assignments, float), load_fraction [E], cv, max_vio,
    dropped_fraction, entropy (nats), aux_loss (unweighted ``E sum f_i P_i``), z_loss (unweighted mean
    squared logsumexp), bias [E] (the loss-free selection bias) or None.
    """

    layer: int
    tokens_per_expert: torch.Tensor
    load_fraction: torch.Tensor
    cv: torch.Tensor
    max_vio: torch.Tensor
    dropped_fraction: torch.Tensor
    entropy: torch.Tensor
    aux_loss: torch.Tensor
    z_loss: torch.Tensor
    bias: torch.Tensor | None = None

    def to_dict(self) -> dict[str, Any]:
        """Plain Python floats and lists for logging (this synchronises with the device)."""
        out: dict[str, Any] = {"layer": self.layer}
        for name in ("tokens_per_expert", "load_fraction", "bias"):
            value = getattr(self, name)
            out[name] = None if value is None else [float(v) for v in value.float().cpu().tolist()]
        for name in ("cv", "max_vio", "dropped_fraction", "entropy", "aux_loss", "z_loss"):
            out[name] = float(getattr(self, name))
        return out


def expert_counts(indices: torch.Tensor, n_experts: int) -> torch.Tensor:
    """Assignments per expert from top-k indices [N, k] -> float [E] (a scatter-add into [E], not
    ``bincount``, whose output shape depends on the data and breaks a ``torch.compile`` graph)."""
    flat = indices.reshape(-1)
    return torch.zeros(n_experts, dtype=torch.long, device=flat.device).scatter_add_(
        0, flat, torch.ones_like(flat)).float()


def switch_aux_loss(counts: torch.Tensor, probs: torch.Tensor) -> torch.Tensor:
    """``E * sum_i f_i P_i`` (unweighted; multiply by alpha). counts [E] (no gradient), probs [N, E]
    (rows sum to 1; the gradient flows through P_i = mean over tokens)."""
    f = counts / counts.sum().clamp_min(1)
    return probs.size(-1) * torch.dot(f.to(probs.dtype), probs.mean(dim=0))


def z_loss(logits: torch.Tensor) -> torch.Tensor:
    """Router z-loss (Zoph et al. 2022, ST-MoE): mean over tokens of logsumexp(logits)^2. logits [N, E]."""
    return torch.logsumexp(logits.float(), dim=-1).square().mean()


def load_stats(counts: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(load_fraction, cv, max_vio)`` of per-expert counts [E] (the definitions above); the one place they
    are computed, for a forward's ``RouterStats`` and for the logged, summed counts
    (``experiments.metrics.load_balance``)."""
    mean = counts.mean().clamp_min(1e-9)
    return (counts / counts.sum().clamp_min(1), counts.std(unbiased=False) / mean, counts.max() / mean - 1)


def routed_assignments(stats: Iterable[RouterStats | Mapping[str, Any]]) -> int:
    """Kept (token, expert) pairs summed over MoE layers: per layer the selected assignments (rounded)
    less the dropped share of them (rounded); what ``accounting.flops.forward_flops(routed_assignments=...)``
    takes. Accepts ``RouterStats`` (``ModelOutput.router_stats``) or their ``to_dict()`` form (logged,
    aggregated over micro-batches and ranks; a missing ``dropped_fraction`` is 0)."""
    total = 0
    for s in stats:
        if isinstance(s, RouterStats):
            selected, dropped = float(s.tokens_per_expert.sum()), float(s.dropped_fraction)
        else:
            selected, dropped = float(sum(s["tokens_per_expert"])), float(s.get("dropped_fraction") or 0.0)
        selected = int(round(selected))
        total += selected - int(round(dropped * selected))
    return total


def balance_stats(layer: int, counts: torch.Tensor, probs: torch.Tensor, dropped: torch.Tensor,
                  aux: torch.Tensor, zl: torch.Tensor, bias: torch.Tensor | None) -> RouterStats:
    """Fill a ``RouterStats`` from counts [E], probs [N, E] and the number of dropped assignments."""
    with torch.no_grad():
        load, cv, vio = load_stats(counts)
        ent = -(probs * probs.clamp_min(1e-20).log()).sum(dim=-1).mean()
        return RouterStats(
            layer=layer, tokens_per_expert=counts.detach(), load_fraction=load.detach(), cv=cv.detach(),
            max_vio=vio.detach(), dropped_fraction=(dropped.float() / counts.sum().clamp_min(1)).detach(),
            entropy=ent.detach(),
            aux_loss=aux.detach().float(), z_loss=zl.detach().float(),
            bias=None if bias is None else bias.detach().clone())


@dataclass(frozen=True)
class Collapse:
    """One MoE layer whose routing has collapsed onto few experts."""

    layer: int
    max_vio: float
    top_expert: int
    top_share: float
    message: str


def detect_collapse(stats: Iterable[RouterStats | Mapping[str, Any]], *, max_vio: float = 1.0,
                    top_share: float = 0.5) -> list[Collapse]:
    """Layers whose load is collapsing: MaxVio above ``max_vio`` (default 1.0: some expert gets at least
    twice the mean load) or one expert taking more than ``top_share`` of the assignments (for top-k > 1 the
    share is over all N k assignments, so its largest possible value is 1/k).

    Accepts ``RouterStats`` or their ``to_dict()`` form (e.g. logged, aggregated). Returns one ``Collapse``
    per offending layer (empty: healthy), each with a readable ``message``.
    """
    found = []
    for s in stats:
        d = s.to_dict() if isinstance(s, RouterStats) else dict(s)
        frac = [float(x) for x in d["load_fraction"]]
        vio = float(d["max_vio"])
        top = max(range(len(frac)), key=frac.__getitem__)
        if vio > max_vio or frac[top] > top_share:
            found.append(Collapse(
                layer=int(d.get("layer", -1)), max_vio=vio, top_expert=top, top_share=frac[top],
                message=(f"layer {d.get('layer')}: routing collapse - expert {top} takes {frac[top]:.1%} of "
                         f"the assignments, MaxVio {vio:.2f} (thresholds: MaxVio > {max_vio}, share > "
                         f"{top_share:.0%})")))
    return found
