"""Load a Hugging Face style ``config.json`` into a `ModelShape`.

Supported (keyed on ``model_type``, else on ``architectures``): Llama, Mistral, Qwen2/Qwen3 (dense),
Mixtral, Qwen2-MoE (Qwen1.5-MoE, Qwen2-57B-A14B), Qwen3-MoE, OLMoE, DBRX (nested ``ffn_config`` /
``attn_config``), DeepSeek-V2 / V2-Lite / V3, gpt-oss, Llama 4 (``llama4_text``, or ``llama4``'s
``text_config``; priced, not built by ``moe.from_hf``). An unknown architecture raises ``ValueError`` naming it.
Each family is one function in ``FAMILIES`` (``model_type`` -> shape fields), the keys of ``moe.hf_layout``'s.

Where the MoE layers are follows transformers: Qwen's ``mlp_only_layers`` and ``decoder_sparse_step``,
Llama 4's ``moe_layers`` / ``interleave_moe_layer_step``, DeepSeek's ``first_k_dense_replace``. A placement that
is "every layer from k on" becomes ``first_dense_layers=k``, any other a ``moe_layer_pattern`` (``moe_placement``).
gpt-oss brings attention sinks, q/k/v/o biases, sliding-window layers (``layer_types``), the clamped SwiGLU,
expert and router biases and YaRN without truncation; Llama-3.1 its ``llama3`` RoPE scaling.

Besides the sizes, the loader carries what a model built from the shape needs to compute what the
original computes: Qwen2-MoE's q/k/v biases and sigmoid-gated shared expert, the q/k norms of OLMoE
(full width) and Qwen3 (per head), DBRX's bias-free LayerNorm and ``clip_qkv`` (OLMoE's too), the norm
eps, the RoPE base and YaRN scaling (DeepSeek-V3), and the routing function: ``scoring_func``,
``norm_topk_prob``, ``routed_scaling_factor``, DeepSeek's group-limited routing (``n_group``,
``topk_group``; V2 ``group_limited_greedy`` scores a group by its best expert, V3 ``noaux_tc`` by its two
best biased scores) and V3's ``e_score_correction_bias`` (a buffer, not a parameter). Parameter totals then
equal transformers' own modules exactly. RoPE types other than default/yarn/llama3 (e.g. linear, dynamic)
do not change counts; they load here for pricing, and ``moe.from_hf`` refuses them.

``seq_len`` defaults to ``max_position_embeddings`` (DBRX: ``max_seq_len``); pass ``seq_len=`` to price
a training window instead (e.g. 4096 for DeepSeek-V3's pretraining).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable, Mapping

from .shapes import ModelShape

CONFIG_DIR = Path(__file__).resolve().parent / "configs"

ARCHITECTURES = {
    "LlamaForCausalLM": "llama", "MistralForCausalLM": "mistral", "Qwen2ForCausalLM": "qwen2",
    "Qwen3ForCausalLM": "qwen3", "MixtralForCausalLM": "mixtral", "Qwen2MoeForCausalLM": "qwen2_moe",
    "Qwen3MoeForCausalLM": "qwen3_moe", "OlmoeForCausalLM": "olmoe", "DbrxForCausalLM": "dbrx",
    "DeepseekV2ForCausalLM": "deepseek_v2", "DeepseekV3ForCausalLM": "deepseek_v3",
    "GptOssForCausalLM": "gpt_oss", "Llama4ForCausalLM": "llama4_text", "Llama4ForConditionalGeneration": "llama4",
}

PUBLISHED_COUNTS: dict[str, dict[str, Any]] = {
    # name: published total / active parameters, with the source. Tolerances are in the tests/docs.
    "deepseek-v3": {"total": 671e9, "active": 37e9,
                    "source": "DeepSeek-V3 technical report (arXiv 2412.19437): 671B total, 37B activated"},
    "deepseek-v2-lite": {"total": 15.7e9, "active": 2.4e9,
                         "source": "DeepSeek-V2 report / model card: 15.7B total, 2.4B activated"},
    "mixtral-8x7b": {"total": 46.7e9, "active": 12.9e9,
                     "source": "Mistral AI, 'Mixtral of experts' (Dec 2023): 46.7B total, 12.9B per token"},
    "qwen1.5-moe-a2.7b": {"total": 14.3e9, "active": 2.7e9,
                          "source": "Qwen blog 'Qwen1.5-MoE' (Mar 2024): 14.3B total, 2.7B activated"},
    "olmoe-1b-7b": {"total": 6.9e9, "active": 1.3e9,
                    "source": "OLMoE paper (arXiv 2409.02060): 6.9B total, 1.3B active"},
    "dbrx": {"total": 132e9, "active": 36e9,
             "source": "Databricks 'Introducing DBRX' (Mar 2024): 132B total, 36B active"},
    "llama-3-8b": {"total": 8.03e9, "active": 8.03e9,
                   "source": "meta-llama/Meta-Llama-3-8B model page: 8.03B parameters"},
    "qwen3-30b-a3b": {"total": 30.5e9, "active": 3.3e9,
                      "source": "Qwen/Qwen3-30B-A3B model card: 30.5B total, 3.3B activated"},
    "gpt-oss-20b": {"total": 21e9, "active": 3.6e9,
                    "source": "openai/gpt-oss-20b model card (Aug 2025): 21B parameters, 3.6B active"},
    "gpt-oss-120b": {"total": 117e9, "active": 5.1e9,
                     "source": "openai/gpt-oss-120b model card (Aug 2025): 117B parameters, 5.1B active"},
}


def _get(cfg: Mapping[str, Any], key: str, default: Any = ...) -> Any:
    """``cfg[key]``; a missing required key is a ValueError naming it."""
    if key in cfg and cfg[key] is not None:
        return cfg[key]
    if default is ...:
        raise ValueError(f"config has no {key!r}")
    return default


def _experts(cfg: Mapping[str, Any], keys: tuple[str, ...]) -> int:
    """The routed-expert count under the first of ``keys`` present (transformers 5 writes
    ``num_local_experts`` where 4.x wrote ``num_experts``)."""
    for key in keys:
        if cfg.get(key) is not None:
            return cfg[key]
    raise ValueError(f"config has no {keys[0]!r}")


def model_type_of(cfg: Mapping[str, Any]) -> str:
    """The supported ``model_type`` this config describes; ValueError naming it when unsupported."""
    mt = cfg.get("model_type")
    if mt in MODEL_TYPES:
        return mt
    archs = cfg.get("architectures") or []
    for arch in archs if isinstance(archs, list) else [archs]:
        if arch in ARCHITECTURES:
            return ARCHITECTURES[arch]
    named = mt or (archs[0] if isinstance(archs, list) and archs else archs) or "<none given>"
    raise ValueError(f"unsupported architecture {named!r} (model_type={mt!r}, architectures={archs!r}); "
                     f"supported model_type: {', '.join(MODEL_TYPES)}")


def rope_settings(cfg: Mapping[str, Any], theta_default: float = 10000.0) -> dict[str, Any]:
    """``rope_theta`` and the YaRN or Llama-3.1 (``llama3``) fields from a config's ``rope_theta``/``rope_scaling``
    (transformers 4.x) or ``rope_parameters`` (5.x). Other scaling types leave ``rope_scaling='none'`` (they
    do not change counts; ``moe.from_hf`` refuses them, see ``rope_type_of``)."""
    params = cfg.get("rope_parameters") if isinstance(cfg.get("rope_parameters"), Mapping) else {}
    scaling = cfg.get("rope_scaling") if isinstance(cfg.get("rope_scaling"), Mapping) else {}
    out: dict[str, Any] = {"rope_theta": float(params.get("rope_theta") or cfg.get("rope_theta") or theta_default)}
    sc = {**scaling, **params}
    if rope_type_of(cfg) == "llama3":
        missing = [k for k in ("factor", "low_freq_factor", "high_freq_factor", "original_max_position_embeddings")
                   if sc.get(k) is None]
        if missing:
            raise ValueError(f"rope_scaling type 'llama3' needs {', '.join(missing)}")
        out.update(rope_scaling="llama3", rope_factor=float(sc["factor"]),
                   rope_low_freq_factor=float(sc["low_freq_factor"]),
                   rope_high_freq_factor=float(sc["high_freq_factor"]),
                   rope_original_max_len=int(sc["original_max_position_embeddings"]))
    if rope_type_of(cfg) == "yarn":
        mpe = cfg.get("max_position_embeddings")
        orig = sc.get("original_max_position_embeddings")
        factor = sc.get("factor") or (mpe / orig if mpe and orig else None)
        if factor is None or orig is None:
            raise ValueError("rope_scaling type 'yarn' needs factor and original_max_position_embeddings")
        out.update(rope_scaling="yarn", rope_factor=float(factor), rope_original_max_len=int(orig),
                   rope_beta_fast=float(sc.get("beta_fast") or 32), rope_beta_slow=float(sc.get("beta_slow") or 1),
                   rope_mscale=float(sc.get("mscale") or 0), rope_mscale_all_dim=float(sc.get("mscale_all_dim") or 0))
        if sc.get("attention_factor") is not None:
            raise ValueError("rope_scaling: an explicit yarn attention_factor is not supported")
        if sc.get("truncate") is False:  # gpt-oss: the ramp's ends stay fractional
            out["rope_truncate"] = False
    return out


def rope_type_of(cfg: Mapping[str, Any]) -> str:
    """The RoPE scaling type a config asks for: ``default``, ``yarn``, or another name (e.g. ``llama3``)."""
    for key in ("rope_parameters", "rope_scaling"):
        sc = cfg.get(key)
        if isinstance(sc, Mapping):
            kind = sc.get("rope_type") or sc.get("type")
            if kind:
                return str(kind)
    return "default"


def _no_extra_biases(cfg: Mapping[str, Any], mt: str) -> None:
    """Attention/MLP biases beyond Qwen's q/k/v, Llama's and gpt-oss's q/k/v/o ones are not modelled."""
    for key in ("attention_bias", "mlp_bias"):
        if cfg.get(key):
            raise ValueError(f"{mt}: {key}=true is not modelled (only Qwen's q/k/v and Llama's and gpt-oss's "
                             "q/k/v/o attention biases are)")


