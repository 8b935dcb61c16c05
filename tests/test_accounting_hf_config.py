"""Shipped HF configs load into shapes whose counts match the published ones.

Tolerances: totals within 1% (all are within 0.35%); active within the per-model tolerance below,
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
          "qwen3-30b-a3b": ("table", 0.02)}
# exact HF numel (transformers 5.23 on the meta device) = ours
HF_NUMEL = {"llama-3-8b": 8_030_261_248, "mixtral-8x7b": 46_702_792_704, "olmoe-1b-7b": 6_919_161_856,
            "qwen1.5-moe-a2.7b": 14_315_784_192, "qwen3-30b-a3b": 30_532_122_624, "dbrx": 131_596_523_520,
            "deepseek-v2-lite": 15_706_484_224, "deepseek-v3": 671_026_404_352}


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
