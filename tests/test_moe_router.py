"""Router: top-k, gate weights, Switch aux loss on a hand-built case, capacity dropping, loss-free bias
balancing a skewed router, collapse detection."""
from __future__ import annotations

import math

import pytest
import torch

import moe
from accounting import ModelShape
from moe.balance import detect_collapse
from moe.moe_ffn import MoEFFN
from moe.router import Router, RouterConfig

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def make_shape(E=4, k=2, d=8):
    return ModelShape(vocab_size=32, d_model=d, n_layers=1, n_heads=2, seq_len=8, n_experts=E, top_k=k,
                      d_expert=8)


@pytest.mark.parametrize("gating", ["softmax", "sigmoid"])
@pytest.mark.parametrize("normalize", [True, False])
def test_topk_and_weights(gating, normalize):
    torch.manual_seed(0)
    shape = make_shape(E=6, k=3).replace(router_scoring=gating, router_norm_topk=normalize, router_scale=2.0)
    router = Router(shape, RouterConfig())
    x = torch.randn(20, 8)
    r = router(x)
    logits = x @ router.gate.weight.t()
    scores = logits.softmax(-1) if gating == "softmax" else logits.sigmoid()
    ref = scores.argsort(dim=-1, descending=True)[:, :3]
    assert torch.equal(r.indices.sort(-1).values, ref.sort(-1).values)
    picked = scores.gather(-1, r.indices)
    expected = picked / picked.sum(-1, keepdim=True) if normalize else picked
    torch.testing.assert_close(r.weights, 2.0 * expected)
    if normalize:
        torch.testing.assert_close(r.weights.sum(-1), torch.full((20,), 2.0))
    torch.testing.assert_close(r.probs.sum(-1), torch.ones(20))
    assert r.counts.sum() == 60 and r.keep is None


def test_aux_loss_on_a_hand_built_case():
    """Four tokens, four experts, top-1: logits 2 on experts [0, 0, 1, 2] and 0 elsewhere."""
    shape = make_shape(E=4, k=1, d=4)
    ffn = MoEFFN(shape, RouterConfig(balancing="aux_loss", aux_loss_coef=0.1))
    with torch.no_grad():
        ffn.router.gate.weight.copy_(2 * torch.eye(4))
    choice = [0, 0, 1, 2]
    x = torch.eye(4)[choice]                               # token t has logit 2 on expert choice[t]
    ffn(x.view(1, 4, 4))
    hi, lo = math.exp(2) / (math.exp(2) + 3), 1 / (math.exp(2) + 3)
    f = [2 / 4, 1 / 4, 1 / 4, 0]
    P = [(2 * hi + 2 * lo) / 4, (hi + 3 * lo) / 4, (hi + 3 * lo) / 4, lo]
    expected = 0.1 * 4 * sum(fi * pi for fi, pi in zip(f, P))
    assert abs(ffn.last_aux_losses["load_balance"].item() - expected) < 1e-6
    s = ffn.last_stats.to_dict()
    assert s["tokens_per_expert"] == [2.0, 1.0, 1.0, 0.0] and s["load_fraction"] == f
    assert abs(s["max_vio"] - 1.0) < 1e-6                  # max 2 / mean 1 - 1
    assert abs(s["cv"] - math.sqrt(0.5)) < 1e-6            # std of [2,1,1,0] = sqrt(0.5), mean 1
    entropy = -(hi * math.log(hi) + 3 * lo * math.log(lo))
    assert abs(s["entropy"] - entropy) < 1e-5
    zl = math.log(math.exp(2) + 3) ** 2
    assert abs(s["z_loss"] - zl) < 1e-4 and s["dropped_fraction"] == 0.0


