"""MoE model: exact parameter, active-parameter and flop counts against accounting; aux losses in the loss;
cache decoding; construction errors."""
from __future__ import annotations

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

import dense
import moe
from accounting import ModelShape, ShapeError, count_parameters, forward_flops
from _model_helpers import n_params, touched_parameters  # noqa: E402

BASE = dict(vocab_size=96, d_model=32, n_layers=2, n_heads=4, seq_len=32, n_experts=4, top_k=2, d_expert=16)
SHAPES = {
    "gelu-layernorm-untied": dict(),
    "swiglu-shared-tied-rms": dict(ffn_kind="swiglu", norm_kind="rmsnorm", tied_embeddings=True,
                                   n_shared_experts=2, d_shared_expert=8),
    "first-dense-gqa": dict(first_dense_layers=1, attention="gqa", n_kv_heads=2, d_ff=40, top_k=1),
    "deepseekish": dict(ffn_kind="swiglu", norm_kind="rmsnorm", n_experts=8, top_k=3, n_shared_experts=1,
                        first_dense_layers=1, n_layers=3),
    "deepseek-mla": dict(ffn_kind="swiglu", norm_kind="rmsnorm", n_experts=8, top_k=2, n_shared_experts=1,
                         first_dense_layers=1, attention="mla", q_lora_rank=12, kv_lora_rank=16,
                         qk_nope_head_dim=8, qk_rope_head_dim=4, v_head_dim=8),
    # the fields of issue 15: biases, q/k norms, gated shared expert, bias-free LayerNorm, V3's router
    "qwen2moe-like": dict(ffn_kind="swiglu", norm_kind="rmsnorm", attention="gqa", n_kv_heads=2, qkv_bias=True,
                          qk_norm="head", n_shared_experts=1, d_shared_expert=24, shared_expert_gate=True,
                          norm_eps=1e-6, rope_theta=1e6, router_norm_topk=False),
    "olmoe-dbrx-like": dict(ffn_kind="swiglu", norm_kind="layernorm_nobias", qk_norm="full", clip_qkv=0.5),
    "v3-router-yarn": dict(ffn_kind="swiglu", norm_kind="rmsnorm", n_experts=8, top_k=2, n_shared_experts=1,
                           first_dense_layers=1, attention="mla", q_lora_rank=12, kv_lora_rank=16,
                           qk_nope_head_dim=8, qk_rope_head_dim=4, v_head_dim=8, router_scoring="sigmoid",
                           router_groups=4, router_topk_groups=2, router_group_score="top2_sum",
                           router_score_bias=True, router_scale=2.5, rope_scaling="yarn", rope_factor=4.0,
                           rope_original_max_len=8, rope_mscale=1.0, rope_mscale_all_dim=1.0),
}
ROUTERS = {
    "softmax-aux": moe.RouterConfig(balancing="aux_loss", z_loss_coef=1e-3),
    "sigmoid-lossfree": moe.RouterConfig(balancing="loss_free"),
}
ROUTING = {"softmax-aux": {}, "sigmoid-lossfree": dict(router_scoring="sigmoid", router_scale=2.5)}
"""The routing function each router case is tested with: the shape's fields (the router config holds only
training settings)."""

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


@pytest.fixture(params=list(SHAPES), ids=list(SHAPES))
def shape(request) -> ModelShape:
    return ModelShape(**{**BASE, **SHAPES[request.param]})


@pytest.mark.parametrize("backend", ["loop", "grouped"])
def test_parameter_count_matches_accounting(shape, backend):
    assert n_params(moe.build_model(shape, ROUTERS["softmax-aux"], backend)) == count_parameters(shape).total


@pytest.mark.parametrize("router", list(ROUTERS))
def test_active_parameters_from_the_routers_choice(shape, router):
    torch.manual_seed(0)
    shape = shape.replace(**ROUTING[router])
    model = moe.build_model(shape, ROUTERS[router], "loop")
    touched, picked = touched_parameters(model, token=5)
    # the experts that received gradient are exactly the ones the router chose, k per MoE layer
    model(torch.tensor([[5]]))
    out = model(torch.tensor([[5]]))
    chosen = [set(torch.nonzero(s.tokens_per_expert).flatten().tolist()) for s in out.router_stats]
    assert picked == chosen and all(len(p) == shape.top_k for p in picked)
    assert len(picked) == shape.n_moe_layers
    assert touched == count_parameters(shape).active