def _dense_common(cfg: Mapping[str, Any], seq_len: int | None) -> dict[str, Any]:
    """Fields shared by the Llama-family configs (SwiGLU, RMSNorm, RoPE, GQA/MHA)."""
    heads = _get(cfg, "num_attention_heads")
    kv = _get(cfg, "num_key_value_heads", heads)
    out = {
        "vocab_size": _get(cfg, "vocab_size"), "d_model": _get(cfg, "hidden_size"),
        "n_layers": _get(cfg, "num_hidden_layers"), "n_heads": heads, "n_kv_heads": kv,
        "seq_len": seq_len if seq_len is not None else _get(cfg, "max_position_embeddings"),
        "d_ff": _get(cfg, "intermediate_size"), "ffn_kind": "swiglu", "norm_kind": "rmsnorm",
        "position": "rope", "tied_embeddings": bool(_get(cfg, "tie_word_embeddings", False)),
        "attention": "mha" if kv == heads else "gqa",
    }
    if cfg.get("head_dim") is not None:
        out["head_dim"] = cfg["head_dim"]
    if cfg.get("rms_norm_eps") is not None:
        out["norm_eps"] = float(cfg["rms_norm_eps"])
    out.update(rope_settings(cfg))
    return out


def moe_placement(is_moe: list[bool]) -> dict[str, Any]:
    """Shape fields for MoE layers at the flagged positions: ``first_dense_layers=k`` when they are every
    layer from k on (so such a config prices exactly as the prefix rule), else ``moe_layer_pattern``."""
    k = next((i for i, m in enumerate(is_moe) if m), len(is_moe))
    if all(is_moe[k:]):
        return {"first_dense_layers": k}
    return {"moe_layer_pattern": "".join("M" if m else "D" for m in is_moe)}


