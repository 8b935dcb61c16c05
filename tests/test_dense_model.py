"""Dense transformer: exact parameter and flop counts against accounting, causality, bad shapes."""
from __future__ import annotations

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

import dense
from accounting import ModelShape, ShapeError, count_parameters, forward_flops
from _model_helpers import n_params, touched_parameters  # noqa: E402

BASE = dict(vocab_size=96, d_model=32, n_layers=2, n_heads=4, seq_len=32)
SHAPES = {
    "gelu-layernorm-untied": dict(),
    "swiglu-rmsnorm-tied": dict(ffn_kind="swiglu", norm_kind="rmsnorm", tied_embeddings=True, d_ff=48),
    "gqa": dict(attention="gqa", n_kv_heads=2),
    "gqa-headdim-nopos": dict(attention="gqa", n_kv_heads=1, head_dim=12, position="none"),
    "mla-qlora": dict(attention="mla", q_lora_rank=12, kv_lora_rank=16, qk_nope_head_dim=8,
                      qk_rope_head_dim=4, v_head_dim=6),
    "mla-noqlora-swiglu-rms": dict(attention="mla", kv_lora_rank=8, qk_nope_head_dim=4, qk_rope_head_dim=6,
                                   v_head_dim=8, ffn_kind="swiglu", norm_kind="rmsnorm"),
}

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


@pytest.fixture(params=list(SHAPES), ids=list(SHAPES))
def shape(request) -> ModelShape:
    return ModelShape(**BASE, **SHAPES[request.param])


def test_parameter_count_matches_accounting(shape):
    torch.manual_seed(0)
    assert n_params(dense.Transformer(shape)) == count_parameters(shape).total


def test_active_parameters_match_accounting(shape):
    torch.manual_seed(0)
    touched, _ = touched_parameters(dense.Transformer(shape))
    assert touched == count_parameters(shape).active


@pytest.mark.parametrize("batch,n", [(1, 7), (2, 16)])
def test_forward_flops_match_accounting(shape, batch, n):
    torch.manual_seed(0)
    model = dense.Transformer(shape)
    idx = torch.randint(0, shape.vocab_size, (batch, n))
    with FlopCounterMode(display=False) as counter:
        model(idx)
    assert counter.get_total_flops() == forward_flops(shape, n, batch=batch, flops_per_mac=2)["total"]


def test_attention_flops_are_counted_on_cpu():
    """Without dense.flop_formulas FlopCounterMode counts CPU attention as 0; with it, 4 B H T^2 hd."""
    q, k = torch.randn(2, 4, 16, 8), torch.randn(2, 2, 16, 8)
    with FlopCounterMode(display=False) as counter:
        torch.nn.functional.scaled_dot_product_attention(q, k, k, is_causal=True, enable_gqa=True)
    assert counter.get_total_flops() == 4 * 2 * 4 * 16 * 16 * 8


def test_causality(shape):
    torch.manual_seed(0)
    model = dense.Transformer(shape).eval()
    idx = torch.randint(0, shape.vocab_size, (2, 20))
    j = 11
    changed = idx.clone()
    changed[:, j] = (changed[:, j] + 1) % shape.vocab_size
    a, b = model(idx).logits, model(changed).logits
    torch.testing.assert_close(a[:, :j], b[:, :j], rtol=0, atol=0)
    assert (a[:, j:] - b[:, j:]).abs().max() > 1e-4


def test_loss_is_cross_entropy_and_has_no_aux():
    shape = ModelShape(**BASE)
    model = dense.Transformer(shape)
    idx = torch.randint(0, shape.vocab_size, (2, 10))
    out = model(idx, idx)
    assert out.aux_losses == {} and not hasattr(out, "router_stats")
    assert torch.equal(out.loss, out.lm_loss)
    ref = torch.nn.functional.cross_entropy(out.logits.reshape(-1, shape.vocab_size), idx.reshape(-1))
    torch.testing.assert_close(out.loss, ref)


@pytest.mark.parametrize("bad,match", [
    (dict(d_model=30, n_heads=4), "not divisible"),
    (dict(top_k=2), "MoE fields"),
    (dict(n_experts=4, top_k=5), "exceeds n_experts"),
    (dict(attention="gqa", n_kv_heads=3), "multiple"),
])
def test_bad_shapes_raise_one_clear_error(bad, match):
    with pytest.raises(ShapeError, match=match):
        dense.Transformer(ModelShape(**{**BASE, **bad}))


@pytest.mark.parametrize("bad,match", [
    (dict(attention="mla", kv_lora_rank=16, qk_nope_head_dim=8, qk_rope_head_dim=3, v_head_dim=8),
     "even qk_rope_head_dim"),
    (dict(mtp_modules=1), "mtp_modules"),
    (dict(n_experts=4, top_k=2), "moe.build_model"),
    (dict(head_dim=7), "even head_dim"),
])
def test_unbuildable_shapes_raise_at_construction(bad, match):
    shape = ModelShape(**{**BASE, **bad})  # accounting can price these
    with pytest.raises(ValueError, match=match):
        dense.Transformer(shape)
