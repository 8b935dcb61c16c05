"""Shipped HF configs load into shapes whose counts match the published ones.

Tolerances: totals within 1% (all are within 0.41%: gpt-oss-20b's 20.91B against the card's "21B"); active within the per-model tolerance below,
against each vendor's own convention (DeepSeek counts one input-embedding row, the others the whole
V x d table). Where the exact Hugging Face parameter count is known, our total equals it exactly (q/k norms, Qwen2-MoE's
q/k/v biases and shared-expert gate included; tests/test_hf_import.py checks every shipped config against
transformers' own modules built on the meta device).
"""
import json

import pytest

from accounting.hf_config import (PUBLISHED_COUNTS, load_shape, load_shipped, shape_from_hf_config,
                                  shipped_configs)
from accounting.params import active_parameters_with_input_embedding, count_parameters, COMPONENTS

REQUIRED = {"deepseek-v3", "deepseek-v2-lite", "mixtral-8x7b", "qwen1.5-moe-a2.7b", "olmoe-1b-7b", "dbrx",
            "llama-3-8b"}
# name: (active convention, relative tolerance)
ACTIVE = {"deepseek-v3": ("row", 0.011), "deepseek-v2-lite": ("row", 0.025),
          "mixtral-8x7b": ("table", 0.01), "qwen1.5-moe-a2.7b": ("table", 0.01),
          "olmoe-1b-7b": ("table", 0.02), "dbrx": ("table", 0.015), "llama-3-8b": ("table", 0.001),
          "qwen3-30b-a3b": ("table", 0.02),
          # OpenAI's model card counts without the embedding table (row convention): 3.61B vs "3.6B", 5.13B vs "5.1B"
          "gpt-oss-20b": ("row", 0.01), "gpt-oss-120b": ("row", 0.01)}
# exact HF numel (transformers 5.23 on the meta device) = ours
HF_NUMEL = {"llama-3-8b": 8_030_261_248, "mixtral-8x7b": 46_702_792_704, "olmoe-1b-7b": 6_919_161_856,
            "qwen1.5-moe-a2.7b": 14_315_784_192, "qwen3-30b-a3b": 30_532_122_624, "dbrx": 131_596_523_520,
            "deepseek-v2-lite": 15_706_484_224, "deepseek-v3": 671_026_404_352,
            "gpt-oss-20b": 20_914_757_184, "gpt-oss-120b": 116_829_156_672}


def test_required_configs_are_shipped():
    assert REQUIRED <= set(shipped_configs())
    assert set(shipped_configs()) <= set(PUBLISHED_COUNTS)


@pytest.mark.parametrize("name", sorted(PUBLISHED_COUNTS))
def test_published_counts(name):
    shape = load_shipped(name)
    c = count_parameters(shape)
    pub = PUBLISHED_COUNTS[name]
    assert abs(c.total / pub["total"] - 1) <= 0.01
    kind, tol = ACTIVE[name]
    active = c.active if kind == "row" else active_parameters_with_input_embedding(shape)
    assert abs(active / pub["active"] - 1) <= tol, (active, pub["active"])


@pytest.mark.parametrize("name", sorted(HF_NUMEL))
def test_exact_hf_numel(name):
    assert count_parameters(load_shipped(name)).total == HF_NUMEL[name]


def test_routing_and_numerics_fields_are_loaded():
    v3 = load_shipped("deepseek-v3")
    assert (v3.router_scoring, v3.router_norm_topk, v3.router_scale) == ("sigmoid", True, 2.5)
    assert (v3.router_groups, v3.router_topk_groups, v3.router_group_score, v3.router_score_bias) == (
        8, 4, "top2_sum", True)
    assert (v3.rope_scaling, v3.rope_factor, v3.rope_original_max_len, v3.rope_mscale_all_dim) == (
        "yarn", 40.0, 4096, 1.0)
    v2 = load_shipped("deepseek-v2-lite")
    assert (v2.router_scoring, v2.router_norm_topk, v2.router_groups, v2.norm_eps) == ("softmax", False, 0, 1e-6)
    olmoe, qwen3, qwen2 = load_shipped("olmoe-1b-7b"), load_shipped("qwen3-30b-a3b"), load_shipped("qwen1.5-moe-a2.7b")
    assert (olmoe.qk_norm, olmoe.router_norm_topk, olmoe.norm_eps) == ("full", False, 1e-5)
    assert (qwen3.qk_norm, qwen3.router_norm_topk, qwen3.rope_theta) == ("head", True, 1e6)
    assert (qwen2.qkv_bias, qwen2.shared_expert_gate, qwen2.router_norm_topk) == (True, True, False)
    dbrx = load_shipped("dbrx")
    assert (dbrx.norm_kind, dbrx.clip_qkv, dbrx.rope_theta) == ("layernorm_nobias", 8.0, 500000.0)


