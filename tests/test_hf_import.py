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
    "qwen2-tied": ("Qwen2Config", dict(num_key_value_heads=2, tie_word_embeddings=True, rope_theta=1e6)),
    "qwen3": ("Qwen3Config", dict(num_key_value_heads=2, head_dim=16)),
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
    # MoE placement patterns: mlp_only_layers=[0] is first_dense_layers=1; decoder_sparse_step=2 interleaves
    "qwen3_moe-mlp-only-0": ("Qwen3MoeConfig", dict(num_key_value_heads=2, num_experts=4, num_experts_per_tok=2,
                                                    head_dim=8, moe_intermediate_size=16, norm_topk_prob=True,
                                                    mlp_only_layers=[0])),
    "qwen2_moe-sparse-step-2": ("Qwen2MoeConfig", dict(num_key_value_heads=2, num_experts=4, num_experts_per_tok=2,
                                                       moe_intermediate_size=16, shared_expert_intermediate_size=24,
                                                       decoder_sparse_step=2, num_hidden_layers=4)),
    # Llama-3.1's llama3 RoPE scaling (wavelengths 6.3 .. 6283 straddle original/high = 4 .. original/low = 16)
    # and Llama's attention_bias (q, k, v and o)
    "llama-3.1-rope-bias": ("LlamaConfig", dict(num_key_value_heads=2, attention_bias=True,
                                                rope_parameters={"rope_type": "llama3", "rope_theta": 10000.0,
                                                                 "factor": 8.0, "low_freq_factor": 1.0,
                                                                 "high_freq_factor": 4.0,
                                                                 "original_max_position_embeddings": 16})),
    # gpt-oss: sinks, sliding window 6 on even layers, clamped SwiGLU (limit low enough to bind), biases,
    # top-k-then-softmax router, YaRN without truncation (the real model's rope values)
    "gpt_oss": ("GptOssConfig", dict(num_hidden_layers=3, num_key_value_heads=2, head_dim=16, num_local_experts=4,
                                     num_experts_per_tok=2, sliding_window=6, swiglu_limit=0.3)),
}


def _assert_same_routing(theirs, ours, x):
    """Transformers' router ``theirs`` and our `Router` ``ours`` pick the same experts for every row of ``x``
    (in any order) with the same weights to 1e-6; returns our routing."""
    _, w_theirs, i_theirs = theirs(x)
    r = ours(x)
    order_t, order_o = i_theirs.argsort(-1), r.indices.argsort(-1)
    assert torch.equal(i_theirs.gather(-1, order_t), r.indices.gather(-1, order_o))
    torch.testing.assert_close(w_theirs.gather(-1, order_t), r.weights.gather(-1, order_o), rtol=0, atol=1e-6)
    return r


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
                p.normal_(0.0, 0.5 if name.endswith(("gate.weight", "router.layer.weight", "mlp.router.weight"))
                          else 0.1)
            elif name.endswith("norm.weight") or "norm_" in name or "layernorm" in name:
                p.uniform_(0.5, 1.5)
            elif name.endswith("sinks"):   # gpt-oss's sink logits, on the scale of the attention scores
                p.normal_(0.0, 1.0)
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


def test_tiny_totals_equal_transformers(pair):
    """The tiny configs too: accounting's total == our module's numel == transformers' numel."""
    family, hf, ours = pair
    shape = shape_from_config(hf.config.to_dict())
    hf_total = sum(p.numel() for p in hf.parameters())
    assert count_parameters(shape).total == sum(p.numel() for p in ours.parameters()) == hf_total


def shape_from_config(cfg):
    from moe.hf import shape_for_import
    return shape_for_import(cfg).replace(mtp_modules=0)


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


