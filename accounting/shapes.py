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

Validation reads the annotations (`field_rules`): ``int`` and ``float`` fields take numbers >= 0 (a float
field stores a float), ``bool`` true or false, ``str`` a string, ``T | None`` also None, ``Annotated[str,
CHOICES]`` one of CHOICES; a field without a default is a size >= 1. The rules that tie fields together
follow, by topic: RoPE, the derived defaults, attention heads, the FFN, MoE (with group-limited routing),
attention options (sliding windows, biases, sinks).
"""
from __future__ import annotations

import dataclasses
import functools
import typing
from dataclasses import dataclass, field
from typing import Annotated, Any, Mapping

FFN_KINDS = ("gelu", "swiglu", "swiglu_clamped")
NORM_KINDS = ("layernorm", "rmsnorm", "layernorm_nobias")
QK_NORMS = ("none", "head", "full")
ROPE_SCALINGS = ("none", "yarn", "llama3")
ROUTER_SCORINGS = ("softmax", "sigmoid")
GROUP_SCORES = ("max", "top2_sum")
ATTENTION_KINDS = ("mha", "gqa", "mla")
POSITION_KINDS = ("rope", "none")
MOE_LAYER, DENSE_LAYER = "M", "D"
SLIDING_LAYER, FULL_LAYER = "S", "F"


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
    ffn_kind: Annotated[str, FFN_KINDS] = "gelu"
    norm_kind: Annotated[str, NORM_KINDS] = "layernorm"
    position: Annotated[str, POSITION_KINDS] = "rope"
    tied_embeddings: bool = False
    attention: Annotated[str, ATTENTION_KINDS] = "mha"
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
    qk_norm: Annotated[str, QK_NORMS] = "none"
    clip_qkv: float | None = None
    rope_theta: float = 10000.0
    rope_scaling: Annotated[str, ROPE_SCALINGS] = "none"
    rope_factor: float = 1.0
    rope_original_max_len: int = 0
    rope_beta_fast: float = 32.0
    rope_beta_slow: float = 1.0
    rope_mscale: float = 0.0
    rope_mscale_all_dim: float = 0.0
    router_scoring: Annotated[str, ROUTER_SCORINGS] = "softmax"
    router_norm_topk: bool = True
    router_scale: float = 1.0
    router_groups: int = 0
    router_topk_groups: int = 0
    router_group_score: Annotated[str, GROUP_SCORES] = "max"
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
        """Check every field against its annotation, fill the derived defaults, then check the rules that tie
        fields together, topic by topic; the first broken rule raises `ShapeError` naming its field."""
        _check_annotations(self)
        _check_rope(self)
        _fill_defaults(self)
        _check_heads(self)
        _check_ffn(self)
        _check_moe(self)
        _check_attention_options(self)

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
        missing = [r.name for r in field_rules(cls) if r.required and r.name not in data]
        if missing:
            raise ShapeError(f"missing shape field(s): {', '.join(missing)}")
        return cls(**dict(data))


# ----- the fields, checked against their annotations ----------------------------------------------------
@dataclass(frozen=True)
class FieldRule:
    """What a field's annotation allows: ``kind`` (int, float, bool or str), None when annotated ``T | None``
    (``nullable``), choices when annotated ``Annotated[str, choices]``; a field without a default
    (``required``) is a size that must be >= 1."""

    name: str
    kind: type
    nullable: bool
    required: bool
    choices: tuple | None


def split_optional(tp: Any) -> tuple[Any, bool]:
    """``(T, True)`` for ``T | None``, else ``(tp, False)``."""
    args = typing.get_args(tp)
    if type(None) in args and len(args) == 2:
        return next(a for a in args if a is not type(None)), True
    return tp, False


@functools.cache
def field_rules(cls: type) -> tuple[FieldRule, ...]:
    """One `FieldRule` per field of the dataclass ``cls``, in field order, read from its annotations."""
    hints, rules = typing.get_type_hints(cls, include_extras=True), []
    for f in dataclasses.fields(cls):
        tp, nullable = split_optional(hints[f.name])
        choices = None
        if typing.get_origin(tp) is Annotated:
            tp, choices = typing.get_args(tp)
        if tp not in (int, float, bool, str):
            raise TypeError(f"{cls.__name__}.{f.name}: no check for annotation {tp!r}")
        required = f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        rules.append(FieldRule(f.name, tp, nullable, required, choices))
    return tuple(rules)


def _check_type(shape: ModelShape, rule: FieldRule) -> None:
    """One field's value against its annotation; a float field's int value becomes a float."""
    value = getattr(shape, rule.name)
    if value is None and rule.nullable:
        return
    if rule.kind is str and not isinstance(value, str):
        raise ShapeError(f"{rule.name} must be a string, got {value!r}")
    if rule.kind is bool and not isinstance(value, bool):
        raise ShapeError(f"{rule.name} must be true or false, got {value!r}")
    if rule.kind is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0:
            raise ShapeError(f"{rule.name} must be a number >= 0, got {value!r}")
        object.__setattr__(shape, rule.name, float(value))
    if rule.kind is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ShapeError(f"{rule.name} must be an integer, got {value!r}")
        if value < 0:
            raise ShapeError(f"{rule.name} must be >= 0, got {value}")


def _check_annotations(shape: ModelShape) -> None:
    """Every field's type (numbers >= 0), then the sizes without a default >= 1, then the choices."""
    rules = field_rules(type(shape))
    for rule in rules:
        _check_type(shape, rule)
    for rule in rules:
        if rule.required and getattr(shape, rule.name) < 1:
            raise ShapeError(f"{rule.name} must be >= 1, got {getattr(shape, rule.name)}")
    for rule in rules:
        if rule.choices is not None and getattr(shape, rule.name) not in rule.choices:
            raise ShapeError(f"{rule.name} must be one of {rule.choices}, got {getattr(shape, rule.name)!r}")


