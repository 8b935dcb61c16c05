"""Preallocated caches for incremental decoding, as ``accounting.memory`` prices them per token.

``KVCache`` (MHA/GQA): per layer, keys and values of the ``n_kv_heads`` KV heads (grouped-query attention
caches fewer heads): ``2 * L * n_kv_heads * head_dim`` elements per token. ``LatentCache`` (MLA): per
layer the normed latent and the shared rotary key, ``L * (kv_lora_rank + qk_rope_head_dim)`` elements per
token. Keys are stored after RoPE.
"""
from __future__ import annotations

import copy

import torch


class Cache:
    """What both caches share: ``pos`` (tokens cached, the same for every layer once a forward completes),
    ``advance``, ``reset``, and per-layer tensor lists named by ``FIELDS`` whose dimension 0 is the batch."""

    FIELDS: tuple[str, ...] = ()

    def __init__(self, n_layers: int, batch: int, max_len: int):
        self.n_layers, self.batch, self.max_len = n_layers, batch, max_len
        for name in self.FIELDS:
            setattr(self, name, [None] * n_layers)
        self.pos = 0

    def _check_room(self, T: int) -> None:
        if self.pos + T > self.max_len:
            raise ValueError(f"KV cache full: {self.pos} + {T} tokens > max_len={self.max_len}")

    def advance(self, T: int) -> None:
        """Mark ``T`` more positions as cached (the model calls this after all layers ran)."""
        self.pos += T

    def reset(self, pos: int = 0) -> None:
        """Forget everything from position ``pos`` on (keeps the allocation)."""
        self.pos = pos

    def tensors(self) -> list[torch.Tensor]:
        """Every allocated tensor (all fields, all layers)."""
        return [t for name in self.FIELDS for t in getattr(self, name) if t is not None]

    def first(self, batch: int) -> "Cache":
        """The first ``batch`` sequences as a cache of their own (views into the same storage)."""
        view = copy.copy(self)
        for name in self.FIELDS:
            setattr(view, name, [None if t is None else t[:batch] for t in getattr(self, name)])
        view.batch = batch
        return view


class KVCache(Cache):
    """Keys/values for positions ``0 .. pos - 1`` of a batch, for every layer.

    Args:
        n_layers, batch, n_kv_heads, max_len, head_dim: sizes; tensors ``k``, ``v`` are [batch, n_kv_heads,
            max_len, head_dim] per layer, allocated on the first ``update`` with its dtype and device.
    """

    FIELDS = ("k", "v")

    def __init__(self, n_layers: int, batch: int, n_kv_heads: int, max_len: int, head_dim: int):
        super().__init__(n_layers, batch, max_len)
        self.n_kv_heads, self.head_dim = n_kv_heads, head_dim

    def update(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Write ``k``, ``v`` [B, KV, T, hd] at positions ``pos .. pos + T - 1`` of ``layer``; return all
        cached keys and values so far, [B, KV, pos + T, hd] (views, no copy)."""
        T = k.size(2)
        self._check_room(T)
        if self.k[layer] is None:
            size = (self.batch, self.n_kv_heads, self.max_len, self.head_dim)
            self.k[layer] = torch.empty(size, dtype=k.dtype, device=k.device)
            self.v[layer] = torch.empty(size, dtype=v.dtype, device=v.device)
        self.k[layer][:, :, self.pos:self.pos + T] = k
        self.v[layer][:, :, self.pos:self.pos + T] = v
        return self.k[layer][:, :, :self.pos + T], self.v[layer][:, :, :self.pos + T]

    def numel(self) -> int:
        """Cached elements in use: 2 (K and V) x L x B x KV x pos x hd."""
        return 2 * self.n_layers * self.batch * self.n_kv_heads * self.pos * self.head_dim


class LatentCache(Cache):
    """MLA's compressed cache: per layer the latent ``latent`` [B, max_len, kv_rank] and the shared rotary key
    ``k_rope`` [B, max_len, rope_dim] for positions ``0 .. pos - 1`` (``dense.mla``)."""

    FIELDS = ("latent", "k_rope")

    def __init__(self, n_layers: int, batch: int, max_len: int, kv_rank: int, rope_dim: int):
        super().__init__(n_layers, batch, max_len)
        self.kv_rank, self.rope_dim = kv_rank, rope_dim

    def update(self, layer: int, c: torch.Tensor, k_pe: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Write ``c`` [B, T, kv_rank] and ``k_pe`` [B, T, rope_dim] at positions ``pos .. pos + T - 1``;
        return everything cached so far, [B, pos + T, kv_rank] and [B, pos + T, rope_dim] (views)."""
        T = c.size(1)
        self._check_room(T)
        if self.latent[layer] is None:
            self.latent[layer] = torch.empty(self.batch, self.max_len, self.kv_rank, dtype=c.dtype,
                                             device=c.device)
            self.k_rope[layer] = torch.empty(self.batch, self.max_len, self.rope_dim, dtype=k_pe.dtype,
                                             device=k_pe.device)
        self.latent[layer][:, self.pos:self.pos + T] = c
        self.k_rope[layer][:, self.pos:self.pos + T] = k_pe
        return self.latent[layer][:, :self.pos + T], self.k_rope[layer][:, :self.pos + T]

    def numel(self) -> int:
        """Cached elements in use: L x B x pos x (kv_rank + rope_dim)."""
        return self.n_layers * self.batch * self.pos * (self.kv_rank + self.rope_dim)
