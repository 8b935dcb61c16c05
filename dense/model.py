"""The decoder-only transformer: embedding, L pre-norm blocks, final norm, output head; KV-cache decode.

``Transformer(shape)`` builds a dense model whose ``sum(p.numel() for p in model.parameters())`` equals
``accounting.params.count_parameters(shape).total`` and whose forward flops under
``torch.utils.flop_counter.FlopCounterMode`` equal ``accounting.flops.forward_flops(shape, T, batch=B,
flops_per_mac=2)['total']`` (2 flops per multiply-add; attention counted over the full T x T matrix).
The forward is two halves, ``trunk`` (embedding and blocks) and ``output`` (final norm, head, loss), so a
subclass can add weighted losses of its own between them (``moe.MoETransformer`` does: its FFN swap, balancing
losses and multi-token prediction all live in ``moe``).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from accounting.shapes import ModelShape

from . import flop_formulas  # noqa: F401  (FlopCounterMode formula for the CPU attention kernel)
from .block import Block
from .embedding import TokenEmbedding
from .kv_cache import Cache, KVCache, LatentCache
from .norm import make_norm
from .rope import RotaryEmbedding


@dataclass
class ModelOutput:
    """What a forward pass returns.

    logits: [B, T, V] (or [B, 1, V] with ``last_only``).
    loss: ``lm_loss + sum(aux_losses.values())``; None without targets.
    lm_loss: mean next-token cross-entropy in nats (targets -1 are ignored); None without targets.
    aux_losses: weighted losses a subclass adds to ``loss`` (empty for this dense model).
    """

    logits: torch.Tensor
    loss: torch.Tensor | None = None
    lm_loss: torch.Tensor | None = None
    aux_losses: dict[str, torch.Tensor] = field(default_factory=dict)


def check_buildable(shape: ModelShape, mtp: bool = False) -> None:
    """Raise one ValueError for shapes ``accounting`` can price but the torch model does not build.

    ``mtp``: the caller builds multi-token-prediction modules (``moe.MoETransformer`` does).
    """
    if shape.mtp_modules and not mtp:
        raise ValueError(f"mtp_modules={shape.mtp_modules}: multi-token-prediction modules are priced by "
                         "accounting but not built by the torch model; set mtp_modules=0")
    if shape.position == "rope" and rope_dim(shape) % 2:
        name = "qk_rope_head_dim" if shape.attention == "mla" else "head_dim"
        raise ValueError(f"position='rope' needs an even {name}, got {rope_dim(shape)}")
    if shape.attention == "mla" and shape.position == "rope" and rope_dim(shape) < 2:
        raise ValueError("attention='mla' with position='rope' needs qk_rope_head_dim >= 2 "
                         "(or position='none')")


INIT_STD = 0.02
"""GPT-2 / nanoGPT: every Linear and Embedding weight starts N(0, 0.02^2)."""


def residual_init_std(shape: ModelShape) -> float:
    """GPT-2 / nanoGPT: residual output projections (attention ``wo``, FFN ``down``, routed experts' down
    matrices) start with std ``INIT_STD / sqrt(2 L)``."""
    return INIT_STD / math.sqrt(2 * shape.n_layers)


def rope_dim(shape: ModelShape) -> int:
    """Width RoPE rotates: the head width, or MLA's decoupled rotary part ``qk_rope_head_dim``."""
    return shape.qk_rope_head_dim if shape.attention == "mla" else shape.head_dim


