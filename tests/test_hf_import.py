"""transformers as an offline oracle: parameter totals, and (below) checkpoints loaded with ``moe.from_hf``.

Nothing is fetched from a hub: full-size models are built on the meta device from the shipped config.json
files; tiny random models are built from config objects and saved with ``save_pretrained`` into temporary
folders. Skipped when transformers is not installed (it is in the ``dev`` extra).
"""
import json

import pytest

torch = pytest.importorskip("torch")
tf = pytest.importorskip("transformers")

from accounting.hf_config import CONFIG_DIR, load_shipped, shipped_configs  # noqa: E402
from accounting.params import count_parameters  # noqa: E402


def hf_config_object(cfg: dict):
    """A transformers config object from a parsed config.json (DBRX wants a float p-norm)."""
    cfg = json.loads(json.dumps(cfg))
    ffn = cfg.get("ffn_config")
    if isinstance(ffn, dict) and ffn.get("moe_normalize_expert_weights") is not None:
        ffn["moe_normalize_expert_weights"] = float(ffn["moe_normalize_expert_weights"])
    return tf.AutoConfig.for_model(cfg["model_type"], **{k: v for k, v in cfg.items() if k != "model_type"})


@pytest.mark.parametrize("name", shipped_configs())
def test_totals_equal_transformers_meta_device_count(name):
    """Every shipped full-size config: our total == sum of numel of transformers' modules (meta device)."""
    cfg = json.loads((CONFIG_DIR / f"{name}.json").read_text())
    with torch.device("meta"):
        model = tf.AutoModelForCausalLM.from_config(hf_config_object(cfg))
    hf_total = sum(p.numel() for p in model.parameters())
    ours = count_parameters(load_shipped(name)).total
    print(f"{name}: transformers {hf_total:,} ours {ours:,}")
    assert ours == hf_total


# ----- tiny random checkpoints of every family --------------------------------------------------------
import moe  # noqa: E402

COMMON = dict(vocab_size=96, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, max_position_embeddings=64,
              intermediate_size=48, tie_word_embeddings=False)
MLA = dict(kv_lora_rank=16, qk_nope_head_dim=8, qk_rope_head_dim=4, v_head_dim=8, num_key_value_heads=4,
           moe_intermediate_size=16, n_shared_experts=1, first_k_dense_replace=1, num_experts_per_tok=2)
FAMILIES = {
    "llama": ("LlamaConfig", dict(num_key_value_heads=2, rope_theta=50000.0, rms_norm_eps=1e-5)),
    "mistral": ("MistralConfig", dict(num_key_value_heads=2, sliding_window=48)),
    "mixtral": ("MixtralConfig", dict(num_key_value_heads=2, num_local_experts=4, num_experts_per_tok=2)),
    "qwen2_moe": ("Qwen2MoeConfig", dict(num_key_value_heads=2, num_experts=4, num_experts_per_tok=2,
                                         moe_intermediate_size=16, shared_expert_intermediate_size=24,
                                         norm_topk_prob=False)),
    "qwen3_moe": ("Qwen3MoeConfig", dict(num_key_value_heads=2, num_experts=4, num_experts_per_tok=2, head_dim=8,
                                         moe_intermediate_size=16, norm_topk_prob=True)),
    "olmoe": ("OlmoeConfig", dict(num_key_value_heads=2, num_experts=4, num_experts_per_tok=2, clip_qkv=0.5,
                                  eos_token_id=1, pad_token_id=0)),
    "dbrx": ("DbrxConfig", None),
    "deepseek_v2": ("DeepseekV2Config", dict(MLA, n_routed_experts=8, q_lora_rank=None, topk_method="group_limited_greedy",
                                             n_group=4, topk_group=2, routed_scaling_factor=1.5)),
    "deepseek_v3": ("DeepseekV3Config", dict(MLA, n_routed_experts=8, q_lora_rank=24, n_group=4, topk_group=2,
                                             routed_scaling_factor=2.5,
                                             rope_parameters={"rope_type": "yarn", "rope_theta": 10000.0,
                                                              "factor": 4.0, "original_max_position_embeddings": 16,
                                                              "beta_fast": 32.0, "beta_slow": 1.0, "mscale": 1.0,
                                                              "mscale_all_dim": 1.0})),
}


def tiny_hf_model(family: str):
    """A tiny random transformers model of ``family`` (fp32, eval mode, routers made decisive)."""
    cls_name, kw = FAMILIES[family]
    torch.manual_seed(0)
    if family == "dbrx":
        cfg = tf.DbrxConfig(vocab_size=96, d_model=32, n_layers=2, n_heads=4, max_seq_len=64,
                            attn_config=dict(kv_n_heads=2, clip_qkv=0.3, rope_theta=500000.0),
                            ffn_config=dict(ffn_hidden_size=16, moe_num_experts=4, moe_top_k=2,
                                            moe_normalize_expert_weights=1.0))
    else:
        cfg = getattr(tf, cls_name)(**{**COMMON, **kw})
    model = tf.AutoModelForCausalLM.from_config(cfg).float().eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() >= 2:   # larger weights than the 0.02 init: logits and routing that are not near-ties
                p.normal_(0.0, 0.5 if name.endswith(("gate.weight", "router.layer.weight")) else 0.1)
            elif name.endswith("norm.weight") or "norm_" in name or "layernorm" in name:
                p.uniform_(0.5, 1.5)
            else:
                p.normal_(0.0, 0.1)
        for name, b in model.named_buffers():
            if name.endswith("e_score_correction_bias"):
                b.normal_(0.0, 0.2)
    return model


@pytest.fixture(scope="module", params=sorted(FAMILIES))
def pair(request, tmp_path_factory):
    """(family, transformers model, our model loaded from its save_pretrained folder)."""
    torch.set_num_threads(1)
    family = request.param
    hf = tiny_hf_model(family)
    folder = tmp_path_factory.mktemp(family)
    hf.save_pretrained(folder)
    return family, hf, moe.from_hf(folder)


def test_logits_equal_transformers(pair):
    family, hf, ours = pair
    torch.manual_seed(1)
    idx = torch.randint(0, 96, (2, 24))
    with torch.no_grad():
        want = hf(idx).logits
        got = ours(idx).logits
    diff = (want - got).abs().max().item()
    agree = (want.argmax(-1) == got.argmax(-1)).float().mean().item()
    print(f"{family}: logits max|diff| {diff:.2e} (scale {want.abs().max().item():.2f}), top-1 agreement {agree:.0%}")
    assert diff < 1e-4


def test_greedy_generation_equals_transformers(pair):
    family, hf, ours = pair
    torch.manual_seed(2)
    prompt = torch.randint(0, 96, (1, 5))
    with torch.no_grad():
        want = hf.generate(prompt, max_new_tokens=16, do_sample=False, attention_mask=torch.ones_like(prompt),
                           pad_token_id=0, eos_token_id=None)
    got = ours.generate(prompt, 16, temperature=0.0)
    same = (want == got).all().item()
    print(f"{family}: greedy 16 steps {'identical' if same else 'DIFFER'}")
    assert got.tolist() == want.tolist()
