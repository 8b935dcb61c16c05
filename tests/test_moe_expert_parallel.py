"""Expert parallelism, one MoE layer on 2 gloo ranks (``moe.expert_parallel``): forward and backward equal
the unsplit layer's (output, input gradient and every parameter gradient), with uneven routing, an expert
rank that receives no token at all, and capacity dropping; the counted bytes equal the routing's remote
assignments x d x element size.

Both ranks run this file as a script (``python tests/test_moe_expert_parallel.py worker OUT``); each builds
the unsplit layer from the same seed, computes the reference for BOTH ranks' tokens on its own, runs the
split layer on its own tokens, and writes the largest differences to ``OUT/rank<r>.json``; the test reads
them. Every case runs in the one 2-process launch (two interpreter start-ups in all).
"""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
CASES = [(backend, routing) for backend in ("loop", "grouped")
         for routing in ("skewed", "rank1_empty", "capacity")] + [("grouped", "deepseek")]
N_TOKENS = (24, 40)  # tokens on rank 0 and rank 1 (uneven batches too)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def launch_two_ranks(args: list[str], timeout: float = 120) -> list[str]:
    """Run ``python tests/test_moe_expert_parallel.py *args`` as ranks 0 and 1 of a gloo group (env://)."""
    port, env = _free_port(), {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    procs = [subprocess.Popen([sys.executable, __file__, *args], cwd=REPO, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True,
                              env={**env, "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "WORLD_SIZE": "2",
                                   "RANK": str(r), "LOCAL_RANK": str(r)})
             for r in range(2)]
    try:
        outs = [p.communicate(timeout=timeout)[0] for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    for r, (p, out) in enumerate(zip(procs, outs)):
        assert p.returncode == 0, f"rank {r} exited {p.returncode}: {out[-3000:]}"
    return outs


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    out = tmp_path_factory.mktemp("ep_layer")
    launch_two_ranks(["worker", str(out)])
    return [json.loads((out / f"rank{r}.json").read_text()) for r in range(2)]


@pytest.mark.parametrize("backend,routing", CASES)
def test_split_layer_equals_unsplit_forward_and_backward(results, backend, routing):
    for rank, res in enumerate(results):
        case = res[f"{backend}/{routing}"]
        assert case["received_rows"] == case["expected_received_rows"]
        for name, rel in case["rel_diff"].items():
            assert rel <= 1e-5, f"rank {rank} {backend}/{routing}: {name} differs by {rel:.2e} (relative)"
        assert set(case["rel_diff"]) >= {"y", "x.grad", "router.gate.weight.grad", "experts.w_up.grad",
                                         "experts.w_down.grad"}
    if routing == "rank1_empty":  # the case it is named for really happened
        assert results[1][f"{backend}/{routing}"]["received_rows"] == 0
        assert results[0][f"{backend}/{routing}"]["received_rows"] > 0


@pytest.mark.parametrize("backend,routing", CASES)
def test_counted_bytes_equal_remote_assignments(results, backend, routing):
    """dispatch: this rank's kept assignments whose expert lives on the other rank x d x 4 (fp32); combine:
    the other rank's assignments to this rank's experts x d x 4."""
    cases = [res[f"{backend}/{routing}"] for res in results]
    for case in cases:
        assert case["dispatch_bytes"] == case["expected_dispatch_bytes"]
        assert case["combine_bytes"] == case["expected_combine_bytes"]
        assert case["training_total"] == [case["dispatch_bytes"], case["combine_bytes"]]
    assert sum(c["dispatch_bytes"] for c in cases) == sum(c["combine_bytes"] for c in cases) > 0


def test_bad_split_is_refused_in_one_line():
    """E_p must divide E; only the loop and grouped backends split."""
    import torch
    from moe.expert_parallel import ExpertParallelExperts
    with pytest.raises(ValueError, match="'loop' or 'grouped'"):
        ExpertParallelExperts(torch.nn.Linear(2, 2))


# ----- the worker (run by each rank) -----------------------------------------------------------------------
def _shape(routing: str):
    from accounting.shapes import ModelShape
    if routing == "deepseek":
        return ModelShape(vocab_size=64, d_model=16, n_layers=1, n_heads=2, seq_len=8, ffn_kind="swiglu",
                          norm_kind="rmsnorm", n_experts=8, top_k=2, n_shared_experts=1, d_expert=16,
                          router_scoring="sigmoid", router_norm_topk=True, router_groups=4, router_topk_groups=2,
                          router_group_score="top2_sum", router_score_bias=True)
    return ModelShape(vocab_size=64, d_model=16, n_layers=1, n_heads=2, seq_len=8, n_experts=4, top_k=2,
                      d_expert=24)


def _layer(backend: str, routing: str):
    import torch
    from moe.moe_ffn import MoEFFN
    from moe.router import RouterConfig
    torch.manual_seed(1)
    cfg = {"skewed": RouterConfig(), "rank1_empty": RouterConfig(), "capacity": RouterConfig(capacity_factor=1.0),
           "deepseek": RouterConfig(balancing="loss_free")}[routing]
    layer = MoEFFN(_shape(routing), cfg, backend)
    with torch.no_grad():
        g = layer.router.gate.weight
        if routing == "rank1_empty":      # experts 2, 3 (rank 1's) never chosen
            g[2:] = 0.0
            g[:2] = g[:2].abs() * 0 + 1.0 / g.size(1)
        elif routing in ("skewed", "capacity"):  # expert 0 favoured: uneven loads
            g[0] += 0.5
        else:
            layer.router.bias.copy_(torch.linspace(-0.05, 0.05, g.size(0)))
    return layer


def _inputs(routing: str, rank: int):
    import torch
    gen = torch.Generator().manual_seed(100 + rank)
    d = _shape(routing).d_model
    x = torch.randn(1, N_TOKENS[rank], d, generator=gen)
    if routing == "rank1_empty":
        x = x.abs()               # positive inputs: experts 0, 1 score 1/d * sum(x) > 0 = experts 2, 3
    return x, torch.randn(1, N_TOKENS[rank], d, generator=gen)


def _reference(backend, routing, rank):
    """The unsplit layer on ``rank``'s tokens: output, gradients, the kept assignments' experts."""
    import torch
    layer = _layer(backend, routing)
    x, probe = _inputs(routing, rank)
    x.requires_grad_(True)
    y = layer(x)
    (y * probe).sum().backward()
    r = layer.router(x.detach().reshape(-1, x.size(-1)))
    kept = r.indices if r.keep is None else r.indices[r.keep]
    grads = {f"{n}.grad": p.grad.clone() for n, p in layer.named_parameters() if p.grad is not None}
    return y.detach(), x.grad, grads, kept.reshape(-1)


def worker(out: str) -> None:
    import torch
    import torch.distributed as dist
    from moe.expert_parallel import ExpertParallelExperts
    torch.set_num_threads(1)
    dist.init_process_group("gloo")
    rank, P = dist.get_rank(), dist.get_world_size()
    report = {}
    for backend, routing in CASES:
        refs = [_reference(backend, routing, q) for q in range(P)]
        layer = _layer(backend, routing)
        layer.experts = ExpertParallelExperts(layer.experts)
        ep = layer.experts
        x, probe = _inputs(routing, rank)
        x.requires_grad_(True)
        y = layer(x)
        (y * probe).sum().backward()
        got = {"y": y.detach(), "x.grad": x.grad}
        got.update({f"{n}.grad": p.grad for n, p in layer.named_parameters() if p.grad is not None})
        want = {"y": refs[rank][0], "x.grad": refs[rank][1]}
        lo, hi = ep.first_expert, ep.first_expert + ep.n_local
        for name, g in refs[rank][2].items():
            if name.startswith("experts."):   # an expert's gradient: the sum over both ranks' tokens, my slice
                want[name] = sum(ref[2][name] for ref in refs)[lo:hi]
            else:
                want[name] = g
        assert set(got) == set(want), (sorted(got), sorted(want))
        rel = {n: float((got[n] - want[n]).abs().max() / want[n].abs().max().clamp_min(1e-12)) for n in want}
        mine = lambda e: (e >= lo) & (e < hi)  # noqa: E731
        d, elem = x.size(-1), x.element_size()
        remote_out = int((~mine(refs[rank][3])).sum())
        remote_in = sum(int(mine(refs[q][3]).sum()) for q in range(P) if q != rank)
        report[f"{backend}/{routing}"] = {
            "rel_diff": rel, "dispatch_bytes": ep.last_dispatch_bytes, "combine_bytes": ep.last_combine_bytes,
            "expected_dispatch_bytes": remote_out * d * elem, "expected_combine_bytes": remote_in * d * elem,
            "training_total": list(ep.take_bytes()),
            "received_rows": ep.last_received_rows,
            "expected_received_rows": sum(int(mine(refs[q][3]).sum()) for q in range(P))}
    Path(out, f"rank{rank}.json").write_text(json.dumps(report))
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__" and sys.argv[1:2] == ["worker"]:
    sys.path.insert(0, str(REPO))
    worker(sys.argv[2])