# ----- DeepSeek routers against transformers' own router modules ----------------------------------------
@pytest.mark.parametrize("version", ["v2", "v3"])
def test_group_limited_router_chooses_what_deepseek_chooses(version):
    """Same weights and inputs: identical expert sets and gate weights on 512 tokens (16 experts in 4 groups)."""
    from accounting.hf_config import shape_from_hf_config
    from moe.router import Router
    torch.manual_seed(3)
    kw = {**COMMON, **MLA, "n_routed_experts": 16, "num_experts_per_tok": 4, "n_group": 4, "topk_group": 2,
          "routed_scaling_factor": 2.5}
    if version == "v2":
        cfg = tf.DeepseekV2Config(**kw, topk_method="group_limited_greedy", q_lora_rank=None)
        theirs = tf.models.deepseek_v2.modeling_deepseek_v2.DeepseekV2TopkRouter(cfg)
    else:
        cfg = tf.DeepseekV3Config(**kw, q_lora_rank=24)
        theirs = tf.models.deepseek_v3.modeling_deepseek_v3.DeepseekV3TopkRouter(cfg)
        theirs.e_score_correction_bias.normal_(0.0, 0.2)
    with torch.no_grad():
        theirs.weight.normal_(0.0, 0.5)
    shape = shape_from_hf_config(cfg.to_dict())
    ours = Router(shape, moe.RouterConfig())
    with torch.no_grad():
        ours.gate.weight.copy_(theirs.weight)
        if ours.bias is not None:
            ours.bias.copy_(theirs.e_score_correction_bias)
    r = _assert_same_routing(theirs, ours, torch.randn(512, 32))
    # the group limit binds: some token's best 4 experts (by selection score) are NOT what was chosen
    select = r.probs if version == "v2" else torch.sigmoid(r.logits) + ours.bias
    ungrouped = select.topk(4, dim=-1).indices.sort(-1).values
    assert (ungrouped != r.indices.sort(-1).values).any(-1).float().mean() > 0.05


def test_loss_free_balancing_updates_the_loaded_correction_bias(tmp_path):
    hf = tiny_hf_model("deepseek_v3")
    hf.save_pretrained(tmp_path)
    model = moe.from_hf(tmp_path, router=moe.RouterConfig(balancing="loss_free", bias_update_rate=0.01))
    loaded = hf.model.layers[1].mlp.gate.e_score_correction_bias
    router = model.blocks[1].ffn.router
    assert torch.equal(router.bias, loaded)          # the same buffer: DeepSeek's bias is our balancing bias
    model.train()
    model(torch.randint(0, 96, (2, 16)))
    load = router.load_accum.clone()
    model.update_router_biases()
    step = router.bias - loaded
    assert torch.allclose(step.abs(), torch.full_like(step, 0.01)) or (load == load.float().mean()).any()
    assert torch.equal(torch.sign(step), torch.sign(load.float().mean() - load.float()))
    assert int(router.load_accum.sum()) == 0


# ----- the MTP module ----------------------------------------------------------------------------------
def v3_config(**extra):
    cfg = tf.DeepseekV3Config(**{**COMMON, **MLA, "n_routed_experts": 8, "q_lora_rank": 24, "n_group": 4,
                                 "topk_group": 2, **extra})
    return cfg.to_dict()


def test_mtp_module_parameters_and_loss():
    from accounting.hf_config import shape_from_hf_config
    cfg = v3_config(num_nextn_predict_layers=1)
    shape = shape_from_hf_config(cfg)
    torch.manual_seed(0)
    model = moe.from_hf(cfg, mtp_loss_weight=0.3).train()
    counts = count_parameters(shape)
    assert shape.mtp_modules == 1 and len(model.mtp) == 1
    assert sum(p.numel() for p in model.mtp.parameters()) == counts.mtp_total
    assert sum(p.numel() for p in model.parameters()) == counts.total_with_mtp
    idx = torch.randint(0, 96, (2, 12))
    out = model(idx[:, :-1], targets=idx[:, 1:])
    assert set(out.aux_losses) == {"mtp"}
    assert 0 < out.aux_losses["mtp"].item() < 0.3 * 2 * torch.log(torch.tensor(96.0)).item()
    torch.testing.assert_close(out.loss, out.lm_loss + out.aux_losses["mtp"])
    out.loss.backward()
    assert model.mtp[0].proj.weight.grad.abs().sum() > 0 and len(out.router_stats) == shape.n_moe_layers + 1
    model.mtp_loss_weight = 0.0
    assert "mtp" not in model(idx[:, :-1], targets=idx[:, 1:]).aux_losses
    with torch.no_grad():   # generation never runs the MTP module
        assert model.eval().generate(idx[:, :3], 4, temperature=0.0).shape == (2, 7)