def test_deepseek_v3_counts():
    s = load_shipped("deepseek-v3", seq_len=4096)
    c = count_parameters(s)
    assert s.seq_len == 4096 and s.attention == "mla" and s.n_moe_layers == 58 and s.first_dense_layers == 3
    assert c.total == 671_026_404_352
    assert abs(c.total / 671e9 - 1) < 0.01
    assert c.active == 36_625_610_752
    assert f"{c.active:.2g}" == "3.7e+10"                 # "37B" at 2 significant figures
    assert abs(c.active / 37e9 - 1) <= 0.011              # 1.01% below
    assert 36.5e9 <= c.active < 37.5e9
    assert set(c.total_by_component) == set(COMPONENTS)
    assert all(c.total_by_component[k] > 0 for k in COMPONENTS)
    assert sum(c.total_by_component.values()) == c.total
    assert sum(c.active_by_component.values()) == c.active
    assert c.active_by_component["routed_experts"] == 58 * 8 * 3 * 7168 * 2048
    assert c.active_by_component["embedding"] == 7168
    assert 11e9 < c.mtp_total < 12e9                       # + 2 x 0.93B shared embedding/head copies ~ 14B


def test_dbrx_nested_and_gqa():
    s = load_shipped("dbrx")
    assert (s.n_experts, s.top_k, s.d_expert, s.n_kv_heads, s.attention) == (16, 4, 10752, 8, "gqa")


def test_qwen_shared_expert_and_v2_lite_no_q_lora():
    q = load_shipped("qwen1.5-moe-a2.7b")
    assert (q.n_shared_experts, q.d_shared_expert, q.d_expert) == (1, 5632, 1408)
    v2 = load_shipped("deepseek-v2-lite")
    assert v2.q_lora_rank == 0 and v2.n_shared_experts == 2 and v2.mtp_modules == 0


def test_architectures_key_when_model_type_missing(tmp_path):
    cfg = json.loads((load_shipped.__globals__["CONFIG_DIR"] / "mixtral-8x7b.json").read_text())
    del cfg["model_type"]
    assert shape_from_hf_config(cfg).n_experts == 8
    p = tmp_path / "x.json"
    p.write_text(json.dumps(cfg))
    assert load_shape(p, seq_len=128).seq_len == 128


def test_unknown_architecture_is_named():
    with pytest.raises(ValueError, match="GPT2LMHeadModel"):
        shape_from_hf_config({"architectures": ["GPT2LMHeadModel"], "n_embd": 768})
    with pytest.raises(ValueError, match="'falcon'"):
        shape_from_hf_config({"model_type": "falcon"})


def test_bad_values_are_rejected():
    cfg = json.loads((load_shipped.__globals__["CONFIG_DIR"] / "olmoe-1b-7b.json").read_text())
    with pytest.raises(ValueError, match="top_k=65 exceeds n_experts=64"):
        shape_from_hf_config({**cfg, "num_experts_per_tok": 65})
    with pytest.raises(ValueError, match="hidden_size|d_model"):
        shape_from_hf_config({**cfg, "hidden_size": 2048.5})
    with pytest.raises(ValueError, match="num_hidden_layers"):
        shape_from_hf_config({k: v for k, v in cfg.items() if k != "num_hidden_layers"})


