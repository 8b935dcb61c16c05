"""Expert parallelism in training (``train.expert_parallel``): on 2 gloo ranks a tiny MoE trained 6 steps
with expert_parallel=2 equals expert_parallel=1 in the same layout (losses to 1e-5 relative in fp32, final
weights, router statistics), for the DeepSeek-style model (grouped backend, shared expert, group-limited
sigmoid router, loss-free bias) under DDP and the Switch-style model (loop backend, aux loss with global
counts, z-loss) under FSDP2; the per-rank bytes land in metrics.jsonl; DCP checkpoints resume
bit-identically and refuse another expert_parallel in one line; a killed rank ends the job.

Ranks are launched as torchrun would (env://) without torchrun's own process, as tests/test_experiments_faults.py
does (2 interpreters per run instead of 3).
"""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from experiments import checkpoint as ckpt
from experiments.metrics import read_metrics

REPO = Path(__file__).resolve().parent.parent
FAST = ["size=tiny", "data.tokenizer=bytes", "train.batch_size=4", "model.shape.seq_len=32", "train.eval_batches=2",
        "train.progress=none", "optim.warmup_steps=2", "train.threads=1", "train.max_steps=6", "train.log_every=1",
        "train.eval_every=3"]
ENV = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start(tmp_path, cache, name, *overrides, nproc=2, env=None):
    port = _free_port()
    cmd = [sys.executable, "-m", "experiments.train", *FAST, f"paths.runs={tmp_path}", f"paths.cache={cache}",
           f"name={name}", *overrides]
    return [subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             env={**ENV, **(env or {}), "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port),
                                  "WORLD_SIZE": str(nproc), "RANK": str(r), "LOCAL_RANK": str(r),
                                  "LOCAL_WORLD_SIZE": str(nproc)})
            for r in range(nproc)]