def _qwen_moe_layers(cfg: Mapping[str, Any], name: str) -> list[bool]:
    """Qwen2/3-MoE placement, as transformers builds it: layer i is MoE unless listed in ``mlp_only_layers``,
    and only when ``(i + 1) % decoder_sparse_step == 0``."""
    n = _get(cfg, "num_hidden_layers")
    step = _get(cfg, "decoder_sparse_step", 1)
    only = cfg.get("mlp_only_layers") or []
    if isinstance(step, bool) or not isinstance(step, int) or step < 1:
        raise ValueError(f"{name}: decoder_sparse_step must be an integer >= 1, got {step!r}")
    if not isinstance(only, list) or any(isinstance(i, bool) or not isinstance(i, int) or not 0 <= i < n
                                         for i in only):
        raise ValueError(f"{name}: mlp_only_layers must list layer indices in 0..{n - 1}, got {only!r}")
    return [i not in only and (i + 1) % step == 0 for i in range(n)]


def _window_layers(cfg: Mapping[str, Any], name: str) -> dict[str, Any]:
    """gpt-oss's attention layout: ``sliding_window`` W and transformers' ``layer_types`` (default: even
    layers sliding, odd ones full) as ``window_layer_pattern``."""
    n = _get(cfg, "num_hidden_layers")
    kinds = cfg.get("layer_types") or ["sliding_attention" if i % 2 == 0 else "full_attention" for i in range(n)]
    letters = {"sliding_attention": "S", "full_attention": "F"}
    unknown = sorted({k for k in kinds if k not in letters})
    if unknown or len(kinds) != n:
        raise ValueError(f"{name}: layer_types must list {n} of sliding_attention/full_attention"
                         + (f" (unsupported: {', '.join(map(str, unknown))})" if unknown else ""))
    window = cfg.get("sliding_window") or 0
    if not window or "S" not in "".join(letters[k] for k in kinds):
        return {}
    return {"sliding_window": int(window), "window_layer_pattern": "".join(letters[k] for k in kinds)}