# ----- the rules that tie fields together, by topic ----------------------------------------------------
def _check_rope(shape: ModelShape) -> None:
    """RoPE's base and scaling (YaRN, Llama 3); ``router_scale`` shares the base's > 0 rule and message."""
    if shape.rope_theta <= 0 or shape.router_scale <= 0:
        raise ShapeError(f"rope_theta and router_scale must be > 0, got {shape.rope_theta} and "
                         f"{shape.router_scale}")
    if shape.rope_scaling == "yarn" and (shape.rope_factor < 1 or shape.rope_original_max_len < 1):
        raise ShapeError("rope_scaling='yarn' needs rope_factor >= 1 and rope_original_max_len >= 1")
    if shape.rope_scaling == "llama3" and (shape.rope_factor < 1 or shape.rope_original_max_len < 1 or not
                                           shape.rope_high_freq_factor > shape.rope_low_freq_factor > 0):
        raise ShapeError("rope_scaling='llama3' needs rope_factor >= 1, rope_original_max_len >= 1 and "
                         "rope_high_freq_factor > rope_low_freq_factor > 0")


def _fill_defaults(shape: ModelShape) -> None:
    """The sizes left None: KV heads = heads, head_dim = d_model / heads, d_ff = 4 d_model, expert widths
    = d_ff (set on the frozen instance)."""
    def set_(name: str, value: int) -> None:
        object.__setattr__(shape, name, value)

    if shape.n_kv_heads is None:
        set_("n_kv_heads", shape.n_heads)
    if shape.head_dim is None:
        if shape.attention != "mla" and shape.d_model % shape.n_heads:
            raise ShapeError(f"d_model={shape.d_model} is not divisible by n_heads={shape.n_heads}; "
                             "set head_dim explicitly or change one of them")
        set_("head_dim", shape.d_model // shape.n_heads)
    if shape.d_ff is None:
        set_("d_ff", 4 * shape.d_model)
    if shape.d_expert is None:
        set_("d_expert", shape.d_ff)
    if shape.d_shared_expert is None:
        set_("d_shared_expert", shape.d_expert)


def _check_pattern(shape: ModelShape, name: str, letters: str) -> None:
    """A layer pattern: empty, or one of ``letters`` per layer."""
    pattern = getattr(shape, name)
    if pattern and (len(pattern) != shape.n_layers or set(pattern) - set(letters)):
        raise ShapeError(f"{name} must have one letter of {'/'.join(letters)} per layer "
                         f"({shape.n_layers}), got {pattern!r}")


def _check_heads(shape: ModelShape) -> None:
    """Attention's heads: q/k norms, KV heads (MHA/GQA), head_dim, MLA's ranks."""
    if shape.qk_norm != "none" and shape.attention == "mla":
        raise ShapeError("qk_norm applies to attention 'mha'/'gqa' (MLA has its own latent norms)")
    if shape.attention == "mha" and shape.n_kv_heads != shape.n_heads:
        raise ShapeError(f"attention='mha' needs n_kv_heads == n_heads; got {shape.n_kv_heads} "
                         f"and {shape.n_heads} (use attention='gqa')")
    if shape.attention == "gqa" and (shape.n_kv_heads < 1 or shape.n_heads % shape.n_kv_heads):
        raise ShapeError(f"n_heads={shape.n_heads} must be a multiple of n_kv_heads={shape.n_kv_heads}")
    if shape.attention in ("mha", "gqa") and shape.head_dim < 1:
        raise ShapeError("head_dim must be >= 1")
    if shape.attention == "mla":
        for name in ("kv_lora_rank", "qk_nope_head_dim", "v_head_dim"):
            if getattr(shape, name) < 1:
                raise ShapeError(f"attention='mla' needs {name} >= 1")


def _check_attention_options(shape: ModelShape) -> None:
    """Sliding windows (and which layers have one), attention biases and sinks: MHA/GQA only."""
    _check_pattern(shape, "window_layer_pattern", SLIDING_LAYER + FULL_LAYER)
    if shape.window_layer_pattern and not shape.sliding_window:
        raise ShapeError("window_layer_pattern needs sliding_window >= 1")
    if shape.qkv_bias and shape.attention_bias:
        raise ShapeError("attention_bias already puts biases on q, k and v: set qkv_bias or attention_bias")
    if (shape.attention_bias or shape.attention_sinks or shape.sliding_window) and shape.attention == "mla":
        raise ShapeError("attention_bias, attention_sinks and sliding_window apply to attention 'mha'/'gqa'")


def _check_ffn(shape: ModelShape) -> None:
    """The dense FFN's width (also the default expert width)."""
    if shape.d_ff < 1:
        raise ShapeError("d_ff must be >= 1")


def _check_moe(shape: ModelShape) -> None:
    """Experts and top-k, dense-prefix layers or the layer pattern, shared experts and their gate, expert
    and router biases; a dense shape (``n_experts == 0``) sets none of them."""
    if not shape.is_moe:
        set_fields = [k for k in ("top_k", "n_shared_experts", "first_dense_layers") if getattr(shape, k)]
        if set_fields:
            raise ShapeError(f"n_experts=0 (dense model) but MoE fields are set: {', '.join(set_fields)}")
    else:
        if shape.top_k < 1:
            raise ShapeError(f"an MoE shape needs top_k >= 1 (n_experts={shape.n_experts})")
        if shape.top_k > shape.n_experts:
            raise ShapeError(f"top_k={shape.top_k} exceeds n_experts={shape.n_experts}")
        if shape.d_expert < 1:
            raise ShapeError("d_expert must be >= 1")
        if shape.first_dense_layers > shape.n_layers:
            raise ShapeError(f"first_dense_layers={shape.first_dense_layers} exceeds "
                             f"n_layers={shape.n_layers}")
        _check_router_groups(shape)
    if shape.shared_expert_gate and not shape.n_shared_experts:
        raise ShapeError("shared_expert_gate needs n_shared_experts >= 1")
    _check_pattern(shape, "moe_layer_pattern", MOE_LAYER + DENSE_LAYER)
    if shape.moe_layer_pattern:
        if not shape.is_moe:
            raise ShapeError("n_experts=0 (dense model) but MoE fields are set: moe_layer_pattern")
        if shape.first_dense_layers:
            raise ShapeError("set first_dense_layers or moe_layer_pattern, not both")
    if (shape.expert_bias or shape.router_bias) and not shape.is_moe:
        raise ShapeError("n_experts=0 (dense model) but MoE fields are set: "
                         + ", ".join(k for k in ("expert_bias", "router_bias") if getattr(shape, k)))


def _check_router_groups(shape: ModelShape) -> None:
    """Group-limited routing: ``router_groups`` equal groups of experts, ``router_topk_groups`` of them
    eligible, enough experts in them for ``top_k``."""
    g, tg = shape.router_groups, shape.router_topk_groups
    if bool(g) != bool(tg):
        raise ShapeError("router_groups and router_topk_groups must both be 0 or both >= 1")
    if not g:
        return
    if shape.n_experts % g or tg > g:
        raise ShapeError(f"router_groups={g} must divide n_experts={shape.n_experts} and be >= "
                         f"router_topk_groups={tg}")
    if shape.top_k > tg * (shape.n_experts // g):
        raise ShapeError(f"top_k={shape.top_k} exceeds the {tg * (shape.n_experts // g)} experts of "
                         f"router_topk_groups={tg} groups")
    if shape.router_group_score == "top2_sum" and shape.n_experts // g < 2:
        raise ShapeError("router_group_score='top2_sum' needs at least 2 experts per group")
