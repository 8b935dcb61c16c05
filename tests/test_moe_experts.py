"""Expert backends: loop and grouped agree (fp32, outputs and gradients); megablocks agrees on a GPU."""
from __future__ import annotations

import pytest
import torch

from accounting import ModelShape
from moe.experts import GroupedExperts, LoopExperts, MEGABLOCKS_INSTALL, make_experts
from moe.sorted_experts import per_expert_mm

BASE = dict(vocab_size=64, d_model=32, n_layers=2, n_heads=4, seq_len=16, n_experts=6, top_k=2, d_expert=24)

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def routing(N: int, E: int, k: int, generator=None):
    logits = torch.randn(N, E, generator=generator)
    weights, indices = logits.softmax(-1).topk(k, dim=-1)
    return indices, weights


@pytest.mark.parametrize("kind", ["gelu", "swiglu"])
@pytest.mark.parametrize("with_drops", [False, True])
def test_loop_and_grouped_agree(kind, with_drops):
    torch.manual_seed(0)
    shape = ModelShape(**BASE, ffn_kind=kind)
    loop, grouped = LoopExperts(shape), GroupedExperts(shape)
    grouped.load_state_dict(loop.state_dict())
    N = 40
    indices, weights = routing(N, shape.n_experts, shape.top_k)
    indices[:5] = torch.tensor([0, 1])           # make expert 5 possibly empty and 0/1 busy
    keep = torch.rand(N, shape.top_k) > 0.3 if with_drops else None
    x = torch.randn(N, shape.d_model)
    outs, grads = [], []
    for module in (loop, grouped):
        xi, wi = x.clone().requires_grad_(), weights.clone().requires_grad_()
        y = module(xi, indices, wi, keep)
        y.sum().backward()                        # an expanded (zero-stride) gradient: must work
        outs.append(y)
        grads.append([xi.grad, wi.grad] + [p.grad for p in module.parameters()])
    torch.testing.assert_close(outs[0], outs[1], rtol=1e-5, atol=1e-6)
    for ga, gb in zip(*grads):
        torch.testing.assert_close(ga, gb, rtol=1e-5, atol=1e-6)


def test_reference_formula():
    """y[t] = sum_j w[t, j] * expert_{i[t, j]}(x[t]) with a dense per-token evaluation."""
    torch.manual_seed(0)
    shape = ModelShape(**BASE, ffn_kind="swiglu")
    loop = LoopExperts(shape)
    indices, weights = routing(7, shape.n_experts, shape.top_k)
    x = torch.randn(7, shape.d_model)
    expected = torch.stack([
        sum(weights[t, j] * ((torch.nn.functional.silu(x[t] @ loop.w_gate[e]) * (x[t] @ loop.w_up[e]))
                             @ loop.w_down[e]) for j, e in enumerate(indices[t].tolist()))
        for t in range(7)])
    torch.testing.assert_close(loop(x, indices, weights), expected, rtol=1e-5, atol=1e-6)


def test_grouped_rejects_misaligned_widths():
    with pytest.raises(ValueError, match="multiple of 8"):
        GroupedExperts(ModelShape(**{**BASE, "d_expert": 12}))
    assert isinstance(make_experts(ModelShape(**{**BASE, "d_expert": 12}), "loop"), LoopExperts)


def test_megablocks_missing_gives_install_command():
    try:
        import megablocks  # noqa: F401
    except ImportError:
        with pytest.raises(ImportError, match="pip install --no-build-isolation"):
            make_experts(ModelShape(**BASE), "megablocks")
        assert "megablocks" in MEGABLOCKS_INSTALL
    else:
        pytest.skip("megablocks is installed")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("kind", ["gelu", "swiglu"])
def test_megablocks_agrees_in_bf16(kind):
    pytest.importorskip("megablocks")
    torch.manual_seed(0)
    shape = ModelShape(**{**BASE, "d_model": 128, "d_expert": 256, "n_experts": 8}, ffn_kind=kind)
    dev = torch.device("cuda")
    loop = LoopExperts(shape).to(dev, torch.bfloat16)
    grouped = GroupedExperts(shape).to(dev, torch.bfloat16)
    grouped.load_state_dict(loop.state_dict())
    mb = make_experts(shape, "megablocks", device=dev, dtype=torch.bfloat16)
    mb.copy_from(loop)
    N = 512
    indices, weights = routing(N, shape.n_experts, shape.top_k)
    indices, weights = indices.to(dev), weights.to(dev, torch.bfloat16)
    x = torch.randn(N, shape.d_model, device=dev, dtype=torch.bfloat16)
    outs, dx = [], []
    for module in (loop, grouped, mb):
        xi = x.clone().requires_grad_()
        y = module(xi, indices, weights)
        y.float().square().sum().backward()
        outs.append(y.float()), dx.append(xi.grad.float())
    scale = outs[0].abs().max()
    for y, g in zip(outs[1:], dx[1:]):
        assert (y - outs[0]).abs().max() < 2e-2 * scale
        assert (g - dx[0]).abs().max() < 3e-2 * dx[0].abs().max()