# ----- one function per family: ``(cfg, seq_len) -> ModelShape fields`` ---------------------------------------
def _llama(cfg: Mapping[str, Any], seq_len: int | None) -> dict[str, Any]:
    """Llama: its ``attention_bias`` puts biases on q, k, v and o (modelled); Llama-3.1's ``llama3`` RoPE."""
    _no_extra_biases({k: v for k, v in cfg.items() if k != "attention_bias"}, "llama")
    f = _dense_common(cfg, seq_len)
    if cfg.get("attention_bias"):
        f["attention_bias"] = True
    return f


def _mistral(cfg: Mapping[str, Any], seq_len: int | None) -> dict[str, Any]:
    """Mistral: the Llama fields, no biases (its sliding window is ``moe.from_hf``'s context limit)."""
    _no_extra_biases(cfg, "mistral")
    return _dense_common(cfg, seq_len)


def _qwen2(cfg: Mapping[str, Any], seq_len: int | None) -> dict[str, Any]:
    """Qwen2 (dense): biases on q, k and v."""
    return {**_dense_common(cfg, seq_len), "qkv_bias": True}


def _qwen3(cfg: Mapping[str, Any], seq_len: int | None) -> dict[str, Any]:
    """Qwen3 (dense): a per-head RMSNorm on q and k, no biases."""
    _no_extra_biases(cfg, "qwen3")
    return {**_dense_common(cfg, seq_len), "qk_norm": "head"}


def _routed(cfg: Mapping[str, Any], seq_len: int | None, expert_keys: tuple[str, ...]) -> dict[str, Any]:
    """The Llama fields plus routed experts as wide as ``intermediate_size`` in every layer (Mixtral, OLMoE,
    gpt-oss); the expert count under the first of ``expert_keys`` present."""
    f = _dense_common(cfg, seq_len)
    f.update(n_experts=_experts(cfg, expert_keys), top_k=_get(cfg, "num_experts_per_tok"), d_expert=f["d_ff"])
    return f


def _mixtral(cfg: Mapping[str, Any], seq_len: int | None) -> dict[str, Any]:
    """Mixtral: every layer MoE, softmax top-k renormalised (the shape's default routing)."""
    _no_extra_biases(cfg, "mixtral")
    return _routed(cfg, seq_len, ("num_local_experts", "num_experts"))


def _olmoe(cfg: Mapping[str, Any], seq_len: int | None) -> dict[str, Any]:
    """OLMoE: a full-width RMSNorm on q and k, ``norm_topk_prob`` and ``clip_qkv``."""
    _no_extra_biases(cfg, "olmoe")
    f = _routed(cfg, seq_len, ("num_experts", "num_local_experts"))
    f.update(qk_norm="full", router_norm_topk=bool(_get(cfg, "norm_topk_prob", False)))
    if cfg.get("clip_qkv") is not None:
        f["clip_qkv"] = float(cfg["clip_qkv"])
    return f


def _qwen_moe(cfg: Mapping[str, Any], seq_len: int | None, placement: list[bool]) -> dict[str, Any]:
    """Fields shared by Qwen2-MoE and Qwen3-MoE: experts ``moe_intermediate_size`` wide at ``placement``."""
    f = _dense_common(cfg, seq_len)
    f.update(n_experts=_experts(cfg, ("num_experts", "num_local_experts")),
             top_k=_get(cfg, "num_experts_per_tok"), d_expert=_get(cfg, "moe_intermediate_size"),
             router_norm_topk=bool(_get(cfg, "norm_topk_prob", False)), **moe_placement(placement))
    return f