def finish(procs, timeout=240):
    try:
        return [p.communicate(timeout=timeout) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()


def run(tmp_path, cache, name, model, *overrides, nproc=2):
    procs = start(tmp_path, cache, name, f"model={model}", *overrides, nproc=nproc)
    outs = finish(procs)
    for r, (p, (out, err)) in enumerate(zip(procs, outs)):
        assert p.returncode == 0, f"rank {r} exited {p.returncode}: {out[-2000:]}{err[-3000:]}"
    return tmp_path / name / model / "tiny-seed0"


def rel(a: float, b: float) -> float:
    return abs(a - b) / max(abs(b), 1e-12)


def assert_same_training(ep_run: Path, ref_run: Path, tol: float = 1e-5) -> None:
    """Losses, router statistics and final weights of two runs equal to ``tol`` (relative; a weight tensor
    in Frobenius norm: Adam divides tiny gradients by their own size, so single elements may differ by more
    than the losses do)."""
    rows, ref = read_metrics(ep_run), read_metrics(ref_run)
    assert [r["step"] for r in rows] == [r["step"] for r in ref] == [1, 2, 3, 4, 5, 6]
    for a, b in zip(rows, ref):
        for key in ("train_loss", "train_total_loss", "grad_norm"):
            assert rel(a[key], b[key]) <= tol, (a["step"], key, a[key], b[key])
        if b["val_loss"] is not None:
            assert rel(a["val_loss"], b["val_loss"]) <= tol
        for la, lb in zip(a["router"], b["router"]):
            assert la["tokens_per_expert"] == lb["tokens_per_expert"], (a["step"], la["layer"])
            for key in ("cv", "max_vio", "dropped_fraction", "aux_loss", "entropy"):
                assert la[key] == pytest.approx(lb[key], rel=tol, abs=1e-7), (a["step"], key)
            if lb["bias"] is not None:
                assert la["bias"] == pytest.approx(lb["bias"], abs=1e-7)
    assert rows[-1]["train_loss"] != rows[0]["train_loss"]  # it trained
    w, w_ref = ckpt.full_model_state(ep_run / ckpt.CHECKPOINT), ckpt.full_model_state(ref_run / ckpt.CHECKPOINT)
    assert set(w) == set(w_ref)
    for k in w_ref:
        assert w[k].shape == w_ref[k].shape, k
        assert float((w[k].float() - w_ref[k].float()).norm()) <= tol * max(float(w_ref[k].float().norm()), 1e-12), k


def assert_bytes_logged(run_dir: Path, world: int = 2) -> None:
    """Every record has the per-rank dispatch/combine bytes; what the ranks send out comes back (sums
    equal); some traffic happened."""
    for r in read_metrics(run_dir):
        d, c = r["ep_dispatch_bytes"], r["ep_combine_bytes"]
        assert len(d) == len(c) == world and sum(d) == sum(c) > 0
        if world == 2:
            assert d == c[::-1]  # what rank 0 dispatches, rank 1 combines back, and vice versa


@pytest.fixture(scope="module")
def deepseek_runs(tmp_path_factory, cache):
    root = tmp_path_factory.mktemp("ep_deepseek")
    return (run(root, cache, "ep1", "deepseek"), run(root, cache, "ep2", "deepseek", "train.expert_parallel=2"))


def test_deepseek_ep2_equals_ep1_under_ddp(deepseek_runs):
    ep1, ep2 = deepseek_runs
    assert_same_training(ep2, ep1)
    assert_bytes_logged(ep2)
    assert "ep_dispatch_bytes" not in read_metrics(ep1)[0]
    assert json.loads((ep2 / "summary.json").read_text())["replica_max_abs_diff"] == 0.0
    assert (ep2 / "checkpoint.dcp.6" / ".metadata").exists() and not (ep1 / "checkpoint.dcp.6").exists()
    assert any(b != 0 for b in read_metrics(ep2)[-1]["router"][0]["bias"])  # loss-free biases moved


def test_switch_moe_loop_backend_ep2_equals_ep1_under_fsdp(tmp_path, cache):
    extra = ["model.backend=loop", "train.parallel=fsdp"]
    ep1 = run(tmp_path, cache, "ep1", "moe", *extra)
    ep2 = run(tmp_path, cache, "ep2", "moe", *extra, "train.expert_parallel=2")
    assert_same_training(ep2, ep1)
    assert_bytes_logged(ep2)
    aux = read_metrics(ep2)[-1]["aux_losses"]
    assert aux["load_balance"] > 0 and aux["z_loss"] > 0


def test_same_layout_resume_is_bit_identical(tmp_path, cache, deepseek_runs):
    """Stopped after step 3 (DCP checkpoint, each rank its shard), resumed: steps 4-6 and the final weights
    equal the uninterrupted run's exactly."""
    part = run(tmp_path, cache, "ep2", "deepseek", "train.expert_parallel=2", "train.stop_at_step=3")
    assert sorted(p.name for p in part.glob("checkpoint.dcp.*")) == ["checkpoint.dcp.3"]
    part = run(tmp_path, cache, "ep2", "deepseek", "train.expert_parallel=2", "resume=true")
    rows, ref = read_metrics(part), read_metrics(deepseek_runs[1])
    assert [r["train_loss"] for r in rows] == [r["train_loss"] for r in ref]
    assert [r["ep_dispatch_bytes"] for r in rows] == [r["ep_dispatch_bytes"] for r in ref]
    assert sorted(p.name for p in part.glob("checkpoint.dcp.*")) == ["checkpoint.dcp.6"]  # the old one removed
    w, w_ref = ckpt.full_model_state(part / ckpt.CHECKPOINT), ckpt.full_model_state(deepseek_runs[1] / ckpt.CHECKPOINT)
    assert all(torch.equal(w[k], w_ref[k]) for k in w_ref)


def test_resume_with_another_expert_parallel_is_refused_in_one_line(tmp_path, cache, deepseek_runs):
    import shutil
    shutil.copytree(deepseek_runs[1], tmp_path / "moved" / "deepseek" / "tiny-seed0")
    procs = start(tmp_path, cache, "moved", "model=deepseek", "train.expert_parallel=1", "train.max_steps=7",
                  "resume=true")
    outs = finish(procs, timeout=120)
    assert [p.returncode for p in procs] == [2, 2], outs
    lines = outs[0][1].strip().splitlines()
    assert len(lines) == 1 and "train.expert_parallel 2 -> 1" in lines[0], outs[0][1]


def test_expert_parallel_must_divide_the_ranks_and_needs_torchrun():
    """Checked before any collective: one-line ConfigErrors (exit 2 in experiments.train)."""
    from experiments import distributed
    from experiments.config import ConfigError
    info = distributed.DistInfo(rank=0, world_size=2, local_rank=0, device=torch.device("cpu"))
    with pytest.raises(ConfigError, match=r"^train.expert_parallel=4 must divide the number of ranks \(2\)$"):
        distributed.expert_parallel_mesh(info, 4)
    single = distributed.DistInfo(rank=0, world_size=1, local_rank=0, device=torch.device("cpu"))
    with pytest.raises(ConfigError, match="needs torchrun"):
        distributed.wrap(torch.nn.Linear(2, 2), single, "ddp", expert_parallel=2)


def test_a_killed_rank_ends_the_job_with_one_line(tmp_path, cache):
    """Rank 1 killed (SIGKILL) mid-run: rank 0, waiting in an all-to-all or all-reduce, stops within the
    collective timeout (MOE_DIST_TIMEOUT_S, 10 s here) with exit status 5 and one line, no hang."""
    procs = start(tmp_path, cache, "killed", "model=moe", "train.expert_parallel=2", "train.max_steps=500",
                  "train.ckpt_every=2", env={"MOE_DIST_TIMEOUT_S": "10"})
    metrics = tmp_path / "killed" / "moe" / "tiny-seed0" / "metrics.jsonl"
    t0 = time.time()
    while time.time() - t0 < 120 and (not metrics.exists() or len(metrics.read_text().splitlines()) < 3):
        time.sleep(0.2)
    assert procs[0].poll() is None, procs[0].communicate()
    procs[1].send_signal(signal.SIGKILL)
    killed_at = time.time()
    try:
        _, err = procs[0].communicate(timeout=90)
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    assert procs[0].returncode == 5, err[-3000:]
    assert time.time() - killed_at < 60
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("distributed error: rank 0 lost its peers"), err[-3000:]
    assert (metrics.parent / ckpt.CHECKPOINT).exists()  # the last checkpoint is kept for resume=true


@pytest.mark.slow
def test_four_ranks_two_expert_groups_of_two_under_fsdp(tmp_path, cache):
    """4 ranks, train.parallel=fsdp, expert_parallel=2: experts in 2 groups of 2 (ranks {0,1} and {2,3} split
    them, {0,2} and {1,3} hold the same ones, their gradients reduced over those pairs); equals
    expert_parallel=1 on the same 4 ranks."""
    extra = ["train.parallel=fsdp", "train.max_steps=3", "train.eval_every=3"]
    ep1 = run(tmp_path, cache, "ep1", "deepseek", *extra, nproc=4)
    ep2 = run(tmp_path, cache, "ep2", "deepseek", *extra, "train.expert_parallel=2", nproc=4)
    rows, ref = read_metrics(ep2), read_metrics(ep1)
    assert [r["step"] for r in rows] == [1, 2, 3]
    for a, b in zip(rows, ref):
        assert rel(a["train_loss"], b["train_loss"]) <= 1e-5 and rel(a["grad_norm"], b["grad_norm"]) <= 1e-5
        assert a["router"][0]["tokens_per_expert"] == b["router"][0]["tokens_per_expert"]
        assert len(a["ep_dispatch_bytes"]) == 4 and sum(a["ep_dispatch_bytes"]) == sum(a["ep_combine_bytes"]) > 0
    assert json.loads((ep2 / "summary.json").read_text())["replica_max_abs_diff"] == 0.0
    w, w_ref = ckpt.full_model_state(ep2 / ckpt.CHECKPOINT), ckpt.full_model_state(ep1 / ckpt.CHECKPOINT)
    for k in w_ref:
        assert float((w[k].float() - w_ref[k].float()).norm()) <= 1e-5 * max(float(w_ref[k].float().norm()), 1e-12), k