@pytest.mark.parametrize("bad,match", [
    (dict(router_groups=3, router_topk_groups=1), "must divide n_experts"),
    (dict(router_groups=4, router_topk_groups=0), "both be 0"),
    (dict(router_groups=4, router_topk_groups=1, top_k=3), "exceeds the 2 experts"),
    (dict(qk_norm="layer"), "qk_norm must be one of"),
    (dict(norm_eps=-1.0), "norm_eps must be a number"),
    (dict(qkv_bias=1), "qkv_bias must be true or false"),
    (dict(shared_expert_gate=True), "needs n_shared_experts"),
    (dict(rope_scaling="yarn"), "rope_factor >= 1 and rope_original_max_len"),
])
def test_new_shape_fields_are_validated(bad, match):
    from accounting.shapes import ModelShape, ShapeError
    base = dict(vocab_size=64, d_model=32, n_layers=2, n_heads=4, seq_len=16, n_experts=8, top_k=2)
    with pytest.raises(ShapeError, match=match):
        ModelShape(**{**base, **bad})


# ----- MoE placement patterns, gpt-oss, llama3 RoPE ---------------------------------------------------------
def _qwen3(**changes):
    cfg = json.loads((load_shipped.__globals__["CONFIG_DIR"] / "qwen3-30b-a3b.json").read_text())
    return shape_from_hf_config({**cfg, **changes})


def test_qwen_mlp_only_layers_zero_is_one_leading_dense_layer():
    """Refused before; now exactly the first_dense_layers=1 shape (same counts as the prefix rule)."""
    only = _qwen3(mlp_only_layers=[0])
    assert only == _qwen3().replace(first_dense_layers=1)
    assert only.moe_layer_pattern == "" and only.n_moe_layers == 47
    c = count_parameters(only)
    full = count_parameters(_qwen3())
    dense = 3 * 2048 * 6144                            # one SwiGLU FFN of intermediate_size
    moe = 128 * 3 * 2048 * 768 + 128 * 2048              # experts + router of one layer
    assert full.total - c.total == moe - dense


def test_qwen_decoder_sparse_step_interleaves_and_is_priced_per_layer():
    from accounting.flops import forward_flops
    step = _qwen3(decoder_sparse_step=2, mlp_only_layers=[47])
    assert step.moe_layer_pattern == "DM" * 23 + "DD" and step.n_moe_layers == 23
    assert [step.is_moe_layer(i) for i in range(4)] == [False, True, False, True]
    c, f = count_parameters(step), forward_flops(step, 128, flops_per_mac=2)
    assert c.total_by_component["dense_ffn"] == 25 * 3 * 2048 * 6144
    assert c.active_by_component["routed_experts"] == 23 * 8 * 3 * 2048 * 768
    assert f["dense_ffn"] == 2 * 128 * 25 * 3 * 2048 * 6144
    assert f["routed_experts"] == 2 * 128 * 23 * 8 * 3 * 2048 * 768
    assert f["router"] == 2 * 128 * 23 * 128 * 2048
    with pytest.raises(ValueError, match=r"mlp_only_layers must list layer indices in 0..47, got \[48\]"):
        _qwen3(mlp_only_layers=[48])
    with pytest.raises(ValueError, match="decoder_sparse_step must be an integer >= 1"):
        _qwen3(decoder_sparse_step=0)


def test_gpt_oss_shapes_and_published_counts():
    """gpt-oss-20b/120b: what the loader reads, and the model card's rounded totals (116.8B, 20.9B) and active
    counts (5.1B, 3.6B)."""
    s20, s120 = load_shipped("gpt-oss-20b"), load_shipped("gpt-oss-120b")
    assert (s20.n_layers, s20.n_experts, s20.top_k, s20.d_expert, s20.n_kv_heads, s20.head_dim) == (24, 32, 4, 2880, 8, 64)
    assert (s120.n_layers, s120.n_experts) == (36, 128)
    assert (s20.ffn_kind, s20.swiglu_alpha, s20.swiglu_limit) == ("swiglu_clamped", 1.702, 7.0)
    assert (s20.attention_bias, s20.attention_sinks, s20.expert_bias, s20.router_bias) == (True,) * 4
    assert (s20.sliding_window, s20.window_layer_pattern) == (128, "SF" * 12)
    assert (s20.rope_scaling, s20.rope_factor, s20.rope_original_max_len, s20.rope_truncate) == ("yarn", 32.0, 4096, False)
    for shape, total, active in ((s20, 20.9e9, 3.6e9), (s120, 116.8e9, 5.1e9)):
        c = count_parameters(shape)
        assert round(c.total / 1e8) * 1e8 == total       # the card's 116.8B and 20.9B, to the printed digit
        assert round(c.active / 1e8) * 1e8 == active
    c = count_parameters(s20)
    per_layer_attention = 2 * 2880 * 64 * 64 + 2 * 2880 * 8 * 64 + (64 * 64 + 2 * 8 * 64 + 2880) + 64
    assert c.total_by_component["attention"] == 24 * per_layer_attention
    assert c.total_by_component["routed_experts"] == 24 * 32 * (3 * 2880 * 2880 + 2 * 2880 + 2880)
    assert c.total_by_component["router"] == 24 * (32 * 2880 + 32)


