"""`ModelShape`: the one description of a model that every part of the package prices or builds.

A dense decoder-only transformer is the case ``n_experts == 0``. An MoE model replaces the FFN of every
layer from ``first_dense_layers`` on (or of the layers ``moe_layer_pattern`` marks ``M``) by ``n_experts`` routed experts (``top_k`` per token) plus
``n_shared_experts`` always-on experts. Attention is plain multi-head (``mha``), grouped-query (``gqa``)
or DeepSeek's multi-head latent attention (``mla``, with low-rank query and key/value projections).

Architectural conventions that the parameter and flop counts (``accounting``) and the PyTorch modules
(``dense``, ``moe``) share, so that they agree exactly:

* No linear layer has a bias, except the q/k/v projections when ``qkv_bias`` (Qwen2-MoE), q/k/v/o when
  ``attention_bias`` (gpt-oss, Llama's ``attention_bias``), and gpt-oss's experts and router
  (``expert_bias``, ``router_bias``). Norms:
  ``layernorm`` has weight and bias (2 d parameters, as the note's Table 1 counts ``4 L d``), ``rmsnorm``
  and ``layernorm_nobias`` (DBRX's bias-free LayerNorm) a weight only (d).
* Each block has two norms (before attention, before the FFN); one final norm precedes the output head.
* Positions are rotary (RoPE, no parameters) or absent; there is no learned position table.
* FFN kind ``gelu`` is two matrices (d -> d_ff -> d, as in the note); ``swiglu`` is three
  (gate, up: d -> d_ff; down: d_ff -> d). Experts use the same kind with width ``d_expert``.
* The router is one bias-free linear map d -> n_experts per MoE layer. DeepSeek-style balancing biases
  (V3's ``e_score_correction_bias``) are buffers, not parameters. ``shared_expert_gate`` adds Qwen2-MoE's
  d -> 1 sigmoid gate on the shared experts (d parameters per MoE layer).
* Optional per-attention q/k norms (``qk_norm``): ``head`` normalises each head's query and key over its
  head_dim with one weight of head_dim shared by the heads (Qwen3), ``full`` normalises the whole query
  (H hd) and key (KV hd) projections (OLMoE). Their weights are counted as ``norms``.

Fields that change numbers but not parameter counts (RoPE base and YaRN scaling, norm eps, clip_qkv, the
routing function) are carried so that a model built from the shape computes what the original does.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Mapping

FFN_KINDS = ("gelu", "swiglu", "swiglu_clamped")
NORM_KINDS = ("layernorm", "rmsnorm", "layernorm_nobias")
QK_NORMS = ("none", "head", "full")
ROPE_SCALINGS = ("none", "yarn", "llama3")
ROUTER_SCORINGS = ("softmax", "sigmoid")
GROUP_SCORES = ("max", "top2_sum")
STR_FIELDS = ("ffn_kind", "norm_kind", "position", "attention", "qk_norm", "rope_scaling", "router_scoring",
              "router_group_score", "name")
BOOL_FIELDS = ("tied_embeddings", "qkv_bias", "shared_expert_gate", "router_norm_topk", "router_score_bias")
FLOAT_FIELDS = ("norm_eps", "clip_qkv", "rope_theta", "rope_factor", "rope_beta_fast", "rope_beta_slow",
                "rope_mscale", "rope_mscale_all_dim", "router_scale")
# Layer patterns and the gpt-oss family (fields added after the ones above; see ModelShape's docstring).
STR_FIELDS += ("moe_layer_pattern", "window_layer_pattern")
BOOL_FIELDS += ("attention_bias", "attention_sinks", "expert_bias", "router_bias", "rope_truncate")
FLOAT_FIELDS += ("swiglu_alpha", "swiglu_limit", "rope_low_freq_factor", "rope_high_freq_factor")
MOE_LAYER, DENSE_LAYER = "M", "D"
SLIDING_LAYER, FULL_LAYER = "S", "F"
ATTENTION_KINDS = ("mha", "gqa", "mla")
POSITION_KINDS = ("rope", "none")


class ShapeError(ValueError):
    """A shape that cannot describe a model; the message names the offending field."""


@dataclass(frozen=True)
class ModelShape:
    """Sizes of a decoder-only transformer, dense or mixture-of-experts.

    Attributes (all sizes are element counts):
        vocab_size: V, tokens in the vocabulary.
        d_model: d_emb, the residual-stream width.
        n_layers: L, transformer blocks (not counting multi-token-prediction modules).
        n_heads: H, query heads.
        seq_len: n, the context window the model is priced and built for.
        n_kv_heads: key/value heads (``gqa``); defaults to ``n_heads``.
        head_dim: per-head width for ``mha``/``gqa``; defaults to ``d_model // n_heads``.
        d_ff: width of the dense FFN; defaults to ``4 * d_model``.
        ffn_kind: ``gelu`` (2 matrices) or ``swiglu`` (3 matrices).
        norm_kind: ``layernorm`` (weight + bias) or ``rmsnorm`` (weight).
        position: ``rope`` or ``none``.
        tied_embeddings: the output head reuses the input embedding matrix.
        attention: ``mha``, ``gqa`` or ``mla``.
        q_lora_rank, kv_lora_rank, qk_nope_head_dim, qk_rope_head_dim, v_head_dim: MLA dimensions
            (``q_lora_rank = 0`` means an uncompressed query projection, as in DeepSeek-V2-Lite).
        n_experts: routed experts per MoE layer, E (0 = dense model).
        top_k: routed experts per token, k.
        n_shared_experts: always-on experts per MoE layer.
        d_expert: width of one routed expert's FFN; defaults to ``d_ff``.
        d_shared_expert: width of one shared expert; defaults to ``d_expert``.
        first_dense_layers: leading layers that keep a dense FFN of width ``d_ff``.
        mtp_modules: DeepSeek-V3 multi-token-prediction modules (each one extra block plus a projection).
        norm_eps: epsilon of every norm; None keeps torch's default (LayerNorm 1e-5, RMSNorm the dtype's eps).
        qkv_bias: biases on the q, k and v projections (Qwen2-MoE).
        qk_norm: ``none``, ``head`` (Qwen3: RMSNorm per head over head_dim) or ``full`` (OLMoE: RMSNorm over
            the whole query and key projections), applied before RoPE.
        clip_qkv: clamp q, k, v to [-c, c] (DBRX after the projection; OLMoE after the q/k norms); None: off.
        rope_theta: RoPE base.
        rope_scaling: ``none`` or ``yarn`` (with the ``rope_*`` fields below).
        rope_factor, rope_original_max_len, rope_beta_fast, rope_beta_slow, rope_mscale, rope_mscale_all_dim:
            YaRN's parameters, the fields of an HF ``rope_scaling`` / ``rope_parameters`` entry (mscale 0
            means not given).
        router_scoring: ``softmax`` or ``sigmoid`` (DeepSeek-V3's ``scoring_func``).
        router_norm_topk: divide the k chosen weights by their sum (``norm_topk_prob``).
        router_scale: multiplies the routed weights (``routed_scaling_factor``).
        router_groups, router_topk_groups: group-limited routing (DeepSeek ``n_group``/``topk_group``): the
            experts form ``router_groups`` equal groups, only the best ``router_topk_groups`` groups are
            eligible; 0 = no grouping.
        router_group_score: how a group is scored: ``max`` (DeepSeek-V2 ``group_limited_greedy``, over
            the scores) or ``top2_sum`` (DeepSeek-V3 ``noaux_tc``, sum of the two best biased scores).
        router_score_bias: the router carries a per-expert selection bias buffer (DeepSeek-V3's
            ``e_score_correction_bias``; also what ``loss_free`` balancing updates).
        shared_expert_gate: the shared experts' output is scaled by sigmoid(x w), w of d (Qwen2-MoE).
        moe_layer_pattern: where the MoE layers are when they are not just "every layer from
            ``first_dense_layers`` on": one character per layer, ``M`` (MoE FFN) or ``D`` (dense FFN of
            width ``d_ff``), e.g. ``DMDM`` for MoE every other layer (Llama 4's ``interleave_moe_layer_step``
            2, Qwen's ``decoder_sparse_step`` 2) or Qwen's ``mlp_only_layers``. Empty (the default): the
            ``first_dense_layers`` prefix rule. Set one or the other, not both.
        attention_bias: biases on all four attention projections q, k, v and o (gpt-oss, Llama's
            ``attention_bias``); ``qkv_bias`` is the q/k/v-only variant.
        attention_sinks: one learned logit per query head joins each softmax as an extra column whose
            probability is dropped (gpt-oss's ``sinks``; H parameters per layer, counted as attention).
        sliding_window: W > 0: the layers ``window_layer_pattern`` marks ``S`` (all layers when it is empty)
            let query i see keys i - W + 1 .. i only; 0: every layer attends to the whole causal prefix.
        window_layer_pattern: one character per layer, ``S`` (sliding window) or ``F`` (full attention), as
            transformers' ``layer_types`` (gpt-oss alternates ``SFSF...``); empty: every layer ``S``.
        expert_bias: each routed expert's matrices have biases (gpt-oss: gate and up f each, down d).
        router_bias: the router's linear map d -> E has a bias (E parameters per MoE layer, gpt-oss).
        swiglu_alpha, swiglu_limit: the ``swiglu_clamped`` FFN kind (gpt-oss): with g = min(gate x, limit)
            and u = clamp(up x, -limit, limit), down((u + 1) * g * sigmoid(alpha g)); three matrices.
        rope_truncate: YaRN rounds its ramp's ends to whole dimensions (transformers' ``truncate``, default
            true; gpt-oss sets false).
        rope_low_freq_factor, rope_high_freq_factor: Llama-3.1's ``llama3`` RoPE scaling (with
            ``rope_factor`` and ``rope_original_max_len``): wavelengths above original/low are divided by
            the factor, below original/high kept, and blended in between.
        name: a label for tables.
    """

    vocab_size: int
    d_model: int
    n_layers: int
    n_heads: int
    seq_len: int
    n_kv_heads: int | None = None
    head_dim: int | None = None
    d_ff: int | None = None
    ffn_kind: str = "gelu"
    norm_kind: str = "layernorm"
    position: str = "rope"
    tied_embeddings: bool = False
    attention: str = "mha"
    q_lora_rank: int = 0
    kv_lora_rank: int = 0
    qk_nope_head_dim: int = 0
    qk_rope_head_dim: int = 0
    v_head_dim: int = 0
    n_experts: int = 0
    top_k: int = 0
    n_shared_experts: int = 0
    d_expert: int | None = None
    d_shared_expert: int | None = None
    first_dense_layers: int = 0
    mtp_modules: int = 0
    norm_eps: float | None = None
    qkv_bias: bool = False
    qk_norm: str = "none"
    clip_qkv: float | None = None
    rope_theta: float = 10000.0
    rope_scaling: str = "none"
    rope_factor: float = 1.0
    rope_original_max_len: int = 0
    rope_beta_fast: float = 32.0
    rope_beta_slow: float = 1.0
    rope_mscale: float = 0.0
    rope_mscale_all_dim: float = 0.0
    router_scoring: str = "softmax"
    router_norm_topk: bool = True
    router_scale: float = 1.0
    router_groups: int = 0
    router_topk_groups: int = 0
    router_group_score: str = "max"
    router_score_bias: bool = False
    shared_expert_gate: bool = False
    moe_layer_pattern: str = ""
    attention_bias: bool = False
    attention_sinks: bool = False
    sliding_window: int = 0
    window_layer_pattern: str = ""
    expert_bias: bool = False
    router_bias: bool = False
    swiglu_alpha: float = 1.702
    swiglu_limit: float = 7.0
    rope_truncate: bool = True
    rope_low_freq_factor: float = 1.0
    rope_high_freq_factor: float = 4.0
    name: str = field(default="", compare=False)

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.name in STR_FIELDS:
                if not isinstance(value, str):
                    raise ShapeError(f"{f.name} must be a string, got {value!r}")
            elif f.name in BOOL_FIELDS:
                if not isinstance(value, bool):
                    raise ShapeError(f"{f.name} must be true or false, got {value!r}")
            elif f.name in FLOAT_FIELDS:
                if value is None and f.name in ("norm_eps", "clip_qkv"):
                    continue
                if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0:
                    raise ShapeError(f"{f.name} must be a number >= 0, got {value!r}")
                object.__setattr__(self, f.name, float(value))
            elif value is not None and (isinstance(value, bool) or not isinstance(value, int)):
                raise ShapeError(f"{f.name} must be an integer, got {value!r}")
            elif value is not None and value < 0:
                raise ShapeError(f"{f.name} must be >= 0, got {value}")
        for name in ("vocab_size", "d_model", "n_layers", "n_heads", "seq_len"):
            if getattr(self, name) < 1:
                raise ShapeError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.ffn_kind not in FFN_KINDS:
            raise ShapeError(f"ffn_kind must be one of {FFN_KINDS}, got {self.ffn_kind!r}")
        if self.norm_kind not in NORM_KINDS:
            raise ShapeError(f"norm_kind must be one of {NORM_KINDS}, got {self.norm_kind!r}")
        if self.position not in POSITION_KINDS:
            raise ShapeError(f"position must be one of {POSITION_KINDS}, got {self.position!r}")
        if self.attention not in ATTENTION_KINDS:
            raise ShapeError(f"attention must be one of {ATTENTION_KINDS}, got {self.attention!r}")
        for name, choices in (("qk_norm", QK_NORMS), ("rope_scaling", ROPE_SCALINGS),
                              ("router_scoring", ROUTER_SCORINGS), ("router_group_score", GROUP_SCORES)):
            if getattr(self, name) not in choices:
                raise ShapeError(f"{name} must be one of {choices}, got {getattr(self, name)!r}")
        if self.qk_norm != "none" and self.attention == "mla":
            raise ShapeError("qk_norm applies to attention 'mha'/'gqa' (MLA has its own latent norms)")
        if self.rope_theta <= 0 or self.router_scale <= 0:
            raise ShapeError(f"rope_theta and router_scale must be > 0, got {self.rope_theta} and "
                             f"{self.router_scale}")
        if self.rope_scaling == "yarn" and (self.rope_factor < 1 or self.rope_original_max_len < 1):
            raise ShapeError("rope_scaling='yarn' needs rope_factor >= 1 and rope_original_max_len >= 1")

        set_ = lambda k, v: object.__setattr__(self, k, v)  # noqa: E731  (frozen dataclass defaults)
        if self.n_kv_heads is None:
            set_("n_kv_heads", self.n_heads)
        if self.head_dim is None:
            if self.attention != "mla" and self.d_model % self.n_heads:
                raise ShapeError(
                    f"d_model={self.d_model} is not divisible by n_heads={self.n_heads}; "
                    "set head_dim explicitly or change one of them")
            set_("head_dim", self.d_model // self.n_heads)
        if self.d_ff is None:
            set_("d_ff", 4 * self.d_model)
        if self.d_expert is None:
            set_("d_expert", self.d_ff)
        if self.d_shared_expert is None:
            set_("d_shared_expert", self.d_expert)

        if self.attention == "mha" and self.n_kv_heads != self.n_heads:
            raise ShapeError(f"attention='mha' needs n_kv_heads == n_heads; got {self.n_kv_heads} "
                             f"and {self.n_heads} (use attention='gqa')")
        if self.attention == "gqa" and (self.n_kv_heads < 1 or self.n_heads % self.n_kv_heads):
            raise ShapeError(f"n_heads={self.n_heads} must be a multiple of n_kv_heads={self.n_kv_heads}")
        if self.attention in ("mha", "gqa") and self.head_dim < 1:
            raise ShapeError("head_dim must be >= 1")
        if self.attention == "mla":
            for name in ("kv_lora_rank", "qk_nope_head_dim", "v_head_dim"):
                if getattr(self, name) < 1:
                    raise ShapeError(f"attention='mla' needs {name} >= 1")
        if self.d_ff < 1:
            raise ShapeError("d_ff must be >= 1")

        moe_fields = {k: getattr(self, k) for k in ("top_k", "n_shared_experts", "first_dense_layers")}
        if self.n_experts == 0:
            set_fields = [k for k, v in moe_fields.items() if v]
            if set_fields:
                raise ShapeError(f"n_experts=0 (dense model) but MoE fields are set: {', '.join(set_fields)}")
        else:
            if self.top_k < 1:
                raise ShapeError(f"an MoE shape needs top_k >= 1 (n_experts={self.n_experts})")
            if self.top_k > self.n_experts:
                raise ShapeError(f"top_k={self.top_k} exceeds n_experts={self.n_experts}")
            if self.d_expert < 1:
                raise ShapeError("d_expert must be >= 1")
            if self.first_dense_layers > self.n_layers:
                raise ShapeError(f"first_dense_layers={self.first_dense_layers} exceeds "
                                 f"n_layers={self.n_layers}")
            if bool(self.router_groups) != bool(self.router_topk_groups):
                raise ShapeError("router_groups and router_topk_groups must both be 0 or both >= 1")
            if self.router_groups:
                g, tg = self.router_groups, self.router_topk_groups
                if self.n_experts % g or tg > g:
                    raise ShapeError(f"router_groups={g} must divide n_experts={self.n_experts} and be >= "
                                     f"router_topk_groups={tg}")
                if self.top_k > tg * (self.n_experts // g):
                    raise ShapeError(f"top_k={self.top_k} exceeds the {tg * (self.n_experts // g)} experts of "
                                     f"router_topk_groups={tg} groups")
                if self.router_group_score == "top2_sum" and self.n_experts // g < 2:
                    raise ShapeError("router_group_score='top2_sum' needs at least 2 experts per group")
        if self.shared_expert_gate and not self.n_shared_experts:
            raise ShapeError("shared_expert_gate needs n_shared_experts >= 1")
        self._check_patterns()

    def _check_patterns(self) -> None:
        """Validate the layer-pattern and gpt-oss fields (``moe_layer_pattern``, sliding windows, llama3 RoPE)."""
        for name, letters in (("moe_layer_pattern", MOE_LAYER + DENSE_LAYER),
                              ("window_layer_pattern", SLIDING_LAYER + FULL_LAYER)):
            pattern = getattr(self, name)
            if pattern and (len(pattern) != self.n_layers or set(pattern) - set(letters)):
                raise ShapeError(f"{name} must have one letter of {'/'.join(letters)} per layer "
                                 f"({self.n_layers}), got {pattern!r}")
        if self.moe_layer_pattern:
            if not self.is_moe:
                raise ShapeError("n_experts=0 (dense model) but MoE fields are set: moe_layer_pattern")
            if self.first_dense_layers:
                raise ShapeError("set first_dense_layers or moe_layer_pattern, not both")
        if self.window_layer_pattern and not self.sliding_window:
            raise ShapeError("window_layer_pattern needs sliding_window >= 1")
        if self.qkv_bias and self.attention_bias:
            raise ShapeError("attention_bias already puts biases on q, k and v: set qkv_bias or attention_bias")
        if (self.attention_bias or self.attention_sinks or self.sliding_window) and self.attention == "mla":
            raise ShapeError("attention_bias, attention_sinks and sliding_window apply to attention 'mha'/'gqa'")
        if (self.expert_bias or self.router_bias) and not self.is_moe:
            raise ShapeError("n_experts=0 (dense model) but MoE fields are set: "
                             + ", ".join(k for k in ("expert_bias", "router_bias") if getattr(self, k)))
        if self.rope_scaling == "llama3" and (self.rope_factor < 1 or self.rope_original_max_len < 1
                                              or not self.rope_high_freq_factor > self.rope_low_freq_factor > 0):
            raise ShapeError("rope_scaling='llama3' needs rope_factor >= 1, rope_original_max_len >= 1 and "
                             "rope_high_freq_factor > rope_low_freq_factor > 0")

    # ----- derived sizes -------------------------------------------------------------------------
    @property
    def is_moe(self) -> bool:
        return self.n_experts > 0

    @property
    def n_moe_layers(self) -> int:
        """Blocks whose FFN is a mixture of experts."""
        if self.moe_layer_pattern:
            return self.moe_layer_pattern.count(MOE_LAYER) if self.is_moe else 0
        return self.n_layers - self.first_dense_layers if self.is_moe else 0

    @property
    def ffn_matrices(self) -> int:
        """Weight matrices in one FFN or expert: 2 for GELU, 3 for SwiGLU."""
        return 2 if self.ffn_kind == "gelu" else 3

    def is_moe_layer(self, index: int) -> bool:
        """Whether block ``index`` (0-based) has an MoE FFN. An index past the last layer (an MTP block) is
        an MoE layer when the last layer is."""
        if self.moe_layer_pattern:
            return self.is_moe and self.moe_layer_pattern[min(index, self.n_layers - 1)] == MOE_LAYER
        return self.is_moe and index >= self.first_dense_layers

    def attention_window(self, index: int) -> int:
        """Keys a query of block ``index`` sees at most (its own position included): ``sliding_window`` on
        a sliding layer, 0 (no limit) on a full-attention layer."""
        if not self.sliding_window:
            return 0
        if self.window_layer_pattern and self.window_layer_pattern[min(index, self.n_layers - 1)] != SLIDING_LAYER:
            return 0
        return self.sliding_window

    def replace(self, **changes: Any) -> "ModelShape":
        """A copy with some fields changed (validated again)."""
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "ModelShape":
        """Build from a mapping of field names; unknown keys are an error, naming the key."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise ShapeError(f"unknown shape field(s): {', '.join(unknown)}")
        missing = [n for n in ("vocab_size", "d_model", "n_layers", "n_heads", "seq_len") if n not in data]
        if missing:
            raise ShapeError(f"missing shape field(s): {', '.join(missing)}")
        return cls(**dict(data))
