"""Memory of a `ModelShape`: activations (the note's Table 1) and the KV cache, in elements and bytes.

All counts are ELEMENTS (numbers), as in the note's Table 1; multiply by ``bytes_per_element``
(2 for bf16/fp16, 1 for fp8, 4 for fp32) for bytes. No flops here.
"""
from __future__ import annotations

from .shapes import ModelShape

NOTE_ACTIVATION_COEFF = 13
"""The note's ``(~13) n d`` activation coefficient (Table 1: 3 for Q, K, V, 1 for the attention
output, 1 for O, 4 for the FFN expansion, 1 for its contraction, 2 for the layer norms, 1 for the
input embedding)."""

BYTES_PER_ELEMENT = {"fp32": 4, "bf16": 2, "fp16": 2, "fp8": 1, "int8": 1, "int4": 0.5}


def _check_positive(**values: float) -> None:
    for name, value in values.items():
        if value < 0:
            raise ValueError(f"{name} must be >= 0, got {value}")


def note_activation_elements(seq_len: int, d_model: int, vocab_size: int,
                             coeff: float = NOTE_ACTIVATION_COEFF) -> float:
    """The note's activations memory ``(~13) n d + n V`` (elements), reused across layers (no factor L).

    Units: elements of one forward pass over a window of ``seq_len`` tokens (flash attention, so no
    ``n^2`` term). The ``n V`` term is the logits at every position.
    """
    _check_positive(seq_len=seq_len, d_model=d_model, vocab_size=vocab_size)
    return coeff * seq_len * d_model + seq_len * vocab_size


def activation_elements(shape: ModelShape, n_tokens: int | None = None, batch: int = 1,
                        coeff: float = NOTE_ACTIVATION_COEFF) -> float:
    """``batch x`` the note's ``(~13) n d + n V`` for ``shape`` (elements; default n = ``shape.seq_len``)."""
    n = shape.seq_len if n_tokens is None else n_tokens
    _check_positive(n_tokens=n, batch=batch)
    return batch * note_activation_elements(n, shape.d_model, shape.vocab_size, coeff)


def note_kv_cache_elements(n_layers: int, seq_len: int, d_model: int) -> int:
    """The note's inference cache ``2 L n d`` (elements): K and V of width d, every layer, n tokens.

    (The note's text says "caching Q and K"; K and V is meant.)
    """
    _check_positive(n_layers=n_layers, seq_len=seq_len, d_model=d_model)
    return 2 * n_layers * seq_len * d_model


def kv_cache_elements_per_token(shape: ModelShape) -> int:
    """Cached elements per token, all layers (elements).

    MHA/GQA: ``2 L n_kv_heads head_dim`` (K and V; grouped-query heads shrink it).
    MLA (DeepSeek-V2/V3): ``L (kv_lora_rank + qk_rope_head_dim)``: the compressed latent and the shared
    rope key, which the weight-absorbed attention reads directly.
    """
    s = shape
    if s.attention == "mla":
        return s.n_layers * (s.kv_lora_rank + s.qk_rope_head_dim)
    return 2 * s.n_layers * s.n_kv_heads * s.head_dim


def kv_cache_elements(shape: ModelShape, context: int | None = None, batch: int = 1) -> int:
    """KV cache for ``batch`` sequences of ``context`` tokens (default ``shape.seq_len``), elements."""
    n = shape.seq_len if context is None else context
    _check_positive(context=n, batch=batch)
    return batch * n * kv_cache_elements_per_token(shape)


def kv_cache_bytes(shape: ModelShape, context: int | None = None, batch: int = 1,
                   bytes_per_element: float = 2) -> float:
    """KV cache in bytes: :func:`kv_cache_elements` x ``bytes_per_element`` (2 = bf16)."""
    _check_positive(bytes_per_element=bytes_per_element)
    return kv_cache_elements(shape, context, batch) * bytes_per_element


def activation_bytes(shape: ModelShape, n_tokens: int | None = None, batch: int = 1,
                     bytes_per_element: float = 2) -> float:
    """The note's activations memory in bytes: :func:`activation_elements` x ``bytes_per_element``."""
    _check_positive(bytes_per_element=bytes_per_element)
    return activation_elements(shape, n_tokens, batch) * bytes_per_element


def parameter_bytes(n_params: float, bytes_per_element: float = 2) -> float:
    """Weights in bytes: ``n_params x bytes_per_element``."""
    _check_positive(n_params=n_params, bytes_per_element=bytes_per_element)
    return n_params * bytes_per_element


def memory_summary(shape: ModelShape, context: int | None = None, batch: int = 1,
                   bytes_per_element: float = 2) -> dict[str, float]:
    """Element counts and bytes of the KV cache and activations at ``context`` (default seq_len)."""
    n = shape.seq_len if context is None else context
    return {
        "context_tokens": n,
        "batch": batch,
        "bytes_per_element": bytes_per_element,
        "kv_cache_elements_per_token": kv_cache_elements_per_token(shape),
        "kv_cache_elements": kv_cache_elements(shape, n, batch),
        "kv_cache_bytes": kv_cache_bytes(shape, n, batch, bytes_per_element),
        "kv_cache_elements_note_2Lnd": batch * note_kv_cache_elements(shape.n_layers, n, shape.d_model),
        "activation_elements": activation_elements(shape, n, batch),
        "activation_bytes": activation_bytes(shape, n, batch, bytes_per_element),
    }