@pytest.mark.parametrize("kind", ["gelu", "swiglu"])
@pytest.mark.parametrize("fold", ["h", "out"])
@pytest.mark.parametrize("with_drops", [False, True])
@pytest.mark.parametrize("per_group", [True, False])
def test_grouped_fold_variants_agree_with_loop(kind, fold, with_drops, per_group, monkeypatch):
    """Both places of the routing weight (down projection's input or output) give loop's outputs and
    gradients, including the routing weights' gradient, with and without dropped assignments, with the
    CPU's per-group products into scratch rows and with torch._grouped_mm throughout (other devices)."""
    torch.manual_seed(1)
    shape = ModelShape(**{**BASE, "d_expert": 40}, ffn_kind=kind)
    loop, grouped = LoopExperts(shape), GroupedExperts(shape)
    grouped.load_state_dict(loop.state_dict())
    monkeypatch.setattr(grouped, "fold", fold)
    monkeypatch.setattr(grouped, "per_group_on_cpu", per_group)
    N = 64
    indices, weights = routing(N, shape.n_experts, shape.top_k)
    keep = torch.rand(N, shape.top_k) > 0.4 if with_drops else None
    x, gy = torch.randn(N, shape.d_model), torch.randn(N, shape.d_model)
    res = []
    for module in (loop, grouped):
        xi, wi = x.clone().requires_grad_(), weights.clone().requires_grad_()
        y = module(xi, indices, wi, keep)
        y.backward(gy)
        res.append([y, xi.grad, wi.grad] + [p.grad for p in module.parameters()])
    for a, b in zip(*res):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_grouped_agrees_with_loop_in_bf16():
    """bf16 end to end (no float32 up-cast inside): outputs and gradients near loop's in bf16."""
    torch.manual_seed(2)
    shape = ModelShape(**{**BASE, "d_model": 64, "d_expert": 32}, ffn_kind="swiglu")
    loop = LoopExperts(shape).to(torch.bfloat16)
    grouped = GroupedExperts(shape).to(torch.bfloat16)
    grouped.load_state_dict(loop.state_dict())
    N = 128
    indices, weights = routing(N, shape.n_experts, shape.top_k)
    x, gy = torch.randn(N, shape.d_model), torch.randn(N, shape.d_model)
    res = []
    for module in (loop, grouped):
        xi = x.to(torch.bfloat16).requires_grad_()
        wi = weights.to(torch.bfloat16).requires_grad_()
        y = module(xi, indices, wi)
        y.backward(gy.to(torch.bfloat16))
        assert y.dtype == xi.grad.dtype == wi.grad.dtype == torch.bfloat16
        res.append([y, xi.grad, wi.grad] + [p.grad for p in module.parameters()])
    for a, b in zip(*res):
        scale = a.float().abs().max()
        assert (a.float() - b.float()).abs().max() <= 2e-2 * scale


def _backward_cost(module, x, indices, weights):
    """(aten ops, elements written) by the backward of one forward: counted under a dispatch mode, so
    deterministic (no timing)."""
    from torch.utils._python_dispatch import TorchDispatchMode

    class Count(TorchDispatchMode):
        ops = elements = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            Count.ops += 1
            for t in (out if isinstance(out, (tuple, list)) else (out,)):
                if isinstance(t, torch.Tensor):
                    Count.elements += t.numel()
            return out

    y = module(x, indices, weights)
    with Count():
        y.sum().backward()
    return Count.ops, Count.elements


def test_loop_backward_is_linear_in_experts():
    """At fixed work (same tokens, top-k, widths), the loop backend's backward does O(E) work: going
    from E=8 to E=64 experts multiplies its op count and the elements its ops write by at most ~8 (the
    weight gradients themselves grow 8x). Indexing the stacked weights per expert made each expert's
    backward zero-fill a full [E, d, f] gradient: O(E^2), a factor ~64 in written elements."""
    costs = {}
    for E in (8, 64):
        torch.manual_seed(0)
        shape = ModelShape(**{**BASE, "n_experts": E, "d_model": 32, "d_expert": 64}, ffn_kind="swiglu")
        loop = LoopExperts(shape)
        N = 256                                         # 512 assignments: every expert gets some at E=64
        indices = torch.stack([torch.randperm(E)[:shape.top_k] for _ in range(N)])
        weights = torch.rand(N, shape.top_k)
        costs[E] = _backward_cost(loop, torch.randn(N, 32, requires_grad=True), indices, weights)
    ops_ratio = costs[64][0] / costs[8][0]
    elem_ratio = costs[64][1] / costs[8][1]
    assert ops_ratio <= 8 * 1.25, costs
    assert elem_ratio <= 8 * 1.25, costs


