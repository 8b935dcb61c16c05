"""Exact parameter counts of a `ModelShape`, per component, total and active.

Conventions:
    * **total** counts every weight of the main model: all routed experts, both embeddings unless tied,
      every norm. Multi-token-prediction (MTP) modules are reported separately (``mtp``) and are not in
      ``total`` (DeepSeek-V3's 671B excludes its 14B MTP module); ``total_with_mtp`` adds them.
    * **active** counts what one token touches in a forward pass: attention, norms, the dense FFNs, the
      router, the shared experts and ``top_k`` routed experts per MoE layer, the output head, and ONE row
      (d elements) of the input embedding. With tied embeddings the head's V x d matrix is counted once.
      The note's "38B" (12 L d^2) and DeepSeek's "37B" are both close to this definition.
These counts match ``sum(p.numel() for p in model.parameters())`` of the ``dense``/``moe`` modules exactly.
"""
from __future__ import annotations

from dataclasses import dataclass

from .shapes import ModelShape


def norm_params(shape: ModelShape, width: int | None = None) -> int:
    """Parameters of one norm over ``width`` (default d): 2 per element for LayerNorm, 1 for RMSNorm and
    the bias-free LayerNorm."""
    width = shape.d_model if width is None else width
    return (2 if shape.norm_kind == "layernorm" else 1) * width


def qk_norm_params(shape: ModelShape) -> int:
    """Weights of one attention block's q/k norms (RMSNorm): ``head`` 2 hd (one weight per head width,
    shared by the heads, Qwen3), ``full`` H hd + KV hd (OLMoE), ``none`` 0. Counted as ``norms``."""
    if shape.qk_norm == "head":
        return 2 * shape.head_dim
    if shape.qk_norm == "full":
        return (shape.n_heads + shape.n_kv_heads) * shape.head_dim
    return 0


def attention_params(shape: ModelShape) -> int:
    """Weights of one attention block (the q/k norms are counted apart, in ``norms``).

    MHA/GQA: W_q (d x H*hd), W_k and W_v (d x KV*hd each), W_o (H*hd x d); with ``qkv_bias`` also the
    biases of q, k, v (H hd + 2 KV hd).
    With ``attention_bias`` the biases of q, k, v and o (H hd + 2 KV hd + d); with ``attention_sinks`` one
    sink logit per query head (H).
    MLA (DeepSeek-V2/V3): q down (d x q_rank) + its norm + q up (q_rank x H*(nope+rope)) -- or one
    d x H*(nope+rope) matrix when q_lora_rank == 0 --, kv down (d x (kv_rank + rope)) + its norm,
    kv up (kv_rank x H*(nope + v)), output (H*v x d).
    """
    s = shape
    if s.attention == "mla":
        norms = (norm_params(s, s.q_lora_rank) if s.q_lora_rank else 0) + norm_params(s, s.kv_lora_rank)
        return attention_matmul_params(s) + norms
    q_width, kv_width = s.n_heads * s.head_dim, s.n_kv_heads * s.head_dim
    bias = q_width + 2 * kv_width if s.qkv_bias else 0
    if s.attention_bias:  # q, k, v and o (gpt-oss)
        bias = q_width + 2 * kv_width + s.d_model
    sinks = s.n_heads if s.attention_sinks else 0  # one sink logit per query head (gpt-oss)
    return attention_matmul_params(s) + bias + sinks


def attention_matmul_params(shape: ModelShape) -> int:
    """The weights of one attention block's matrices (no norms, no biases): each is one multiply-add per
    token, so this is also ``accounting.flops``' projection count (nanochat's one matmul count).

    MHA/GQA: ``2 d H hd + 2 d KV hd``. MLA: q down + q up (or one q matrix), kv down ``d (kv_rank + rope)``,
    kv up ``kv_rank H (nope + v)``, output ``H v d``; the weight-absorbed decode form multiplies the same
    numbers (``accounting.flops.decode_flops_per_token``).
    """
    s, d, h = shape, shape.d_model, shape.n_heads
    if s.attention == "mla":
        q_head = s.qk_nope_head_dim + s.qk_rope_head_dim
        q = d * s.q_lora_rank + s.q_lora_rank * h * q_head if s.q_lora_rank else d * h * q_head
        kv = d * (s.kv_lora_rank + s.qk_rope_head_dim) + s.kv_lora_rank * h * (s.qk_nope_head_dim + s.v_head_dim)
        return q + kv + h * s.v_head_dim * d
    return 2 * d * h * s.head_dim + 2 * d * s.n_kv_heads * s.head_dim


def ffn_params(shape: ModelShape, width: int) -> int:
    """One FFN (or expert) of hidden width ``width``: 2 or 3 matrices of d x width."""
    return shape.ffn_matrices * shape.d_model * width


