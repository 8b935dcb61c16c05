"""DeepSeek-V3's multi-token-prediction (MTP) module, built in torch.

Module k (k = 1 .. D) predicts the token k + 1 places ahead. At position i it combines the previous depth's
representation h^{k-1}_i (for k = 1 the main model's last block output, before the final norm) with the
embedding of token t_{i+k}:
    h' = W_proj [RMSNorm(emb(t_{i+k})) ; RMSNorm(h^{k-1}_i)]       (W_proj: 2d -> d, no bias)
    h^k = Block(h')                                                 (one transformer block, causal)
    logits = Head(Norm(h^k))                                        (the main model's output head)
The concatenation order (embedding first) and the names ``enorm``/``hnorm``/``proj``/``norm`` follow
DeepSeek's checkpoint (``enorm``, ``hnorm``, ``eh_proj``, ``shared_head.norm``). The embedding and the output
head are the main model's (shared, not copied), so a module's parameters are two input norms, the
projection (2 d^2), one block and one output norm: ``accounting.params.mtp_module_params`` exactly.

Training loss (DeepSeek-V3 report, eq. 25): ``lambda / D * sum_k CE_k``, with CE_k over the T - k positions
that have a target k + 1 places ahead; ``lambda`` (0.3 early in V3's training, then 0.1) is the model's
``mtp_loss_weight``. The MTP modules run only when targets are given; generation ignores them.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from accounting.shapes import ModelShape
from dense.block import Block
from dense.norm import make_norm


class MTPModule(nn.Module):
    """One MTP depth. ``forward(h [B, T, d], emb [B, T, d], rope) -> h^k [B, T, d]`` (before ``norm``)."""

    def __init__(self, shape: ModelShape, block: Block):
        super().__init__()
        d = shape.d_model
        self.enorm = make_norm(shape)
        self.hnorm = make_norm(shape)
        self.proj = nn.Linear(2 * d, d, bias=False)
        self.block = block
        self.norm = make_norm(shape)

    def forward(self, h: torch.Tensor, emb: torch.Tensor, rope=None) -> torch.Tensor:
        return self.block(self.proj(torch.cat([self.enorm(emb), self.hnorm(h)], dim=-1)), rope)


def mtp_loss(model, hidden: torch.Tensor, idx: torch.Tensor, targets: torch.Tensor) -> dict[str, torch.Tensor]:
    """``{"mtp": lambda / D * sum_k CE_k}`` for ``model.mtp`` (see the module docstring); {} when off.

    ``hidden`` [B, T, d]: the main model's last block output; ``idx``/``targets`` [B, T] with
    ``targets[:, i] = idx[:, i + 1]`` (targets -1 are ignored).
    """
    modules, weight = model.mtp, model.mtp_loss_weight
    if not len(modules) or weight == 0:
        return {}
    h, total = hidden, None
    for k, module in enumerate(modules, start=1):
        T = idx.size(1) - k
        if T < 1:
            break
        h = module(h[:, :T], model.embedding.embed(idx[:, k:]), model.rope)
        logits = model.embedding.unembed(module.norm(h))
        ce = F.cross_entropy(logits.reshape(-1, logits.size(-1)).float(), targets[:, k:].reshape(-1),
                             ignore_index=-1)
        total = ce if total is None else total + ce
    return {} if total is None else {"mtp": weight / len(modules) * total}