def _qwen2_moe(cfg: Mapping[str, Any], seq_len: int | None) -> dict[str, Any]:
    """Qwen2-MoE (Qwen1.5-MoE, Qwen2-57B-A14B): q/k/v biases and one sigmoid-gated shared expert."""
    f = _qwen_moe(cfg, seq_len, _qwen_moe_layers(cfg, "qwen2_moe"))
    shared = _get(cfg, "shared_expert_intermediate_size", 0)
    if shared:
        f.update(n_shared_experts=1, d_shared_expert=shared, shared_expert_gate=True)
    f["qkv_bias"] = bool(_get(cfg, "qkv_bias", True))
    return f


def _qwen3_moe(cfg: Mapping[str, Any], seq_len: int | None) -> dict[str, Any]:
    """Qwen3-MoE: a per-head RMSNorm on q and k, no biases, no shared expert."""
    placement = _qwen_moe_layers(cfg, "qwen3_moe")
    _no_extra_biases(cfg, "qwen3_moe")
    return {**_qwen_moe(cfg, seq_len, placement), "qk_norm": "head"}


def _gpt_oss(cfg: Mapping[str, Any], seq_len: int | None) -> dict[str, Any]:
    """gpt-oss: sinks, q/k/v/o biases, sliding-window layers, the clamped SwiGLU, biased experts and router."""
    f = _routed(cfg, seq_len, ("num_local_experts", "num_experts"))
    f.update(ffn_kind="swiglu_clamped", swiglu_alpha=float(_get(cfg, "swiglu_alpha", 1.702)),
             swiglu_limit=float(_get(cfg, "swiglu_limit", 7.0)),
             attention_bias=bool(_get(cfg, "attention_bias", True)), attention_sinks=True, expert_bias=True,
             # top-k of the logits, softmax over the k chosen == softmax over all, renormalised over the k
             router_bias=True, router_scoring="softmax", router_norm_topk=True, **_window_layers(cfg, "gpt_oss"))
    act = _get(cfg, "hidden_act", "silu")
    if act != "silu":
        raise ValueError(f"gpt_oss: hidden_act={act!r} is not modelled (only silu, the clamped SwiGLU)")
    return f


def _llama4_text(cfg: Mapping[str, Any], seq_len: int | None) -> dict[str, Any]:
    """Llama 4's language model: MoE at ``moe_layers`` (or every ``interleave_moe_layer_step``-th layer)."""
    f = _dense_common(cfg, seq_len)
    n = f["n_layers"]
    step = _get(cfg, "interleave_moe_layer_step", 1)
    moe_layers = cfg.get("moe_layers")
    if moe_layers is None:
        moe_layers = list(range(step - 1, n, step))
    if not isinstance(moe_layers, list) or any(not isinstance(i, int) or not 0 <= i < n for i in moe_layers):
        raise ValueError(f"llama4_text: moe_layers must list layer indices in 0..{n - 1}, got {moe_layers!r}")
    width = _get(cfg, "intermediate_size")
    # dense layers use intermediate_size_mlp; experts and the one shared expert intermediate_size. The
    # L2 q/k norm has no weights; chunked attention, NoPE layers and temperature tuning change no count.
    f.update(d_ff=_get(cfg, "intermediate_size_mlp"), n_experts=_get(cfg, "num_local_experts"),
             top_k=_get(cfg, "num_experts_per_tok"), d_expert=width, n_shared_experts=1, d_shared_expert=width,
             router_scoring="sigmoid", router_norm_topk=False, attention_bias=bool(cfg.get("attention_bias")),
             **moe_placement([i in moe_layers for i in range(n)]))
    return f


def _llama4(cfg: Mapping[str, Any], seq_len: int | None) -> dict[str, Any]:
    """The multimodal wrapper: its language model (``text_config``) is priced, the vision tower is not."""
    text = cfg.get("text_config")
    if not isinstance(text, Mapping):
        raise ValueError("llama4: no text_config object (the language model's config)")
    return _llama4_text({**text, "model_type": "llama4_text"}, seq_len)


