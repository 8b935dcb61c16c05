"""The training-memory planner against torch, byte for byte: the activations autograd saves in one forward of
one micro-batch (tests/_saved_tensors.py) for the tiny dense, GQA, MoE, DeepSeek and DeepSeek-MLA models of
conf/, in fp32, bf16 autocast and bf16 parameters, with every CPU expert backend, without and with full
recompute; and the weights, gradients and AdamW moments after one optimizer step."""
from __future__ import annotations

import dataclasses
import functools

import pytest
import torch

from accounting.activations import activation_bytes, total_activation_bytes
from accounting.training_memory import plan
from accounting.training_settings import Layout, Settings
from _saved_tensors import saved_activation_bytes

pytestmark = pytest.mark.usefixtures("one_thread")

MODELS = {"dense": ["model=dense"],
          "gqa": ["model=dense", "model.shape.attention=gqa", "+model.shape.n_kv_heads=2"],
          "moe": ["model=moe"], "deepseek": ["model=deepseek"], "deepseek_mla": ["model=deepseek_mla"]}
CASES = [(m, b) for m in MODELS for b in (("loop",) if m in ("dense", "gqa") else ("loop", "grouped"))]
B = 2  # sequences per micro-batch


@functools.lru_cache(maxsize=None)
def spec_of(model: str, backend: str):
    from experiments.config import compose, validate
    return validate(compose(MODELS[model] + ["size=tiny", f"model.backend={backend}"]))


def build(model: str, backend: str):
    from experiments.trainer import build_model
    spec = spec_of(model, backend)
    torch.manual_seed(0)
    return spec, build_model(spec)


def settings_of(spec, **kw) -> Settings:
    """The planner's settings for a run config (the router's losses decide which router tensors are kept)."""
    r = spec.cfg["model"]["router"]
    return Settings(seq_len=spec.shape.seq_len, micro_batch=B, backend=spec.cfg["model"]["backend"],
                    router_aux_loss=r["balancing"] == "aux_loss" and r["aux_loss_coef"] > 0,
                    router_z_loss=r["z_loss_coef"] > 0, capacity_factor=r["capacity_factor"], **kw)