@pytest.mark.parametrize("backend", ["loop", "grouped"])
@pytest.mark.parametrize("capacity", [None, 1.0])
def test_forward_flops_match_accounting(shape, backend, capacity):
    torch.manual_seed(0)
    model = moe.build_model(shape, moe.RouterConfig(capacity_factor=capacity), backend)
    batch, n = 2, 16
    idx = torch.randint(0, shape.vocab_size, (batch, n))
    with FlopCounterMode(display=False) as counter:
        out = model(idx)
    assigned = moe.routed_assignments(out.router_stats)
    if capacity is None:
        assert assigned == batch * n * shape.top_k * shape.n_moe_layers
    expected = forward_flops(shape, n, batch=batch, flops_per_mac=2, routed_assignments=assigned)["total"]
    assert counter.get_total_flops() == expected


def test_grouped_mm_formula_is_registered():
    from torch.utils.flop_counter import flop_registry
    assert torch.ops.aten._grouped_mm in flop_registry
    x, w = torch.randn(10, 8), torch.randn(3, 8, 4)
    with FlopCounterMode(display=False) as counter:
        torch._grouped_mm(x, w, offs=torch.tensor([3, 7, 10], dtype=torch.int32))
    assert counter.get_total_flops() == 2 * 10 * 8 * 4


def test_aux_losses_are_in_the_loss():
    torch.manual_seed(0)
    shape = ModelShape(**BASE)
    model = moe.build_model(shape, moe.RouterConfig(balancing="aux_loss", aux_loss_coef=0.1, z_loss_coef=0.01))
    idx = torch.randint(0, shape.vocab_size, (2, 12))
    out = model(idx, idx)
    assert set(out.aux_losses) == {"load_balance", "z_loss"}
    torch.testing.assert_close(out.loss, out.lm_loss + out.aux_losses["load_balance"] + out.aux_losses["z_loss"])
    per_layer = sum(0.1 * s.aux_loss for s in out.router_stats)
    torch.testing.assert_close(out.aux_losses["load_balance"].detach(), per_layer)
    assert len(out.router_stats) == shape.n_moe_layers
    out.loss.backward()
    assert model.blocks[0].ffn.router.gate.weight.grad.abs().sum() > 0
    d = out.router_stats[0].to_dict()
    assert abs(sum(d["load_fraction"]) - 1) < 1e-6 and sum(d["tokens_per_expert"]) == 2 * 12 * 2
    # no balancing, no z-loss: nothing extra
    plain = moe.build_model(shape)(idx, idx)
    assert plain.aux_losses == {} and torch.equal(plain.loss, plain.lm_loss)


def test_loop_and_grouped_models_agree():
    torch.manual_seed(0)
    shape = ModelShape(**{**BASE, **SHAPES["deepseekish"], **ROUTING["sigmoid-lossfree"]})
    a = moe.build_model(shape, ROUTERS["sigmoid-lossfree"], "loop")
    b = moe.build_model(shape, ROUTERS["sigmoid-lossfree"], "grouped")
    b.load_state_dict(a.state_dict())
    idx = torch.randint(0, shape.vocab_size, (2, 16))
    la, lb = a(idx, idx).loss, b(idx, idx).loss
    torch.testing.assert_close(la, lb, rtol=1e-6, atol=1e-6)
    la.backward(), lb.backward()
    for (name, pa), pb in zip(a.named_parameters(), b.parameters()):
        torch.testing.assert_close(pa.grad, pb.grad, rtol=1e-5, atol=1e-6, msg=name)