def test_sliding_window_layers_are_priced_causally():
    """Causal pairs on a window-W layer: min(i + 1, W) keys per query; full layers n (n + 1) / 2; the full
    matrix (causal=False) is what FlopCounterMode counts and is unchanged."""
    from accounting.flops import attention_pairs, decode_flops_per_token, forward_flops
    s = load_shipped("gpt-oss-20b", seq_len=4096)
    n, W = 4096, 128
    per_pair = 2 * 64 * 64
    f = forward_flops(s, n, flops_per_mac=1, causal=True)
    sliding = W * (W + 1) // 2 + (n - W) * W
    assert attention_pairs(n, True, W) == sliding and attention_pairs(100, True, W) == 5050
    assert f["attention_scores"] == 12 * per_pair * sliding + 12 * per_pair * n * (n + 1) // 2
    assert forward_flops(s, n, flops_per_mac=1)["attention_scores"] == 24 * per_pair * n * n
    full = s.replace(sliding_window=0, window_layer_pattern="")
    assert (decode_flops_per_token(full, 4095, flops_per_mac=1) - decode_flops_per_token(s, 4095, flops_per_mac=1)
            == 12 * (4096 - W) * per_pair)


def test_llama31_rope_is_loaded():
    cfg = json.loads((load_shipped.__globals__["CONFIG_DIR"] / "llama-3-8b.json").read_text())
    s = shape_from_hf_config({**cfg, "rope_scaling": {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                                                      "high_freq_factor": 4.0,
                                                      "original_max_position_embeddings": 8192}})
    assert (s.rope_scaling, s.rope_factor, s.rope_low_freq_factor, s.rope_high_freq_factor,
            s.rope_original_max_len) == ("llama3", 8.0, 1.0, 4.0, 8192)
    assert count_parameters(s).total == HF_NUMEL["llama-3-8b"]


@pytest.mark.parametrize("bad,match", [
    (dict(moe_layer_pattern="MX"), "one letter of M/D per layer"),
    (dict(moe_layer_pattern="DMD"), "one letter of M/D per layer"),
    (dict(moe_layer_pattern="DM", first_dense_layers=1), "not both"),
    (dict(moe_layer_pattern="DM", n_experts=0, top_k=0), "MoE fields are set: moe_layer_pattern"),
    (dict(window_layer_pattern="SF"), "needs sliding_window"),
    (dict(sliding_window=4, window_layer_pattern="SX"), "one letter of S/F per layer"),
    (dict(qkv_bias=True, attention_bias=True), "set qkv_bias or attention_bias"),
    (dict(ffn_kind="swiglu_oai"), "ffn_kind must be one of"),
    (dict(rope_scaling="llama3", rope_factor=8.0, rope_original_max_len=16, rope_low_freq_factor=4.0),
     "rope_high_freq_factor > rope_low_freq_factor"),
])
def test_pattern_and_gpt_oss_fields_are_validated(bad, match):
    from accounting.shapes import ModelShape, ShapeError
    base = dict(vocab_size=64, d_model=32, n_layers=2, n_heads=4, seq_len=16, n_experts=8, top_k=2)
    with pytest.raises(ShapeError, match=match):
        ModelShape(**{**base, **bad})