def batch(shape, seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    return (torch.randint(0, shape.vocab_size, (B, shape.seq_len), generator=g),
            torch.randint(0, shape.vocab_size, (B, shape.seq_len), generator=g))


@pytest.mark.parametrize("recompute", ["none", "full"])
@pytest.mark.parametrize("precision", ["fp32", "bf16", "bf16-pure"])
@pytest.mark.parametrize("model,backend", CASES, ids=[f"{m}-{b}" for m, b in CASES])
def test_activations_equal_saved_tensors_byte_for_byte(model, backend, precision, recompute):
    """fp32; bf16 autocast over fp32 parameters (the trainer's bf16); bf16-pure: the model cast to bf16."""
    spec, m = build(model, backend)
    if precision == "bf16-pure":
        m = m.to(torch.bfloat16)
    m.recompute = recompute
    idx, tgt = batch(spec.shape)
    measured = saved_activation_bytes(m, idx, tgt, autocast=precision == "bf16")
    ours = total_activation_bytes(spec.shape, settings_of(spec, precision=precision, recompute=recompute))
    assert ours == measured["total"], (activation_bytes(spec.shape, settings_of(
        spec, precision=precision, recompute=recompute)), measured["by_component"])


def test_full_recompute_keeps_the_same_gradients():
    """The checkpointed model computes what the plain one does (loss and every gradient)."""
    spec, m = build("deepseek", "grouped")
    idx, tgt = batch(spec.shape)
    grads = {}
    for mode in ("none", "full"):
        m.recompute = mode
        m.zero_grad(set_to_none=True)
        m(idx, tgt).loss.backward()
        grads[mode] = {n: p.grad.clone() for n, p in m.named_parameters() if p.grad is not None}
    assert grads["none"].keys() == grads["full"].keys()
    for name, g in grads["none"].items():
        torch.testing.assert_close(grads["full"][name], g, msg=name)


@pytest.mark.parametrize("backend", ["loop", "grouped"])
def test_capacity_factor_with_the_kept_count(backend):
    """With a capacity factor the routed tensors follow the kept assignments: given the count the router
    kept (data-dependent), the planner is exact; its default, every expert full (E ceil(C N k / E)), bounds it."""
    import moe
    spec = spec_of("moe", backend)
    torch.manual_seed(0)
    m = moe.build_model(spec.shape, router={**spec.cfg["model"]["router"], "capacity_factor": 1.0}, backend=backend)
    idx, tgt = batch(spec.shape)
    m.eval()   # no jitter, same routing in both forwards
    with torch.no_grad():
        stats = m(idx, tgt).router_stats
    kept = [round(float(s.tokens_per_expert.sum()) * (1 - float(s.dropped_fraction))) for s in stats]
    assert sum(kept) < spec.shape.n_layers * spec.shape.top_k * B * spec.shape.seq_len   # some were dropped
    m.train()
    measured = saved_activation_bytes(m, idx, tgt)
    base = settings_of(spec, precision="fp32")
    per_layer = [dataclasses.replace(base, capacity_factor=1.0, routed_assignments=a) for a in kept]
    ours = sum(total_activation_bytes(spec.shape, st, layers=range(i, i + 1), head=False)
               for i, st in enumerate(per_layer))
    ours += total_activation_bytes(spec.shape, per_layer[0], layers=range(0), head=True)
    assert ours == measured["total"]
    bound = total_activation_bytes(spec.shape, dataclasses.replace(base, capacity_factor=1.0))
    assert bound >= measured["total"]


def test_materialised_attention_scores():
    """The math kernel (forced) keeps the softmax scores; the planner's ``attention_kernel='math'``."""
    from torch.nn.attention import SDPBackend, sdpa_kernel
    spec, m = build("dense", "loop")
    idx, tgt = batch(spec.shape)
    with sdpa_kernel(SDPBackend.MATH):
        measured = saved_activation_bytes(m, idx, tgt)
    st = settings_of(spec, precision="fp32", attention_kernel="math")
    by = activation_bytes(spec.shape, st)
    assert sum(by.values()) == measured["total"]
    assert by["attention_scores"] == spec.shape.n_layers * B * spec.shape.n_heads * spec.shape.seq_len ** 2 * 4


@pytest.mark.parametrize("model,backend", [("dense", "loop"), ("deepseek_mla", "grouped")])
def test_weights_gradients_optimizer_after_one_adamw_step(model, backend):
    """Single process, fp32 parameters: weights 4, gradients 4, AdamW's two moments 8 bytes per parameter
    (fp32 weights need no master copy), equal to torch's tensors; AdamW's per-tensor ``step`` counters
    (4 bytes each) are the only other state and are named apart."""
    from experiments.trainer import make_optimizer
    spec, m = build(model, backend)
    opt = make_optimizer(m, spec.cfg["optim"], torch.device("cpu"))
    idx, tgt = batch(spec.shape)
    m(idx, tgt).loss.backward()
    opt.step()
    nbytes = lambda ts: sum(t.numel() * t.element_size() for t in ts)  # noqa: E731
    params = [p for p in m.parameters()]
    moments = [st[k] for st in opt.state.values() for k in ("exp_avg", "exp_avg_sq")]
    steps = [st["step"] for st in opt.state.values()]
    r = plan(spec.shape, settings_of(spec, precision="fp32", weights="fp32"), Layout())
    assert r.per_gpu_bytes["weights"] == nbytes(params)
    assert r.per_gpu_bytes["gradients"] == nbytes(p.grad for p in params if p.grad is not None)
    assert r.per_gpu_bytes["optimizer"] == nbytes(moments)
    assert nbytes(steps) == 4 * len(params)


@pytest.mark.slow
def test_fsdp2_shards_on_two_gloo_ranks(tmp_path, model="deepseek"):
    """FSDP2 (``fully_shard`` per block, then the root, as ``train.parallel=fsdp``) on 2 gloo ranks, one AdamW
    step: each rank's local parameters, gradients and moments equal the planner's ZeRO-3 figure over dp = 2
    (fp32 weights: 4 + 4 + 8 bytes per parameter, halved; every dim 0 of these models is even, so FSDP2's
    shards are exact halves). DeepSeek's tiny model: a dense first layer, routed and shared experts."""
    import json
    import os
    import subprocess
    import sys
    from pathlib import Path
    repo = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": f"{repo}{os.pathsep}{repo / 'tests'}", "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           str(repo / "tests" / "_fsdp_memory_worker.py"), str(tmp_path), model]
    p = subprocess.run(cmd, cwd=repo, env=env, capture_output=True, text=True, timeout=240)
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-2000:]
    spec = spec_of(model, "grouped")
    r = plan(spec.shape, settings_of(spec, precision="fp32", weights="fp32"), Layout(gpus=2, zero=3))
    for rank in (0, 1):
        got = json.loads((tmp_path / f"rank{rank}.json").read_text())
        assert got == {k: r.per_gpu_bytes[k] for k in ("weights", "gradients", "optimizer")}, rank


def test_full_recompute_leaves_the_loss_free_bias_step_unchanged():
    """Recompute runs each router twice per step (its loads are counted twice); the loss-free step uses only
    the sign of (mean load - load), so the biases after the step are those of the plain model."""
    biases = {}
    for mode in ("none", "full"):
        spec, m = build("deepseek", "grouped")
        m.recompute = mode
        idx, tgt = batch(spec.shape)
        m(idx, tgt).loss.backward()
        m.update_router_biases()
        biases[mode] = [f.router.bias.clone() for f in m.moe_layers()]
    assert any(b.abs().sum() > 0 for b in biases["none"])
    for a, b in zip(biases["none"], biases["full"]):
        torch.testing.assert_close(a, b)