def test_mtp_weights_load_from_deepseeks_layer_names(tmp_path):
    """A checkpoint carrying DeepSeek's MTP layer (model.layers.{L}.*: enorm, hnorm, eh_proj, shared_head,
    a block) loads into model.mtp[0]; transformers' save_pretrained omits it, so we add it by hand."""
    from safetensors.torch import load_file, save_file
    hf = tiny_hf_model("deepseek_v3")
    hf.save_pretrained(tmp_path)
    cfg = json.loads((tmp_path / "config.json").read_text())
    cfg["num_nextn_predict_layers"] = 1
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    tensors = load_file(str(tmp_path / "model.safetensors"))
    extra = {k.replace("model.layers.1.", "model.layers.2."): v.clone() for k, v in tensors.items()
             if k.startswith("model.layers.1.")}
    extra.update({"model.layers.2.enorm.weight": torch.rand(32), "model.layers.2.hnorm.weight": torch.rand(32),
                  "model.layers.2.eh_proj.weight": torch.randn(32, 64),
                  "model.layers.2.shared_head.norm.weight": torch.rand(32),
                  "model.layers.2.shared_head.head.weight": tensors["lm_head.weight"].clone(),
                  "model.layers.2.embed_tokens.weight": tensors["model.embed_tokens.weight"].clone()})
    save_file({**tensors, **extra}, str(tmp_path / "model.safetensors"))
    model = moe.from_hf(tmp_path)
    assert len(model.mtp) == 1
    assert torch.equal(model.mtp[0].proj.weight, extra["model.layers.2.eh_proj.weight"])
    assert torch.equal(model.mtp[0].block.attn.wkv_b.weight, model.blocks[1].attn.wkv_b.weight)
    assert torch.equal(model.mtp[0].block.ffn.router.bias, model.blocks[1].ffn.router.bias)
    idx = torch.randint(0, 96, (1, 10))
    with torch.no_grad():
        torch.testing.assert_close(model(idx).logits, hf(idx).logits, rtol=0, atol=1e-4)


# ----- folders, configs, dtypes and errors --------------------------------------------------------------
def test_sharded_checkpoint_and_config_mapping(tmp_path):
    hf = tiny_hf_model("qwen2_moe")
    hf.save_pretrained(tmp_path, max_shard_size="40KB")
    assert (tmp_path / "model.safetensors.index.json").is_file() and len(list(tmp_path.glob("*.safetensors"))) > 2
    idx = torch.randint(0, 96, (1, 10))
    with torch.no_grad():
        torch.testing.assert_close(moe.from_hf(tmp_path)(idx).logits, hf(idx).logits, rtol=0, atol=1e-4)
    random_init = moe.from_hf(hf.config)              # a config object (or mapping): same architecture
    assert sum(p.numel() for p in random_init.parameters()) == sum(p.numel() for p in hf.parameters())
    bf16 = moe.from_hf(tmp_path, dtype=torch.bfloat16)
    assert next(bf16.parameters()).dtype == torch.bfloat16


def _edit_tensors(folder, fn):
    from safetensors.torch import load_file, save_file
    tensors = load_file(str(folder / "model.safetensors"))
    save_file(fn(dict(tensors)), str(folder / "model.safetensors"))