def test_grouped_scratch_reuse_two_forwards_then_backward():
    """Two forwards (different inputs and routings) before one backward, as in gradient accumulation
    without a backward in between: the reused CPU scratch tensors must not leak between calls."""
    torch.manual_seed(3)
    shape = ModelShape(**{**BASE, "d_expert": 40}, ffn_kind="swiglu")
    loop, grouped = LoopExperts(shape), GroupedExperts(shape)
    grouped.load_state_dict(loop.state_dict())
    batches = [(torch.randn(48, shape.d_model), *routing(48, shape.n_experts, shape.top_k)),
               (torch.randn(80, shape.d_model), *routing(80, shape.n_experts, shape.top_k))]
    res = []
    for module in (loop, grouped):
        xs = [x.clone().requires_grad_() for x, _, _ in batches]
        ys = [module(x, i, w) for x, (_, i, w) in zip(xs, batches)]
        sum((y.square().sum() * (n + 1)) for n, y in enumerate(ys)).backward()
        res.append(ys + [x.grad for x in xs] + [p.grad for p in module.parameters()])
    for a, b in zip(*res):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_release_scratch_frees_the_cpu_buffers():
    from moe.sorted_experts import release_scratch

    torch.manual_seed(4)
    shape = ModelShape(**{**BASE, "d_expert": 40}, ffn_kind="swiglu")
    grouped = GroupedExperts(shape)
    indices, weights = routing(32, shape.n_experts, shape.top_k)
    release_scratch()
    x = torch.randn(32, shape.d_model, requires_grad=True)
    grouped(x, indices, weights).sum().backward()
    A, d, f = 32 * shape.top_k, shape.d_model, shape.d_expert
    assert release_scratch() == 4 * (4 * A * d + 3 * A * f)   # xs, out, gout, gxs; gh, gu, gg (fp32)
    assert release_scratch() == 0


@pytest.mark.parametrize("accumulate", [False, True])
def test_per_expert_mm_equals_grouped_mm(accumulate):
    """The grouped-matmul floor computes what torch._grouped_mm computes, in both layouts, with an empty expert."""
    g = torch.Generator().manual_seed(0)
    counts = [3, 0, 5, 2]
    bounds = [0, 3, 3, 8, 10]
    offs = torch.tensor(bounds[1:], dtype=torch.int32)
    a, w = torch.randn(10, 8, generator=g), torch.randn(4, 8, 4, generator=g)
    out = torch.randn(10, 4, generator=g)
    want = torch._grouped_mm(a, w, offs=offs) + (out if accumulate else 0)
    assert torch.allclose(per_expert_mm(a, w, bounds, out.clone(), accumulate), want, atol=1e-5)
    gy = torch.randn(10, 4, generator=g)
    out = torch.randn(4, 8, 4, generator=g)
    want = torch._grouped_mm(a.t(), gy, offs=offs) + (out if accumulate else 0)
    got = per_expert_mm(a.t(), gy, bounds, out.clone(), accumulate)
    assert sum(counts) == 10 and torch.allclose(got, want, atol=1e-5)


def test_grouped_with_tokens_dropped_entirely_at_both_ends():
    """Tokens whose every assignment was dropped (first, last, and a partial one) get zeros and no gradient,
    as in the loop backend: the fused combine's empty bags, including bags starting at the end of the input."""
    shape = ModelShape(vocab_size=16, d_model=16, n_layers=1, n_heads=1, seq_len=6, n_experts=4, top_k=2,
                       d_expert=8, ffn_kind="swiglu")
    torch.manual_seed(0)
    loop, grouped = LoopExperts(shape), GroupedExperts(shape)
    grouped.load_state_dict(loop.state_dict())
    x = torch.randn(6, 16, requires_grad=True)
    indices = torch.stack([torch.randperm(4)[:2] for _ in range(6)])
    weights = torch.rand(6, 2)
    keep = torch.ones(6, 2, dtype=torch.bool)
    keep[0], keep[-2:], keep[2, 1] = False, False, False
    got = []
    for module in (loop, grouped):
        x.grad = None
        y = module(x, indices, weights, keep)
        y.square().sum().backward()
        got.append((y.detach(), x.grad.clone()))
    assert torch.allclose(got[0][0], got[1][0], atol=1e-6) and torch.allclose(got[0][1], got[1][1], atol=1e-6)
    assert got[1][0][[0, 4, 5]].abs().max() == 0 and got[1][1][[0, 4, 5]].abs().max() == 0