def test_moe_cached_decode_matches_full_forward():
    torch.manual_seed(0)
    shape = ModelShape(**{**BASE, **SHAPES["swiglu-shared-tied-rms"], **ROUTING["sigmoid-lossfree"]})
    model = moe.build_model(shape, ROUTERS["sigmoid-lossfree"], "grouped").eval()
    idx = torch.randint(0, shape.vocab_size, (1, 12))
    with torch.no_grad():
        full = model(idx).logits
        cache = model.new_cache(1)
        steps = [model(idx[:, :4], cache=cache).logits] + [model(idx[:, t:t + 1], cache=cache).logits
                                                         for t in range(4, 12)]
    torch.testing.assert_close(torch.cat(steps, 1), full, rtol=1e-5, atol=1e-5)
    assert torch.equal(model.generate(idx[:, :3], 6, temperature=0),
                       model.generate(idx[:, :3], 6, temperature=0, use_cache=False))


def test_build_model_dense_case():
    shape = ModelShape(vocab_size=64, d_model=32, n_layers=1, n_heads=4, seq_len=8)
    assert type(moe.build_model(shape, None, "grouped")) is dense.Transformer


@pytest.mark.parametrize("kwargs,match", [
    (dict(backend="cuda-magic"), "unknown expert backend"),
    (dict(router=dict(gating="relu")), "gating is the shape's router_scoring"),
    (dict(router=dict(balancing="sinkhorn")), "balancing"),
    (dict(router=dict(capacity_factor=0)), "capacity_factor"),
    (dict(router=dict(aux_loss_coef=-1)), "aux_loss_coef"),
    (dict(router=dict(jitter_eps=-1)), "jitter_eps"),
    (dict(router=dict(temperature=2)), "unknown RouterConfig"),
    (dict(backend="megablocks", router=dict(capacity_factor=1.25)), "dropless"),
])
def test_bad_configs_raise_one_value_error(kwargs, match):
    with pytest.raises(ValueError, match=match):
        moe.build_model(ModelShape(**BASE), **kwargs)


@pytest.mark.parametrize("bad,match", [
    (dict(top_k=5), "exceeds n_experts"),
    (dict(n_experts=0), "MoE fields"),
    (dict(d_model=30), "not divisible"),
])
def test_bad_moe_shapes(bad, match):
    with pytest.raises(ShapeError, match=match):
        moe.build_model(ModelShape(**{**BASE, **bad}))


def test_mla_moe_decodes_from_the_compressed_cache():
    """DeepSeek-style MoE with MLA: cached decode (absorbed latent attention) equals the full forward."""
    torch.manual_seed(0)
    shape = ModelShape(**{**BASE, **SHAPES["deepseek-mla"], **ROUTING["sigmoid-lossfree"]})
    model = moe.build_model(shape, router=ROUTERS["sigmoid-lossfree"]).eval()
    idx = torch.randint(0, shape.vocab_size, (2, 12))
    with torch.no_grad():
        full = model(idx).logits
        cache = model.new_cache(2)
        pieces = [model(idx[:, :5], cache=cache).logits]
        pieces += [model(idx[:, t:t + 1], cache=cache).logits for t in range(5, 12)]
    assert type(cache).__name__ == "LatentCache"
    torch.testing.assert_close(torch.cat(pieces, dim=1), full, rtol=1e-5, atol=1e-5)


def test_mtp_module_parameters_and_flops_match_accounting():
    """DeepSeek-V3's MTP module: parameters == accounting's mtp_total; the flops it adds to a forward with
    targets == forward_flops(include_mtp=True)['mtp'] over the T - 1 positions it predicts."""
    shape = ModelShape(**{**BASE, **SHAPES["v3-router-yarn"], "mtp_modules": 1})
    torch.manual_seed(0)
    model = moe.build_model(shape, moe.RouterConfig(), "loop")
    c = count_parameters(shape)
    assert n_params(model.mtp) == c.mtp_total and n_params(model) == c.total_with_mtp
    batch, n = 2, 16
    idx = torch.randint(0, shape.vocab_size, (batch, n + 1))
    with FlopCounterMode(display=False) as plain:
        model(idx[:, :-1])
    with FlopCounterMode(display=False) as with_targets:
        out = model(idx[:, :-1], targets=idx[:, 1:])
    assert "mtp" in out.aux_losses
    expected = forward_flops(shape, n - 1, batch=batch, flops_per_mac=2, include_mtp=True)["mtp"]
    assert with_targets.get_total_flops() - plain.get_total_flops() == expected