def expert_params(shape: ModelShape) -> int:
    """One routed expert: its 2 or 3 matrices of d x ``d_expert``, plus with ``expert_bias`` the biases of
    its hidden matrices (f each) and of its output (d), as gpt-oss's experts have."""
    bias = (shape.ffn_matrices - 1) * shape.d_expert + shape.d_model if shape.expert_bias else 0
    return ffn_params(shape, shape.d_expert) + bias


def moe_layer_params(shape: ModelShape) -> dict[str, int]:
    """One MoE FFN: routed experts, shared experts (with Qwen2-MoE's d -> 1 gate when ``shared_expert_gate``)
    and router (with gpt-oss's E biases when ``router_bias``) (total, not active)."""
    return {
        "routed_experts": shape.n_experts * expert_params(shape),
        "shared_experts": (shape.n_shared_experts * ffn_params(shape, shape.d_shared_expert)
                           + (shape.d_model if shape.shared_expert_gate else 0)),
        "router": shape.n_experts * shape.d_model + (shape.n_experts if shape.router_bias else 0),
    }


def block_params(shape: ModelShape, moe: bool) -> dict[str, int]:
    """One transformer block, by component."""
    out = {"attention": attention_params(shape), "norms": 2 * norm_params(shape) + qk_norm_params(shape),
           "dense_ffn": 0, "routed_experts": 0, "shared_experts": 0, "router": 0}
    if moe:
        out.update(moe_layer_params(shape))
    else:
        out["dense_ffn"] = ffn_params(shape, shape.d_ff)
    return out


def mtp_module_params(shape: ModelShape) -> int:
    """One DeepSeek-V3 MTP module: two input norms, a 2d -> d projection, one block, one output norm.

    The embedding and output head are shared with the main model and not counted again.
    """
    block = sum(block_params(shape, moe=shape.is_moe_layer(shape.n_layers - 1)).values())
    return 3 * norm_params(shape) + 2 * shape.d_model * shape.d_model + block


def mtp_module_active_params(shape: ModelShape) -> int:
    """Parameters one token touches in one MTP module (its block with ``top_k`` routed experts)."""
    moe = shape.is_moe_layer(shape.n_layers - 1)  # an MTP block has the FFN kind of the last layer
    inactive = (shape.n_experts - shape.top_k) * expert_params(shape) if moe else 0
    return mtp_module_params(shape) - inactive


COMPONENTS = ("embedding", "attention", "norms", "dense_ffn", "shared_experts", "routed_experts",
              "router", "output_head")


@dataclass(frozen=True)
class ParameterCount:
    """Per-component parameter counts (elements). ``total`` and ``active`` exclude MTP modules."""

    total_by_component: dict[str, int]
    active_by_component: dict[str, int]
    mtp_total: int
    mtp_active: int

    @property
    def total(self) -> int:
        return sum(self.total_by_component.values())

    @property
    def active(self) -> int:
        return sum(self.active_by_component.values())

    @property
    def total_with_mtp(self) -> int:
        return self.total + self.mtp_total

    @property
    def active_fraction(self) -> float:
        return self.active / self.total


def count_parameters(shape: ModelShape) -> ParameterCount:
    """Exact parameter counts of ``shape``, total and active, by component (see module docstring)."""
    total = dict.fromkeys(COMPONENTS, 0)
    for layer in range(shape.n_layers):
        for key, value in block_params(shape, shape.is_moe_layer(layer)).items():
            total[key] += value
    total["norms"] += norm_params(shape)  # final norm
    total["embedding"] = shape.vocab_size * shape.d_model
    total["output_head"] = 0 if shape.tied_embeddings else shape.vocab_size * shape.d_model

    active = dict(total)
    active["routed_experts"] = shape.n_moe_layers * shape.top_k * expert_params(shape)
    if shape.tied_embeddings:
        active["embedding"], active["output_head"] = 0, shape.vocab_size * shape.d_model
    else:
        active["embedding"] = shape.d_model  # the one row a token looks up
    return ParameterCount(total, active, shape.mtp_modules * mtp_module_params(shape),
                          shape.mtp_modules * mtp_module_active_params(shape))


def total_parameters(shape: ModelShape) -> int:
    """All weights of the main model (elements); MTP modules excluded."""
    return count_parameters(shape).total


def active_parameters(shape: ModelShape) -> int:
    """Weights one token touches (elements); see the module docstring for the convention."""
    return count_parameters(shape).active


def active_parameters_with_input_embedding(shape: ModelShape) -> int:
    """Active weights counting the WHOLE V x d input embedding instead of the one row a token reads.

    This is the convention of most MoE model cards (Mixtral's 12.9B, Qwen1.5-MoE's 2.7B, OLMoE's 1.3B,
    DBRX's 36B); DeepSeek's 37B counts only the row, i.e. :func:`active_parameters`. With tied
    embeddings the two are equal.
    """
    c = count_parameters(shape).active_by_component
    return sum(c.values()) + (0 if shape.tied_embeddings else shape.vocab_size * shape.d_model - c["embedding"])
