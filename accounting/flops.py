"""Exact matmul flops of a `ModelShape`: forward over a window, incremental decode, training.

Convention: every function takes ``flops_per_mac``. ``MAC = 1`` counts a multiply-add as ONE flop, as the
note (Press 2025, Table 1) does; ``FLOP = 2`` counts it as two, as hardware peaks, MFU and
``torch.utils.flop_counter.FlopCounterMode`` do. Only matrix multiplications are counted (norms,
activations, softmax, RoPE and the embedding lookup are ignored, as in the note and in FlopCounterMode).

Defaults: two flops per multiply-add (``flops_per_mac=FLOP``), as ``python -m accounting`` and
``accounting.price`` count. Training (`training_flops`, `training_flops_per_token`) counts causal attention
by default, n (n + 1) / 2 (query, key) pairs per window (on a sliding-window layer of window W, only the
``min(i + 1, W)`` keys each query i sees), as the CLI's ``cost`` does; `forward_flops` counts
the full n x n score matrix by default (``causal=False``), which is what ``scaled_dot_product_attention``
executes and what FlopCounterMode counts. The note's own convention (one flop per multiply-add, full
attention: ``(~2) n^2 d``) is passed explicitly where the note is reproduced (``accounting.reproduce``).
Routed experts cost ``top_k`` expert FFNs per token (dropless routing); pass ``routed_assignments`` to
price the (token, expert) pairs a real router produced, e.g. with capacity dropping.
"""
from __future__ import annotations

from .params import attention_matmul_params, ffn_params
from .shapes import ModelShape

MAC = 1
"""One flop per multiply-add: the note's convention."""
FLOP = 2
"""Two flops per multiply-add: hardware peaks, MFU and FlopCounterMode."""


def check_convention(flops_per_mac: int) -> None:
    """Raise ValueError unless ``flops_per_mac`` is ``MAC`` (1, the note's) or ``FLOP`` (2, hardware's)."""
    if flops_per_mac not in (MAC, FLOP):
        raise ValueError(f"flops_per_mac must be 1 (multiply-add = 1 flop) or 2, got {flops_per_mac!r}")


def attention_projection_macs_per_token(shape: ModelShape) -> int:
    """Multiply-adds of the attention projections (q, k, v, o; MLA's down/up maps) for one token: one per
    matrix weight (``accounting.params.attention_matmul_params``)."""
    return attention_matmul_params(shape)


def attention_score_macs_per_pair(shape: ModelShape) -> int:
    """Multiply-adds of Q K^T plus (softmax) V for one (query, key) pair, summed over heads."""
    s = shape
    if s.attention == "mla":
        return s.n_heads * (s.qk_nope_head_dim + s.qk_rope_head_dim + s.v_head_dim)
    return 2 * s.n_heads * s.head_dim


def attention_pairs(n: int, causal: bool, window: int = 0) -> int:
    """(query, key) pairs one window of ``n`` tokens scores: ``n^2`` (the full matrix), or with ``causal``
    the ``min(i + 1, window)`` keys each query i sees (``window`` 0: no limit, ``n (n + 1) / 2``)."""
    if not causal:
        return n * n
    if not window or n <= window:
        return n * (n + 1) // 2
    return window * (window + 1) // 2 + (n - window) * window


def ffn_macs_per_token(shape: ModelShape, layer: int) -> dict[str, int]:
    """Multiply-adds of block ``layer``'s FFN for one token (dropless routing), by component."""
    if not shape.is_moe_layer(layer):
        return {"dense_ffn": ffn_params(shape, shape.d_ff), "router": 0, "shared_experts": 0,
                "routed_experts": 0}
    return {"dense_ffn": 0, "router": shape.n_experts * shape.d_model,
            "shared_experts": (shape.n_shared_experts * ffn_params(shape, shape.d_shared_expert)
                               + (shape.d_model if shape.shared_expert_gate else 0)),  # + Qwen2-MoE's gate
            "routed_experts": shape.top_k * ffn_params(shape, shape.d_expert)}


