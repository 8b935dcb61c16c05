"""Load a Hugging Face style ``config.json`` into a `ModelShape`.

Supported (keyed on ``model_type``, else on ``architectures``): Llama, Mistral, Qwen2/Qwen3 (dense),
Mixtral, Qwen2-MoE (Qwen1.5-MoE, Qwen2-57B-A14B), Qwen3-MoE, OLMoE, DBRX (nested ``ffn_config`` /
``attn_config``), DeepSeek-V2 / V2-Lite / V3. An unknown architecture raises ``ValueError`` naming it.

What the shape does NOT model (small; listed per model in ``docs/accounting.md``): attention biases
(Qwen2-MoE's q/k/v biases), Qwen2-MoE's ``shared_expert_gate`` (d x 1 per layer), the q/k norms of OLMoE
and Qwen3, DeepSeek-V3's ``e_score_correction_bias`` (a buffer of E per MoE layer). DBRX's bias-free
LayerNorm has the parameter count of an RMSNorm and is loaded as ``rmsnorm``.

``seq_len`` defaults to ``max_position_embeddings`` (DBRX: ``max_seq_len``); pass ``seq_len=`` to price
a training window instead (e.g. 4096 for DeepSeek-V3's pretraining).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping

from .shapes import ModelShape

CONFIG_DIR = Path(__file__).resolve().parent / "configs"

ARCHITECTURES = {
    "LlamaForCausalLM": "llama", "MistralForCausalLM": "mistral", "Qwen2ForCausalLM": "qwen2",
    "Qwen3ForCausalLM": "qwen3", "MixtralForCausalLM": "mixtral", "Qwen2MoeForCausalLM": "qwen2_moe",
    "Qwen3MoeForCausalLM": "qwen3_moe", "OlmoeForCausalLM": "olmoe", "DbrxForCausalLM": "dbrx",
    "DeepseekV2ForCausalLM": "deepseek_v2", "DeepseekV3ForCausalLM": "deepseek_v3",
}
MODEL_TYPES = ("llama", "mistral", "qwen2", "qwen3", "mixtral", "qwen2_moe", "qwen3_moe", "olmoe", "dbrx",
               "deepseek_v2", "deepseek_v3")

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
}


def _get(cfg: Mapping[str, Any], key: str, default: Any = ...) -> Any:
    """``cfg[key]``; a missing required key is a ValueError naming it."""
    if key in cfg and cfg[key] is not None:
        return cfg[key]
    if default is ...:
        raise ValueError(f"config has no {key!r}")
    return default


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
    return out


def _moe_every_layer(cfg: Mapping[str, Any], name: str) -> None:
    """Qwen-style MoE placement: we model only 'all layers MoE' (decoder_sparse_step 1, no mlp_only_layers)."""
    step = cfg.get("decoder_sparse_step", 1)
    if step != 1 or cfg.get("mlp_only_layers"):
        raise ValueError(f"{name}: decoder_sparse_step={step!r}, mlp_only_layers={cfg.get('mlp_only_layers')!r}"
                         " is not representable (only leading dense layers are)")


def shape_from_hf_config(cfg: Mapping[str, Any], seq_len: int | None = None, name: str = "") -> ModelShape:
    """A `ModelShape` from a parsed HF ``config.json`` mapping (see the module docstring)."""
    if not isinstance(cfg, Mapping):
        raise ValueError("an HF config must be a JSON object")
    mt = model_type_of(cfg)
    name = name or str(cfg.get("_name_or_path") or mt)
    if mt in ("llama", "mistral", "qwen2", "qwen3"):
        f = _dense_common(cfg, seq_len)
    elif mt in ("mixtral", "olmoe"):
        f = _dense_common(cfg, seq_len)
        e = _get(cfg, "num_local_experts") if mt == "mixtral" else _get(cfg, "num_experts")
        f.update(n_experts=e, top_k=_get(cfg, "num_experts_per_tok"), d_expert=f["d_ff"])
    elif mt in ("qwen2_moe", "qwen3_moe"):
        _moe_every_layer(cfg, mt)
        f = _dense_common(cfg, seq_len)
        f.update(n_experts=_get(cfg, "num_experts"), top_k=_get(cfg, "num_experts_per_tok"),
                 d_expert=_get(cfg, "moe_intermediate_size"))
        shared = _get(cfg, "shared_expert_intermediate_size", 0) if mt == "qwen2_moe" else 0
        if shared:
            f.update(n_shared_experts=1, d_shared_expert=shared)
    elif mt == "dbrx":
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
             "norm_kind": "rmsnorm",  # bias-free LayerNorm: d parameters, as RMSNorm
             "position": "rope", "tied_embeddings": bool(_get(cfg, "tie_word_embeddings", False)),
             "attention": "mha" if kv == heads else "gqa",
             "n_experts": _get(ffn, "moe_num_experts"), "top_k": _get(ffn, "moe_top_k")}
        f["d_expert"] = f["d_ff"]
    else:  # deepseek_v2, deepseek_v3
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
             "qk_rope_head_dim": _get(cfg, "qk_rope_head_dim"), "v_head_dim": _get(cfg, "v_head_dim")}
        experts = _get(cfg, "n_routed_experts", 0)
        if experts:
            moe_width = _get(cfg, "moe_intermediate_size")
            f.update(n_experts=experts, top_k=_get(cfg, "num_experts_per_tok"),
                     n_shared_experts=_get(cfg, "n_shared_experts", 0), d_expert=moe_width,
                     d_shared_expert=moe_width, first_dense_layers=_get(cfg, "first_k_dense_replace", 0))
        f["mtp_modules"] = _get(cfg, "num_nextn_predict_layers", 0)
    return ModelShape(name=name, **f)


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
