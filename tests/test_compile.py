"""torch.compile on the CPU: the grouped MoE traces without graph breaks, and compiled training and
forward/backward equal eager mode (fp32)."""
from __future__ import annotations

import time

import pytest
import torch

import moe
from accounting.shapes import ModelShape
from moe.experts import GroupedExperts
from moe.moe_ffn import MoEFFN
from moe.router import RouterConfig


def _shape(**kw) -> ModelShape:
    base = dict(vocab_size=64, seq_len=16, d_model=32, n_layers=2, n_heads=4, d_ff=64, n_experts=8, top_k=2,
                d_expert=24, ffn_kind="swiglu")
    base.update(kw)
    return ModelShape(**base)


@pytest.mark.parametrize("kind", ["swiglu", "gelu"])
@pytest.mark.parametrize("d_expert", [16, 48])        # fold "h" and fold "out"
@pytest.mark.parametrize("capacity", [None, 0.5])     # dropless, and with drops (weight-0 rows)
def test_traceable_forward_equals_eager_grouped(kind, d_expert, capacity):
    torch.manual_seed(0)
    shape = _shape(ffn_kind=kind, d_expert=d_expert)
    layer = MoEFFN(shape, RouterConfig(capacity_factor=capacity), backend="grouped")
    x = torch.randn(40, shape.d_model, requires_grad=True)
    r = layer.router(x)
    if capacity is not None:
        assert not r.keep.all()
    grads = []
    for fn in (layer.experts.forward, layer.experts.traceable_forward):
        y = fn(x, r.indices, r.weights, r.keep)
        gx, gw, gu, gd = torch.autograd.grad((y * torch.linspace(-1, 1, y.numel()).view_as(y)).sum(),
                                             [x, layer.experts.w_gate if kind == "swiglu" else layer.experts.w_up,
                                              layer.experts.w_up, layer.experts.w_down],
                                             retain_graph=True)
        grads.append((y, gx, gw, gd))
    for a, b in zip(*grads):
        torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-6)


def test_grouped_moe_layer_has_no_graph_breaks():
    torch.manual_seed(0)
    shape = _shape()
    for cfg in (RouterConfig(), RouterConfig(capacity_factor=1.0)):
        layer = MoEFFN(shape, cfg, backend="grouped")
        x = torch.randn(2, 8, shape.d_model)
        ex = torch._dynamo.explain(lambda t: layer(t).square().sum())(x)
        assert ex.graph_break_count == 0, [b.reason for b in ex.break_reasons]
        assert ex.graph_count == 1


def _tiny(name: str, *overrides: str):
    from experiments.bench.paired import build
    from experiments.trainer import build_model
    spec = build([name], "demo", "tiny", ["model.shape.n_layers=2", "model.shape.seq_len=32", *overrides])[name]
    torch.manual_seed(0)
    return spec, build_model(spec)


def _train_losses(spec, model, steps: int, compiled: bool) -> list[float]:
    import copy

    from experiments.trainer import make_optimizer
    model = copy.deepcopy(model).train()
    opt = make_optimizer(model, spec.cfg["optim"], torch.device("cpu"))
    moe.register_bias_update(model, opt)
    fn = torch.compile(model) if compiled else model
    gen = torch.Generator().manual_seed(1)
    batches = [torch.randint(0, spec.shape.vocab_size, (4, spec.shape.seq_len + 1), generator=gen) for _ in range(2)]
    losses = []
    for step in range(steps):
        idx = batches[step % 2]        # two batches in turn: the loss falls within 20 steps
        loss = fn(idx[:, :-1], idx[:, 1:]).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        losses.append(loss.item())
    return losses


@pytest.mark.slow
def test_compiled_training_equals_eager_moe_grouped_20_steps():
    torch.set_num_threads(1)
    torch._dynamo.reset()
    spec, model = _tiny("moe")
    assert spec.cfg["model"]["backend"] == "grouped"
    eager = _train_losses(spec, model, 20, compiled=False)
    t0 = time.perf_counter()
    compiled = _train_losses(spec, model, 20, compiled=True)
    print(f"moe: 20 compiled steps incl. compile {time.perf_counter() - t0:.1f} s")
    assert eager[-1] < eager[1]            # it trains (steps 1 and 19 see the same batch)
    for a, b in zip(eager, compiled):
        assert b == pytest.approx(a, rel=1e-5)


@pytest.mark.slow
@pytest.mark.parametrize("name,overrides", [("dense", ()), ("deepseek_mla", ("model.shape.mtp_modules=1",))])
def test_compiled_forward_backward_equals_eager(name, overrides):
    torch.set_num_threads(1)
    torch._dynamo.reset()
    spec, model = _tiny(name, *overrides)
    idx = torch.randint(0, spec.shape.vocab_size, (2, spec.shape.seq_len + 1), generator=torch.Generator().manual_seed(2))
    results = []
    for fn in (model, torch.compile(model)):
        model.zero_grad(set_to_none=True)
        out = fn(idx[:, :-1], idx[:, 1:])
        out.loss.backward()
        results.append((out.loss.detach(), [p.grad.clone() for p in model.parameters() if p.grad is not None]))
    (la, ga), (lb, gb) = results
    torch.testing.assert_close(lb, la, rtol=1e-5, atol=0)
    assert len(ga) == len(gb) > 0
    for a, b in zip(ga, gb):
        torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-6)