def forward_flops(shape: ModelShape, n_tokens: int | None = None, *, batch: int = 1,
                  flops_per_mac: int = FLOP, causal: bool = False,
                  routed_assignments: int | None = None, include_mtp: bool = False) -> dict[str, int]:
    """Flops of one forward pass over ``batch`` windows of ``n_tokens`` (default ``shape.seq_len``).

    Returns a breakdown: ``attention_projections``, ``attention_scores``, ``dense_ffn``, ``router``,
    ``shared_experts``, ``routed_experts``, ``output_head`` (logits at every position), ``mtp`` and
    ``total``. ``routed_assignments`` replaces the dropless ``batch * n * top_k * n_moe_layers`` count of
    (token, expert) pairs. Units: flops with ``flops_per_mac`` per multiply-add.
    """
    check_convention(flops_per_mac)
    n = shape.seq_len if n_tokens is None else n_tokens
    if n < 1 or batch < 1:
        raise ValueError(f"n_tokens and batch must be >= 1, got {n} and {batch}")
    tokens = batch * n
    out = dict.fromkeys(("attention_projections", "attention_scores", "dense_ffn", "router",
                         "shared_experts", "routed_experts", "output_head", "mtp"), 0)
    for layer in range(shape.n_layers):
        out["attention_projections"] += tokens * attention_projection_macs_per_token(shape)
        layer_pairs = batch * attention_pairs(n, causal, shape.attention_window(layer))
        out["attention_scores"] += layer_pairs * attention_score_macs_per_pair(shape)
        for key, value in ffn_macs_per_token(shape, layer).items():
            out[key] += tokens * value
    if routed_assignments is not None:
        out["routed_experts"] = routed_assignments * ffn_params(shape, shape.d_expert)
    out["output_head"] = tokens * shape.vocab_size * shape.d_model
    if include_mtp and shape.mtp_modules:
        last = shape.n_layers - 1  # an MTP block has the FFN kind of the model's last layer
        per_token = (2 * shape.d_model * shape.d_model + attention_projection_macs_per_token(shape)
                     + sum(ffn_macs_per_token(shape, last).values()) + shape.vocab_size * shape.d_model)
        mtp_pairs = batch * attention_pairs(n, causal, shape.attention_window(last))
        out["mtp"] = shape.mtp_modules * (tokens * per_token + mtp_pairs * attention_score_macs_per_pair(shape))
    out = {k: v * flops_per_mac for k, v in out.items()}
    out["total"] = sum(out.values())
    return out


def forward_flops_per_token(shape: ModelShape, n_tokens: int | None = None, *,
                            flops_per_mac: int = FLOP, causal: bool = False,
                            include_mtp: bool = False) -> float:
    """Forward flops per token, averaged over a window of ``n_tokens`` (all positions predicted)."""
    n = shape.seq_len if n_tokens is None else n_tokens
    return forward_flops(shape, n, flops_per_mac=flops_per_mac, causal=causal,
                         include_mtp=include_mtp)["total"] / n


def training_flops_per_token(shape: ModelShape, n_tokens: int | None = None, *,
                             flops_per_mac: int = FLOP, causal: bool = True,
                             include_mtp: bool = False) -> float:
    """Forward + backward flops per trained token with all-position loss: 3 x forward per token
    (backward costs two forwards: gradients with respect to activations and to weights)."""
    return 3 * forward_flops_per_token(shape, n_tokens, flops_per_mac=flops_per_mac, causal=causal,
                                       include_mtp=include_mtp)


def training_flops(shape: ModelShape, tokens: float, n_tokens: int | None = None, *,
                   flops_per_mac: int = FLOP, causal: bool = True, include_mtp: bool = False) -> float:
    """Total training flops for ``tokens`` trained tokens at window ``n_tokens`` (default ``shape.seq_len``):
    two per multiply-add and causal attention unless told otherwise, the figure ``python -m accounting cost``
    prints as ``training_flops_fma2``."""
    if tokens < 0:
        raise ValueError(f"tokens must be >= 0, got {tokens}")
    return tokens * training_flops_per_token(shape, n_tokens, flops_per_mac=flops_per_mac,
                                             causal=causal, include_mtp=include_mtp)


def six_n_d(active_params: float, tokens: float) -> float:
    """The standard estimate ``6 N D`` in FLOP (two per multiply-add): 2 N forward + 4 N backward."""
    return 6.0 * active_params * tokens


def decode_flops_per_token(shape: ModelShape, context: int, *, flops_per_mac: int = FLOP) -> int:
    """Flops to produce one more token with a KV cache holding ``context`` earlier tokens.

    Per layer: the new token's projections and FFN, plus attention to ``context + 1`` keys/values (at most
    W on a sliding-window layer); then
    the output head for this one position. MLA uses the weight-absorbed form DeepSeek serves with: the
    cache holds the latent (kv_lora_rank) and the rope key; queries are mapped into the latent space
    (H x nope x kv_rank) and outputs back (H x kv_rank x v).
    """
    check_convention(flops_per_mac)
    if context < 0:
        raise ValueError(f"context must be >= 0, got {context}")
    s, d, h = shape, shape.d_model, shape.n_heads
    keys = context + 1
    # absorbed MLA maps queries into the latent (H nope kv_rank) and outputs back (H kv_rank v): the same
    # multiply-adds as the kv up matrix, so the projections are the training form's
    proj = attention_projection_macs_per_token(s)
    if s.attention == "mla":
        per_key = h * (2 * s.kv_lora_rank + s.qk_rope_head_dim)
    else:
        per_key = attention_score_macs_per_pair(s)
    total = 0
    for layer in range(s.n_layers):
        window = s.attention_window(layer)  # a sliding-window layer reads at most W cached keys
        seen = min(keys, window) if window else keys
        total += proj + seen * per_key + sum(ffn_macs_per_token(s, layer).values())
    total += s.vocab_size * d
    return total * flops_per_mac


def full_recompute_flops(shape: ModelShape, context: int, *, flops_per_mac: int = FLOP) -> int:
    """Flops to produce one more token WITHOUT a cache: a forward over all ``context + 1`` tokens
    (logits only at the last position), the quadratic alternative of the note's section 4.1."""
    f = forward_flops(shape, context + 1, flops_per_mac=flops_per_mac, causal=True)
    return f["total"] - f["output_head"] + shape.vocab_size * shape.d_model * flops_per_mac