def test_capacity_drops_overflow_first_choices_first():
    shape = make_shape(E=4, k=2, d=4)
    router = Router(shape, RouterConfig(capacity_factor=1.0))
    with torch.no_grad():
        router.gate.weight.copy_(torch.tensor([[4.0, 0, 0, 0], [2.0, 0, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0]]))
    r = router(torch.ones(8, 4))                          # every token: first choice 0, second 1
    assert router.capacity(8) == 4                        # ceil(1.0 * 8 * 2 / 4)
    assert r.keep[:4].all() and not r.keep[4:].any()      # experts 0 and 1 accept the first 4 tokens
    assert r.n_dropped.item() == 8


def skewed_ffn(balancing: str, E: int = 8, d: int = 16, seed: int = 0):
    """An MoE layer whose router sends nearly every token to expert 0 (sigmoid gating, top-1)."""
    torch.manual_seed(seed)
    shape = ModelShape(vocab_size=32, d_model=d, n_layers=1, n_heads=2, seq_len=8, n_experts=E, top_k=1,
                       d_expert=8, router_scoring="sigmoid")
    ffn = MoEFFN(shape, RouterConfig(balancing=balancing, bias_update_rate=0.02))
    u = torch.nn.functional.normalize(torch.ones(d), dim=0)
    with torch.no_grad():
        ffn.router.gate.weight.normal_(0, 0.5).add_(4 * u * (torch.arange(E) == 0)[:, None])
    return ffn, lambda: torch.randn(4, 64, d) * 0.5 + 2 * u  # every token shares direction u


def test_loss_free_bias_reduces_max_vio_without_gradients():
    ffn, batch = skewed_ffn("loss_free")
    ffn.train()
    weight_before = ffn.router.gate.weight.clone()
    history = []
    with torch.no_grad():
        for _ in range(80):
            ffn(batch())
            history.append(float(ffn.last_stats.max_vio))
            ffn.update_router_bias()
    assert history[0] > 5.0                                # collapsed: ~E - 1 = 7
    assert max(history[-10:]) < 1.5 and sum(history[-10:]) / 10 < 0.3 * history[0]
    assert torch.equal(ffn.router.gate.weight, weight_before)  # only the bias buffer moved
    assert ffn.router.bias[0] < 0 and not ffn.router.bias.requires_grad
    assert "bias" in dict(ffn.router.named_buffers()) and ffn.last_stats.bias is not None


def test_loss_free_update_through_the_model():
    torch.manual_seed(0)
    shape = ModelShape(vocab_size=32, d_model=16, n_layers=2, n_heads=2, seq_len=8, n_experts=4, top_k=2,
                       d_expert=8)
    model = moe.build_model(shape, RouterConfig(balancing="loss_free", bias_update_rate=0.1))
    idx = torch.randint(0, 32, (2, 8))
    model.eval()(idx)
    model.update_router_biases()                            # eval forwards accumulate nothing
    assert all(b.ffn.router.bias.abs().sum() == 0 for b in model.blocks)
    model.train()(idx)
    model.update_router_biases()
    assert all(b.ffn.router.bias.abs().sum() > 0 for b in model.blocks)
    assert all(b.ffn.router.load_accum.sum() == 0 for b in model.blocks)


def test_collapse_detected_without_balancing():
    ffn, batch = skewed_ffn("none")
    with torch.no_grad():
        ffn(batch())
    found = detect_collapse([ffn.last_stats])
    assert len(found) == 1 and found[0].top_expert == 0 and found[0].top_share > 0.9
    assert "collapse" in found[0].message and found[0].max_vio > 5
    assert detect_collapse([ffn.last_stats.to_dict()]) == found      # works on logged dicts too
    # a random router over many tokens is healthy
    torch.manual_seed(0)
    healthy = MoEFFN(make_shape(E=4, k=2, d=16), RouterConfig())
    with torch.no_grad():
        healthy(torch.randn(2, 256, 16))
    assert detect_collapse([healthy.last_stats]) == []


