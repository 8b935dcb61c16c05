"""Helpers shared by the dense/MoE model tests (not a test module)."""
from __future__ import annotations

import torch


def n_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def touched_parameters(model: torch.nn.Module, token: int = 3) -> tuple[int, list[set[int]]]:
    """Parameters ONE token touches, measured from a single-token forward/backward.

    Everything counts in full except: the routed experts' stacked weights (an expert counts when its slice
    received gradient, i.e. the router picked it) and an untied input embedding (the rows that received
    gradient: the one looked up). Returns the count and, per MoE layer, the set of experts counted.
    """
    model.zero_grad(set_to_none=True)
    idx = torch.tensor([[token]])
    model(idx).logits.float().square().sum().backward()
    count, picked_per_layer = 0, []
    expert_params = {}
    for name, module in model.named_modules():
        if hasattr(module, "w_down") and hasattr(module, "n_experts"):
            expert_params[name] = module
    skip = set()
    for name, module in expert_params.items():
        ws = [w for w in (module.w_up, module.w_gate, module.w_down) if w is not None]
        skip.update(id(w) for w in ws)
        picked = {e for e in range(module.n_experts) if any(w.grad[e].abs().sum() > 0 for w in ws)}
        picked_per_layer.append(picked)
        count += sum(w[0].numel() for w in ws) * len(picked)
    emb = model.embedding.wte.weight
    if not model.shape.tied_embeddings:
        skip.add(id(emb))
        rows = (emb.grad.abs().sum(dim=1) > 0).sum().item()
        count += rows * emb.size(1)
    count += sum(p.numel() for p in model.parameters() if id(p) not in skip)
    model.zero_grad(set_to_none=True)
    return count, picked_per_layer