def test_one_line_errors(tmp_path):
    with pytest.raises(ValueError, match="unsupported architecture 'gpt2'"):
        moe.from_hf({"model_type": "gpt2", "n_embd": 64})
    with pytest.raises(ValueError, match="RoPE type 'longrope' is not supported by moe.from_hf"):
        moe.from_hf({**tf.LlamaConfig(**COMMON).to_dict(),
                     "rope_parameters": {"rope_type": "longrope", "rope_theta": 5e5, "factor": 8.0}})
    with pytest.raises(ValueError, match="rope_scaling type 'llama3' needs low_freq_factor, high_freq_factor"):
        moe.from_hf({**tf.LlamaConfig(**COMMON).to_dict(),
                     "rope_parameters": {"rope_type": "llama3", "rope_theta": 5e5, "factor": 8.0,
                                         "original_max_position_embeddings": 16}})
    with pytest.raises(ValueError, match="no config.json"):
        moe.from_hf(tmp_path)
    hf = tiny_hf_model("mixtral")
    hf.save_pretrained(tmp_path)
    _edit_tensors(tmp_path, lambda t: {k: v for k, v in t.items() if "experts.3.w2" not in k})
    with pytest.raises(ValueError, match=r"missing tensor\(s\) in the checkpoint: model.layers.0.block_sparse_moe.experts.3.w2"):
        moe.from_hf(tmp_path)
    hf.save_pretrained(tmp_path)
    _edit_tensors(tmp_path, lambda t: {**t, "model.layers.0.mlp.extra.weight": torch.zeros(2)})
    with pytest.raises(ValueError, match=r"unexpected tensor\(s\) in the checkpoint: model.layers.0.mlp.extra"):
        moe.from_hf(tmp_path)
    hf.save_pretrained(tmp_path)
    cfg = json.loads((tmp_path / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps({**cfg, "intermediate_size": 40}))
    with pytest.raises(ValueError, match=r"shape mismatch for blocks.0.ffn.experts.w_gate: checkpoint gives \(4, 32, 48\), the model built from config.json has \(4, 32, 40\)"):
        moe.from_hf(tmp_path)


def test_eval_hf_cli_loss_equals_transformers_loss(tmp_path, capsys):
    """experiments.eval_hf: our loaded model's loss on a text equals transformers' own loss on the same windows."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from experiments.eval_hf import main
    text = ("To be, or not to be, that is the question: Whether 'tis nobler in the mind to suffer "
            "the slings and arrows of outrageous fortune, or to take arms against a sea of troubles. ") * 20
    tok = Tokenizer(models.BPE(unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.train_from_iterator([text], trainers.BpeTrainer(vocab_size=96, special_tokens=["[UNK]"]))
    hf = tiny_hf_model("llama")
    hf.save_pretrained(tmp_path)
    tok.save(str(tmp_path / "tokenizer.json"))
    (tmp_path / "text.txt").write_text(text)
    assert main([str(tmp_path), "--text", str(tmp_path / "text.txt"), "--window", "16", "--json"]) == 0
    got = json.loads(capsys.readouterr().out)
    ids = tok.encode(text).ids
    x = torch.tensor(ids[: len(ids) // 16 * 16]).view(-1, 16)
    with torch.no_grad():
        want = hf(x, labels=x).loss.item()
    assert got["windows"] == x.size(0) and got["predicted_tokens"] == x.size(0) * 15
    assert abs(got["loss_nats"] - want) < 1e-5
    assert main([str(tmp_path), "--window", "4096"]) == 2     # one-line error: window beyond seq_len


@pytest.mark.parametrize("family", ["dbrx", "deepseek_v3", "qwen2_moe"])
def test_export_back_to_transformers(tmp_path, family):
    """from_hf -> change our weights -> to_hf -> transformers' from_pretrained computes what our model does."""
    hf = tiny_hf_model(family)
    hf.save_pretrained(tmp_path / "in")
    ours = moe.from_hf(tmp_path / "in")
    with torch.no_grad():
        for p in ours.parameters():
            p.mul_(1.05)
    moe.to_hf(ours, tmp_path / "out")
    back = tf.AutoModelForCausalLM.from_pretrained(tmp_path / "out").float().eval()
    idx = torch.randint(0, 96, (1, 12))
    with torch.no_grad():
        want, got = ours(idx).logits, back(idx).logits
    assert (want - got).abs().max().item() < 1e-4
    assert (want - hf(idx).logits).abs().max().item() > 1e-3      # the change is visible


# ----- families: MoE placement patterns, gpt-oss, llama3 RoPE ---------------------------------------------
def test_moe_placement_patterns_are_what_transformers_builds():
    """mlp_only_layers=[0] is exactly one leading dense layer; decoder_sparse_step=2 is MoE every other layer."""
    only = shape_from_config(tiny_hf_model("qwen3_moe-mlp-only-0").config.to_dict())
    assert (only.first_dense_layers, only.moe_layer_pattern, only.n_moe_layers) == (1, "", 1)
    hf = tiny_hf_model("qwen2_moe-sparse-step-2")
    step = shape_from_config(hf.config.to_dict())
    assert (step.first_dense_layers, step.moe_layer_pattern) == (0, "DMDM")
    built = [type(layer.mlp).__name__.endswith("SparseMoeBlock") for layer in hf.model.layers]
    assert built == [step.is_moe_layer(i) for i in range(4)] == [False, True, False, True]


def test_gpt_oss_each_feature_changes_the_logits(tmp_path):
    """The gpt-oss model's features all bind on the tiny model: without any one of them the logits move."""
    hf = tiny_hf_model("gpt_oss")
    hf.save_pretrained(tmp_path)
    ours = moe.from_hf(tmp_path)
    idx = torch.randint(0, 96, (2, 24), generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        want = hf(idx).logits

    def moved(change=None, **shape_changes):
        model = moe.build_model(ours.shape.replace(**shape_changes)).eval() if shape_changes else None
        if model is not None:
            model.load_state_dict(ours.state_dict())
        else:
            model = moe.from_hf(hf.config)
            model.load_state_dict(ours.state_dict())
            change(model)
        with torch.no_grad():
            return (model(idx).logits - want).abs().max().item()

    assert ours.shape.window_layer_pattern == "SFS" and ours.shape.sliding_window == 6
    assert moved(lambda m: [setattr(b.attn, "window", 0) for b in m.blocks]) > 1e-2       # sliding window
    assert moved(lambda m: [b.attn.sinks.data.fill_(-1e4) for b in m.blocks]) > 1e-2      # sinks
    assert moved(swiglu_limit=100.0) > 1e-2                                               # the clamp
    assert moved(swiglu_alpha=1.0) > 1e-2                                                 # sigmoid gain
    assert moved(rope_truncate=True) > 1e-3                                              # YaRN without rounding
    assert moved(lambda m: [b.ffn.experts.b_down.data.zero_() for b in m.blocks]) > 1e-2  # expert biases
    assert moved(lambda m: [b.attn.wo.bias.data.zero_() for b in m.blocks]) > 1e-2        # o_proj bias


def test_gpt_oss_router_chooses_and_weighs_what_transformers_does():
    """Top-k of the logits then softmax over the k (gpt-oss) == our softmax, top-k, renormalised; with the bias."""
    from accounting.hf_config import shape_from_hf_config
    from moe.router import Router
    torch.manual_seed(5)
    cfg = tf.GptOssConfig(**{**COMMON, "num_local_experts": 16, "num_experts_per_tok": 4, "head_dim": 8,
                             "num_key_value_heads": 2})
    theirs = tf.models.gpt_oss.modeling_gpt_oss.GptOssTopKRouter(cfg)
    with torch.no_grad():
        theirs.weight.normal_(0.0, 0.5)
        theirs.bias.normal_(0.0, 1.0)
    ours = Router(shape_from_hf_config(cfg.to_dict()), moe.RouterConfig())
    with torch.no_grad():
        ours.gate.weight.copy_(theirs.weight)
        ours.gate.bias.copy_(theirs.bias)
    _assert_same_routing(theirs, ours, torch.randn(512, 32))


def test_gpt_oss_kv_cache_decode_equals_full_forward(tmp_path):
    """Sliding-window layers under the KV cache: token-by-token decoding past the window gives the logits of
    one full forward."""
    tiny_hf_model("gpt_oss").save_pretrained(tmp_path)
    model = moe.from_hf(tmp_path)
    idx = torch.randint(0, 96, (1, 14), generator=torch.Generator().manual_seed(6))
    with torch.no_grad():
        full = model(idx).logits
        cache = model.new_cache(1)
        steps = [model(idx[:, :4], cache=cache).logits]
        steps += [model(idx[:, t:t + 1], cache=cache).logits for t in range(4, 14)]
    torch.testing.assert_close(torch.cat(steps, dim=1), full, rtol=0, atol=1e-5)


def test_gpt_oss_experts_refuse_other_backends():
    cfg = tf.GptOssConfig(**{**COMMON, "num_local_experts": 4, "num_experts_per_tok": 2, "head_dim": 8,
                             "num_key_value_heads": 2}).to_dict()
    with pytest.raises(ValueError, match="backend='grouped': experts with biases or the clamped SwiGLU"):
        moe.from_hf(cfg, backend="grouped")


def test_refused_family_names_what_is_missing():
    with pytest.raises(ValueError, match=r"^llama4_text: moe.from_hf does not build it; missing: chunked") as err:
        moe.from_hf({"model_type": "llama4_text", "hidden_size": 32})
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("family", ["gpt_oss", "qwen2_moe-sparse-step-2"])
def test_forward_flops_of_new_families_equal_accounting(family):
    """FlopCounterMode (2 per multiply-add, the full T x T score matrix, sinks' explicit matmuls included)
    equals accounting.forward_flops for a sinks/window/biased-expert model and an interleaved one."""
    from torch.utils.flop_counter import FlopCounterMode
    from accounting.flops import forward_flops
    model = moe.from_hf(tiny_hf_model(family).config)
    idx = torch.randint(0, 96, (2, 20), generator=torch.Generator().manual_seed(7))
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        out = model(idx)
    assigned = moe.routed_assignments(out.router_stats)
    want = forward_flops(model.shape, 20, batch=2, flops_per_mac=2, routed_assignments=assigned)["total"]
    assert counter.get_total_flops() == want
    assert sum(p.numel() for p in model.parameters()) == count_parameters(model.shape).total


@pytest.mark.parametrize("kind", ["interleaved", "every-layer", "multimodal"])
def test_llama4_placement_is_priced_as_transformers_builds_it(kind):
    """Llama 4: MoE every other layer (interleave_moe_layer_step=2, as Maverick), or every layer (Scout);
    accounting's total equals transformers' Llama4ForCausalLM numel on the meta device (the text model)."""
    kw = dict(vocab_size=96, hidden_size=32, num_hidden_layers=4, num_attention_heads=4, num_key_value_heads=2,
              head_dim=8, intermediate_size=16, intermediate_size_mlp=40, num_local_experts=4, num_experts_per_tok=1,
              interleave_moe_layer_step=2 if kind == "interleaved" else 1)
    text = tf.Llama4TextConfig(**kw)
    with torch.device("meta"):
        hf = tf.Llama4ForCausalLM(text)
    cfg = (tf.Llama4Config(text_config=kw, vision_config={}).to_dict() if kind == "multimodal"
           else text.to_dict())
    from accounting.hf_config import shape_from_hf_config
    shape = shape_from_hf_config(cfg)
    moe_layers = [i for i, layer in enumerate(hf.model.layers) if layer.is_moe_layer]
    assert [i for i in range(4) if shape.is_moe_layer(i)] == moe_layers
    assert shape.moe_layer_pattern == ("DMDM" if kind == "interleaved" else "")
    assert count_parameters(shape).total == sum(p.numel() for p in hf.parameters())


def test_sliding_window_without_sinks_runs_sdpa_with_the_same_window():
    """A window without sinks goes through SDPA with a boolean mask: it equals the explicit sink path with
    sinks at -1e9 (no mass on the sink), and cached decoding past the window equals the full forward."""
    from accounting.shapes import ModelShape
    import dense
    shape = ModelShape(vocab_size=64, d_model=32, n_layers=2, n_heads=4, n_kv_heads=2, attention="gqa", seq_len=32,
                       ffn_kind="swiglu", norm_kind="rmsnorm", sliding_window=5, window_layer_pattern="SF")
    torch.manual_seed(8)
    plain = dense.Transformer(shape).eval()
    sinks = dense.Transformer(shape.replace(attention_sinks=True)).eval()
    sinks.load_state_dict({**plain.state_dict(), **{f"blocks.{i}.attn.sinks": torch.full((4,), -1e9) for i in range(2)}})
    unwindowed = dense.Transformer(shape.replace(sliding_window=0, window_layer_pattern="")).eval()
    unwindowed.load_state_dict(plain.state_dict())
    idx = torch.randint(0, 64, (2, 20), generator=torch.Generator().manual_seed(9))
    with torch.no_grad():
        want = plain(idx).logits
        torch.testing.assert_close(sinks(idx).logits, want, rtol=0, atol=1e-5)
        assert (unwindowed(idx).logits - want).abs().max() > 1e-3
        cache = plain.new_cache(2)
        steps = [plain(idx[:, :3], cache=cache).logits] + [plain(idx[:, t:t + 1], cache=cache).logits
                                                           for t in range(3, 20)]
    torch.testing.assert_close(torch.cat(steps, dim=1), want, rtol=0, atol=1e-5)