@pytest.mark.parametrize("bad", [dict(balancing="sinkhorn"), dict(capacity_factor=-1.0), dict(capacity_factor=True),
                                 dict(z_loss_coef=-0.1), dict(jitter_eps=-0.5), dict(aux_loss_coef=float("nan")),
                                 dict(bias_update_rate="fast")])
def test_router_config_validation(bad):
    with pytest.raises(ValueError, match="RouterConfig"):
        RouterConfig(**bad)


def test_router_jitter_only_in_training():
    torch.manual_seed(0)
    shape = make_shape(E=6, k=2)
    router = Router(shape, RouterConfig(jitter_eps=0.5))
    x = torch.randn(64, shape.d_model)
    router.train()
    assert not torch.equal(router(x).logits, router(x).logits)
    router.eval()
    assert torch.equal(router(x).logits, router(x).logits)


def test_routing_function_comes_from_the_shape_only():
    torch.manual_seed(0)
    shape = make_shape(E=8, k=2).replace(router_scoring="sigmoid", router_norm_topk=False, router_scale=2.0)
    x = torch.randn(32, shape.d_model)
    r = Router(shape, RouterConfig())
    out = r(x)
    torch.testing.assert_close(out.weights, 2.0 * torch.sigmoid(out.logits).gather(-1, out.indices))
    r2 = Router(shape.replace(router_scoring="softmax", router_norm_topk=True, router_scale=1.0), RouterConfig())
    r2.load_state_dict(r.state_dict())
    torch.testing.assert_close(r2(x).weights.sum(-1), torch.ones(32))
    # the former RouterConfig overrides of the routing function are refused, naming the shape's field
    for old, new in (("gating", "router_scoring"), ("normalize_topk", "router_norm_topk"),
                     ("route_scale", "router_scale")):
        with pytest.raises(ValueError, match=f"unknown RouterConfig field.*{old} is the shape's {new}"):
            RouterConfig.from_any({old: 1.0})


def test_loss_free_update_runs_as_an_optimizer_pre_hook():
    torch.manual_seed(0)
    shape = ModelShape(vocab_size=32, d_model=16, n_layers=2, n_heads=2, seq_len=8, n_experts=4, top_k=2,
                       d_expert=8)
    model = moe.build_model(shape, RouterConfig(balancing="loss_free", bias_update_rate=0.1)).train()
    opt = torch.optim.SGD(model.parameters(), lr=0.0)
    assert moe.register_bias_update(model, opt) is not None
    idx = torch.randint(0, 32, (2, 8))
    model(idx, idx).loss.backward()
    opt.step()
    assert all(b.ffn.router.bias.abs().sum() > 0 for b in model.blocks)
    assert all(b.ffn.router.load_accum.sum() == 0 for b in model.blocks)
    dense_model = moe.build_model(ModelShape(vocab_size=32, d_model=16, n_layers=2, n_heads=2, seq_len=8))
    assert moe.register_bias_update(dense_model, torch.optim.SGD(dense_model.parameters(), lr=0.0)) is None


def test_logged_load_balance_is_router_stats():
    """experiments.metrics' load balance of logged counts and its assignment count are moe.balance's."""
    from experiments.metrics import load_balance, routed_assignments as logged_assignments
    from moe.balance import balance_stats, routed_assignments
    counts = torch.tensor([10.0, 12.0, 8.0, 30.0])
    probs = torch.full((15, 4), 0.25)
    s = balance_stats(0, counts, probs, torch.tensor(6), torch.tensor(1.0), torch.tensor(0.0), None)
    d = s.to_dict()
    lb = load_balance(d["tokens_per_expert"])
    assert lb["load_fraction"] == pytest.approx(d["load_fraction"], rel=1e-6)
    assert (lb["cv"], lb["max_vio"]) == pytest.approx((d["cv"], d["max_vio"]), rel=1e-6)
    assert routed_assignments([s]) == logged_assignments([d]) == 60 - 6
    assert logged_assignments([]) is None