class Transformer(nn.Module):
    """Decoder-only transformer built from a ``ModelShape``.

    Args:
        shape: the model's sizes. A dense model needs ``n_experts == 0`` unless ``ffn_factory`` is given.
        ffn_factory: ``layer -> nn.Module | None``; None keeps the dense FFN of width ``d_ff``.
    """

    builds_mtp = False  # subclasses that build multi-token-prediction modules set this
    recompute = "none"
    """Activation recompute in training forwards: ``none``, or ``full`` (each block runs under
    ``torch.utils.checkpoint``, non-reentrant: only its input is kept and the block is recomputed in
    backward; set by the ``train.recompute`` setting)."""

    def __init__(self, shape: ModelShape, ffn_factory: Callable[[int], nn.Module | None] | None = None):
        super().__init__()
        check_buildable(shape, mtp=self.builds_mtp)
        if shape.is_moe and ffn_factory is None:
            raise ValueError(f"shape has n_experts={shape.n_experts}: build it with moe.build_model(shape)")
        self.shape = shape
        self.embedding = TokenEmbedding(shape)
        self.rope = RotaryEmbedding.from_shape(shape, rope_dim(shape)) if shape.position == "rope" else None
        self.blocks = nn.ModuleList(
            Block(shape, i, ffn_factory(i) if ffn_factory is not None else None) for i in range(shape.n_layers))
        self.norm = make_norm(shape)
        self.apply(self._init_weights)
        for name, p in self.named_parameters():
            if name.endswith(("attn.wo.weight", "down.weight")):
                nn.init.normal_(p, mean=0.0, std=residual_init_std(shape))

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, mean=0.0, std=INIT_STD)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)

    # ----- forward ------------------------------------------------------------------------------
    def forward(self, idx: torch.Tensor, targets: torch.Tensor | None = None, *,
                cache: Cache | None = None, last_only: bool = False) -> ModelOutput:
        """Logits for ``idx`` [B, T] (token ids); with ``targets`` [B, T] also the loss.

        ``cache``: a ``KVCache`` or ``LatentCache`` (``new_cache``) holding earlier positions; the T tokens continue from ``cache.pos``.
        ``last_only``: compute logits at the last position only (generation; not with ``targets``).
        """
        return self.output(self.trunk(idx, cache), targets, last_only=last_only)

    def trunk(self, idx: torch.Tensor, cache: Cache | None = None) -> torch.Tensor:
        """Embedding and blocks: the last block's output [B, T, d], before the final norm."""
        T = idx.size(1)
        start = 0 if cache is None else cache.pos
        if start + T > self.shape.seq_len:
            raise ValueError(f"sequence of {start + T} tokens exceeds seq_len={self.shape.seq_len}")
        x = self.embedding.embed(idx)
        full = self.recompute == "full" and cache is None and torch.is_grad_enabled()
        for block in self.blocks:
            x = checkpoint(block, x, self.rope, use_reentrant=False) if full else block(x, self.rope, cache)
        if cache is not None:
            cache.advance(T)
        return x

    def output(self, hidden: torch.Tensor, targets: torch.Tensor | None = None,
               aux_losses: dict[str, torch.Tensor] | None = None, last_only: bool = False) -> ModelOutput:
        """Final norm and head on ``hidden`` (``trunk``'s output); with ``targets`` the loss, ``lm_loss`` plus
        the weighted ``aux_losses``."""
        x = self.norm(hidden)
        if last_only:
            x = x[:, -1:, :]
        logits = self.embedding.unembed(x)
        aux_losses = aux_losses or {}
        out = ModelOutput(logits=logits, aux_losses=aux_losses)
        if targets is not None:
            if last_only:
                raise ValueError("last_only=True gives no logits for a loss over all positions")
            out.lm_loss = F.cross_entropy(logits.reshape(-1, logits.size(-1)).float(), targets.reshape(-1),
                                          ignore_index=-1)
            out.loss = out.lm_loss + sum(aux_losses.values()) if aux_losses else out.lm_loss
        return out

    # ----- decoding -----------------------------------------------------------------------------
    def new_cache(self, batch: int, max_len: int | None = None) -> Cache:
        """An empty cache for ``batch`` sequences of up to ``max_len`` (default ``seq_len``) tokens: a
        ``KVCache``, or for MLA the compressed ``LatentCache``."""
        s = self.shape
        if s.attention == "mla":
            return LatentCache(s.n_layers, batch, max_len or s.seq_len, s.kv_lora_rank, s.qk_rope_head_dim)
        return KVCache(s.n_layers, batch, s.n_kv_heads, max_len or s.seq_len, s.head_dim)

    @torch.no_grad()
    def generate(self, idx: torch.Tensor, max_new_tokens: int, temperature: float = 1.0,
                 top_k: int | None = None, use_cache: bool = True) -> torch.Tensor:
        """Append ``max_new_tokens`` sampled tokens to ``idx`` [B, T0]; returns [B, T0 + max_new_tokens].

        ``temperature=0`` picks the most likely token. With ``use_cache`` each step feeds only the new
        token (cost per token ~ linear in the context); without, each step recomputes the whole window
        (~ quadratic). Both condition on the last ``seq_len`` tokens, as nanoGPT does; once the sequence
        is longer than ``seq_len`` the cached path re-fills the cache from the cropped window every step.
        """
        n = self.shape.seq_len
        cache = None
        for _ in range(max_new_tokens):
            if not use_cache:
                logits = self(idx[:, -n:], last_only=True).logits
            elif cache is None or idx.size(1) > n:
                cache = self.new_cache(idx.size(0))
                logits = self(idx[:, -n:], cache=cache, last_only=True).logits
            else:
                logits = self(idx[:, cache.pos:], cache=cache, last_only=True).logits
            idx = torch.cat([idx, sample(logits[:, -1, :], temperature, top_k)], dim=1)
        return idx


def sample(logits: torch.Tensor, temperature: float = 1.0, top_k: int | None = None) -> torch.Tensor:
    """One token per row from logits [B, V] -> [B, 1]; greedy when ``temperature == 0``."""
    if temperature == 0:
        return logits.argmax(dim=-1, keepdim=True)
    logits = logits / temperature
    if top_k is not None:
        v, _ = torch.topk(logits, min(top_k, logits.size(-1)))
        logits = logits.masked_fill(logits < v[:, [-1]], float("-inf"))
    return torch.multinomial(F.softmax(logits.float(), dim=-1), num_samples=1)