def _dbrx(cfg: Mapping[str, Any], seq_len: int | None) -> dict[str, Any]:
    """DBRX: sizes in the nested ``ffn_config`` / ``attn_config``, bias-free LayerNorm, ``clip_qkv``."""
    ffn, attn = _get(cfg, "ffn_config"), _get(cfg, "attn_config")
    if not isinstance(ffn, Mapping) or not isinstance(attn, Mapping):
        raise ValueError("dbrx: ffn_config and attn_config must be objects")
    heads = _get(cfg, "n_heads")
    kv = _get(attn, "kv_n_heads", heads)
    act = ffn.get("ffn_act_fn", {"name": "silu"})
    act = act.get("name", "silu") if isinstance(act, Mapping) else act
    f = {"vocab_size": _get(cfg, "vocab_size"), "d_model": _get(cfg, "d_model"),
         "n_layers": _get(cfg, "n_layers"), "n_heads": heads, "n_kv_heads": kv,
         "seq_len": seq_len if seq_len is not None else _get(cfg, "max_seq_len"),
         "d_ff": _get(ffn, "ffn_hidden_size"), "ffn_kind": "swiglu" if act == "silu" else "gelu",
         "norm_kind": "layernorm_nobias", "norm_eps": 1e-5,  # nn.LayerNorm(d, bias=False)
         "position": "rope", "tied_embeddings": bool(_get(cfg, "tie_word_embeddings", False)),
         "attention": "mha" if kv == heads else "gqa",
         "n_experts": _get(ffn, "moe_num_experts"), "top_k": _get(ffn, "moe_top_k"),
         # transformers 5 reads the top-level rope_parameters; older configs keep it in attn_config
         "rope_theta": float((cfg.get("rope_parameters") or {}).get("rope_theta")
                             or _get(attn, "rope_theta", 10000.0))}
    f["d_expert"] = f["d_ff"]
    if attn.get("clip_qkv") is not None:
        f["clip_qkv"] = float(attn["clip_qkv"])
    p = ffn.get("moe_normalize_expert_weights", 1)
    if p not in (None, 1, 1.0):
        raise ValueError(f"dbrx: moe_normalize_expert_weights={p!r} is not modelled (only 1 or null)")
    f["router_norm_topk"] = p is not None
    return f


def _deepseek(cfg: Mapping[str, Any], seq_len: int | None, mt: str) -> dict[str, Any]:
    """Fields shared by DeepSeek-V2 and V3: multi-head latent attention, routed and shared experts from layer
    ``first_k_dense_replace`` on, ``routed_scaling_factor``, the multi-token-prediction modules."""
    freq = cfg.get("moe_layer_freq", 1)
    if freq != 1:
        raise ValueError(f"{mt}: moe_layer_freq={freq!r} is not representable (only 1)")
    f = {"vocab_size": _get(cfg, "vocab_size"), "d_model": _get(cfg, "hidden_size"),
         "n_layers": _get(cfg, "num_hidden_layers"), "n_heads": _get(cfg, "num_attention_heads"),
         "seq_len": seq_len if seq_len is not None else _get(cfg, "max_position_embeddings"),
         "d_ff": _get(cfg, "intermediate_size"), "ffn_kind": "swiglu", "norm_kind": "rmsnorm",
         "position": "rope", "tied_embeddings": bool(_get(cfg, "tie_word_embeddings", False)),
         "attention": "mla", "q_lora_rank": _get(cfg, "q_lora_rank", 0),
         "kv_lora_rank": _get(cfg, "kv_lora_rank"), "qk_nope_head_dim": _get(cfg, "qk_nope_head_dim"),
         "qk_rope_head_dim": _get(cfg, "qk_rope_head_dim"), "v_head_dim": _get(cfg, "v_head_dim"),
         "norm_eps": float(_get(cfg, "rms_norm_eps", 1e-6))}
    if cfg.get("attention_bias"):
        raise ValueError(f"{mt}: attention_bias=true is not modelled")
    f.update(rope_settings(cfg))
    experts = _get(cfg, "n_routed_experts", 0)
    if experts:
        moe_width = _get(cfg, "moe_intermediate_size")
        f.update(n_experts=experts, top_k=_get(cfg, "num_experts_per_tok"),
                 n_shared_experts=_get(cfg, "n_shared_experts", 0), d_expert=moe_width,
                 d_shared_expert=moe_width, first_dense_layers=_get(cfg, "first_k_dense_replace", 0),
                 router_scale=float(_get(cfg, "routed_scaling_factor", 1.0)))
    f["mtp_modules"] = _get(cfg, "num_nextn_predict_layers", 0)
    return f


