"""Compiled greedy decoding over a cache allocated up front: one compiled step for any position.

``static_cache`` allocates every layer's ``KVCache`` (or MLA ``LatentCache``) tensors at construction, at
their full ``max_len``, so that no step allocates and the compiled graph never sees the first-write branch.
``CompiledDecoder`` runs the prompt eagerly (prefill) and then one token per step through ONE function
compiled with ``torch.compile(dynamic=True)``: the cache position is a symbolic integer in the graph (the
attended prefix ``0 .. pos`` is a view of the preallocated tensors of symbolic length), so positions
``2 .. max_len - 1`` share one graph and no token triggers a recompilation (positions 0 and 1 would: the
compiler specialises integers equal to 0 or 1, so the prompt must hold at least 2 tokens). A sliding-window
layer recompiles once, when the position first passes its window (its mask changes form). Each step costs
what the eager step costs: attention over the ``pos + 1`` cached positions, not over ``max_len``.
"""
from __future__ import annotations

import torch
from torch import nn

from .kv_cache import Cache, KVCache, LatentCache


def static_cache(model: nn.Module, batch: int, max_len: int | None = None, dtype: torch.dtype | None = None,
                 device: torch.device | str | None = None) -> Cache:
    """``model.new_cache(batch, max_len)`` with every tensor allocated now ([batch, ..., max_len, ...]), in
    ``dtype`` and on ``device`` (default: those of the model's first parameter)."""
    p = next(model.parameters())
    dtype, device = dtype or p.dtype, device or p.device
    cache = model.new_cache(batch, max_len)
    for layer in range(cache.n_layers):
        if isinstance(cache, KVCache):
            size = (batch, cache.n_kv_heads, cache.max_len, cache.head_dim)
            cache.k[layer] = torch.zeros(size, dtype=dtype, device=device)
            cache.v[layer] = torch.zeros(size, dtype=dtype, device=device)
        elif isinstance(cache, LatentCache):
            cache.latent[layer] = torch.zeros(batch, cache.max_len, cache.kv_rank, dtype=dtype, device=device)
            cache.k_rope[layer] = torch.zeros(batch, cache.max_len, cache.rope_dim, dtype=dtype, device=device)
        else:
            raise ValueError(f"static_cache: unknown cache type {type(cache).__name__}")
    return cache


class CompiledDecoder:
    """Greedy decoding of ``batch`` sequences with a preallocated cache and one compiled step.

    ``step(tokens [B, 1]) -> logits [B, V]`` appends one token per sequence at ``cache.pos`` (compiled
    unless ``compile=False``, which runs the same code eagerly: the reference). ``generate`` is
    ``model.generate(idx, n, temperature=0)`` within ``max_len`` (default the shape's ``seq_len``)."""

    def __init__(self, model: nn.Module, batch: int, max_len: int | None = None, compile: bool = True,
                 dtype: torch.dtype | None = None, **compile_kwargs):
        self.model, self.batch = model, batch
        self.cache = static_cache(model, batch, max_len, dtype)
        self.max_len = self.cache.max_len
        self.compiled = compile
        self._step = (torch.compile(self._forward_step, dynamic=True, **compile_kwargs) if compile
                      else self._forward_step)

    def _forward_step(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.model(tokens, cache=self.cache, last_only=True).logits[:, -1, :]

    @torch.no_grad()
    def prefill(self, idx: torch.Tensor) -> torch.Tensor:
        """Forget the cache, run the prompt ``idx`` [B, T0] eagerly; the last position's logits [B, V]."""
        B, T0 = idx.shape
        if B != self.batch:
            raise ValueError(f"CompiledDecoder was built for batch {self.batch}, got {B} sequences")
        if T0 < 2:
            raise ValueError("CompiledDecoder needs a prompt of at least 2 tokens (positions 0 and 1 would be "
                             "compiled as constants)")
        self.cache.reset()
        return self.model(idx, cache=self.cache, last_only=True).logits[:, -1, :]

    @torch.no_grad()
    def step(self, tokens: torch.Tensor) -> torch.Tensor:
        """Logits [B, V] after appending ``tokens`` [B, 1] at position ``cache.pos``."""
        if self.cache.pos + 1 > self.max_len:
            raise ValueError(f"cache full: position {self.cache.pos} of max_len={self.max_len}")
        return self._step(tokens)

    @torch.no_grad()
    def generate(self, idx: torch.Tensor, max_new_tokens: int) -> torch.Tensor:
        """``idx`` [B, T0] followed by ``max_new_tokens`` greedy tokens: [B, T0 + max_new_tokens]."""
        if idx.size(1) + max_new_tokens > self.max_len:
            raise ValueError(f"{idx.size(1)} + {max_new_tokens} tokens exceed max_len={self.max_len}")
        logits, out = self.prefill(idx), [idx]
        for i in range(max_new_tokens):
            token = logits.argmax(dim=-1, keepdim=True)
            out.append(token)
            if i + 1 < max_new_tokens:
                logits = self.step(token)
        return torch.cat(out, dim=1)