def _deepseek_v2(cfg: Mapping[str, Any], seq_len: int | None) -> dict[str, Any]:
    """DeepSeek-V2 / V2-Lite: softmax router, ``greedy`` or ``group_limited_greedy`` (a group scores its best
    expert)."""
    f = _deepseek(cfg, seq_len, "deepseek_v2")
    if f.get("n_experts"):
        method = _get(cfg, "topk_method", "greedy")
        if method not in ("greedy", "group_limited_greedy"):
            raise ValueError(f"deepseek_v2: topk_method={method!r} is not modelled")
        f.update(router_scoring="softmax", router_norm_topk=bool(_get(cfg, "norm_topk_prob", False)))
        if method == "group_limited_greedy":
            f.update(router_groups=_get(cfg, "n_group"), router_topk_groups=_get(cfg, "topk_group"),
                     router_group_score="max")
    return f


def _deepseek_v3(cfg: Mapping[str, Any], seq_len: int | None) -> dict[str, Any]:
    """DeepSeek-V3: transformers' router, sigmoid scores, ``noaux_tc`` groups (a group scores its two best
    biased scores) and the ``e_score_correction_bias``."""
    f = _deepseek(cfg, seq_len, "deepseek_v3")
    if f.get("n_experts"):
        scoring = _get(cfg, "scoring_func", "sigmoid")
        if scoring != "sigmoid":
            raise ValueError(f"deepseek_v3: scoring_func={scoring!r} is not modelled (only sigmoid)")
        f.update(router_scoring="sigmoid", router_norm_topk=bool(_get(cfg, "norm_topk_prob", True)),
                 router_groups=_get(cfg, "n_group", 1), router_topk_groups=_get(cfg, "topk_group", 1),
                 router_group_score="top2_sum", router_score_bias=True)
    return f


FAMILIES: dict[str, Callable[[Mapping[str, Any], int | None], dict[str, Any]]] = {
    # transformers model_type -> the ModelShape fields of its config (moe.hf_layout.FAMILIES has the same keys)
    "llama": _llama, "mistral": _mistral, "qwen2": _qwen2, "qwen3": _qwen3, "mixtral": _mixtral,
    "qwen2_moe": _qwen2_moe, "qwen3_moe": _qwen3_moe, "olmoe": _olmoe, "dbrx": _dbrx,
    "deepseek_v2": _deepseek_v2, "deepseek_v3": _deepseek_v3, "gpt_oss": _gpt_oss,
    "llama4_text": _llama4_text, "llama4": _llama4,
}
MODEL_TYPES = tuple(FAMILIES)


def shape_from_hf_config(cfg: Mapping[str, Any], seq_len: int | None = None, name: str = "") -> ModelShape:
    """A `ModelShape` from a parsed HF ``config.json`` mapping (see the module docstring)."""
    if not isinstance(cfg, Mapping):
        raise ValueError("an HF config must be a JSON object")
    mt = model_type_of(cfg)
    return ModelShape(name=name or str(cfg.get("_name_or_path") or mt), **FAMILIES[mt](cfg, seq_len))


def shipped_configs() -> list[str]:
    """Names of the configs shipped in ``accounting/configs`` (file stems)."""
    return sorted(p.stem for p in CONFIG_DIR.glob("*.json"))


def read_json(path: str | Path) -> Any:
    """Parse a JSON file; errors name the file."""
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise ValueError(f"no such file: {path}") from None
    except OSError as e:
        raise ValueError(f"cannot read {path}: {e.strerror or e}") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise ValueError(f"{path} is not valid JSON: {e}") from None


def load_shape(path: str | Path, seq_len: int | None = None) -> ModelShape:
    """A `ModelShape` from an HF ``config.json`` file (the file stem becomes the name)."""
    path = Path(path)
    return shape_from_hf_config(read_json(path), seq_len=seq_len, name=path.stem)


def load_shipped(name: str, seq_len: int | None = None) -> ModelShape:
    """A shipped config by name, e.g. ``deepseek-v3``; ValueError listing the names otherwise."""
    path = CONFIG_DIR / f"{name}.json"
    if not path.is_file():
        raise ValueError(f"no shipped config {name!r}; shipped: {', '.join(shipped_configs())}")
    return load_shape(path, seq_len)
