"""Training loop: short dense/MoE runs, kill-and-resume equality, NaN stop, 2-process gloo DDP and FSDP2,
bench CSV.

Needs the models (``moe.build_model``); skipped until they exist.
"""
import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import experiments.trainer as T
from experiments import exits, run_folder, schedule
from experiments.config import compose, validate
from experiments.metrics import read_metrics

REPO = Path(__file__).resolve().parent.parent
moe = pytest.importorskip("moe")
if not hasattr(moe, "build_model"):
    pytest.skip("moe.build_model not available yet", allow_module_level=True)

FAST = ["size=tiny", "data.tokenizer=bytes", "train.batch_size=4", "model.shape.seq_len=32",
        "train.eval_batches=2", "train.progress=none", "optim.warmup_steps=2", "train.threads=1"]


pytestmark = pytest.mark.usefixtures("clear_hydra")  # tests/conftest.py


def spec_for(cache, *overrides):
    return validate(compose(FAST + [f"paths.cache={cache}", *overrides]))


@pytest.mark.parametrize("model", ["dense", "moe", "deepseek", "deepseek_mla"])
def test_two_steps_write_run_folder(tmp_path, cache, model):
    summary = T.train(spec_for(cache, f"model={model}", "train.max_steps=2", "train.log_every=1",
                               "train.eval_every=2"), tmp_path)
    assert summary["status"] == "completed" and summary["step"] == 2
    for f in ("config.yaml", "env.json", "metrics.jsonl", "checkpoint.pt", "summary.json"):
        assert (tmp_path / f).exists(), f
    rows = read_metrics(tmp_path)
    assert [r["step"] for r in rows] == [1, 2] and rows[-1]["val_loss"] is not None
    r = rows[-1]
    assert r["train_flops_fma2_per_token"] > 0 and r["mfu"] > 0 and r["tokens"] == 2 * 4 * 32
    env = json.loads((tmp_path / "env.json").read_text())
    assert env["parameters_counted"] == env["parameters_total"]
    assert env["torch"] == torch.__version__ and env["peak_source"].startswith("measured")
    n_moe = validate(compose([f"model={model}"])).shape.n_moe_layers
    assert len(r["router"]) == n_moe
    if n_moe:
        lf = r["router"][0]["load_fraction"]
        assert abs(sum(lf) - 1) < 1e-6 and {"cv", "max_vio", "dropped_fraction", "aux_loss", "bias"} <= set(r["router"][0])


def test_mtp_module_trains_and_its_weight_reaches_the_model(tmp_path, cache):
    """model.shape.mtp_modules=1 builds DeepSeek-V3's MTP module; model.mtp_loss_weight is its lambda: the
    logged mtp_loss is the weighted term in train_total_loss; weight 0 drops it (total = LM + router losses)."""
    common = ["model=deepseek", "model.shape.mtp_modules=1", "train.max_steps=2", "train.log_every=1",
              "train.eval_every=2"]
    spec = spec_for(cache, *common, "model.mtp_loss_weight=0.5")
    model = T.build_model(spec)
    assert len(model.mtp) == 1 and model.mtp_loss_weight == 0.5
    summary = T.train(spec, tmp_path / "w05")
    assert summary["status"] == "completed"
    rows = read_metrics(tmp_path / "w05")
    for r in rows:
        router = sum(v for k, v in r["aux_losses"].items() if k != "mtp")
        assert r["mtp_loss"] > 0 and r["mtp_loss"] == pytest.approx(r["aux_losses"]["mtp"], rel=1e-5)
        assert r["train_total_loss"] == pytest.approx(r["train_loss"] + router + r["mtp_loss"], rel=1e-5)
    # lambda scales the term: the first step's MTP cross-entropy is the same at any weight (same init, data)
    T.train(spec_for(cache, *common, "model.mtp_loss_weight=0.25"), tmp_path / "w025")
    first = read_metrics(tmp_path / "w025")[0]
    assert first["mtp_loss"] == pytest.approx(rows[0]["mtp_loss"] / 2, rel=1e-4)
    T.train(spec_for(cache, *common, "model.mtp_loss_weight=0"), tmp_path / "w0")
    for r in read_metrics(tmp_path / "w0"):
        assert r["mtp_loss"] is None and "mtp" not in r["aux_losses"]
        assert r["train_total_loss"] == pytest.approx(r["train_loss"] + sum(r["aux_losses"].values()), rel=1e-6)
    # changing lambda is a change of what the run computes: resume refuses it
    with pytest.raises(exits.RunError, match=r"model.mtp_loss_weight 0.5 -> 0.1"):
        T.train(spec_for(cache, *common, "train.max_steps=3", "model.mtp_loss_weight=0.1", "resume=true"),
                tmp_path / "w05")


def test_runs_saved_before_the_mtp_keys_resume():
    saved = {"model": {"name": "moe", "shape": {"d_model": 64}}, "train": {"max_steps": 2}}
    now = {"model": {"name": "moe", "shape": {"d_model": 64, "mtp_modules": 0}, "mtp_loss_weight": 0.3},
           "train": {"max_steps": 2}}
    assert run_folder.changed_settings(saved, now) == []
    now["model"]["shape"]["mtp_modules"] = 1
    assert run_folder.changed_settings(saved, now) == ["model.shape.mtp_modules 0 -> 1"]


@pytest.mark.parametrize("model", ["moe", "deepseek"])
def test_kill_and_resume_matches_uninterrupted(tmp_path, cache, model):
    common = [f"model={model}", "train.max_steps=8", "train.log_every=1", "train.eval_every=4",
              "train.ckpt_every=4", "train.grad_accum=2"]
    T.train(spec_for(cache, *common), tmp_path / "a")
    stopped = T.train(spec_for(cache, *common, "train.stop_at_step=4"), tmp_path / "b")
    assert stopped["status"] == "stopped" and stopped["step"] == 4
    resumed = T.train(spec_for(cache, *common, "resume=true"), tmp_path / "b")
    assert resumed["status"] == "completed"
    a, b = read_metrics(tmp_path / "a"), read_metrics(tmp_path / "b")
    assert [r["step"] for r in a] == [r["step"] for r in b] == list(range(1, 9))
    for ra, rb in zip(a, b):
        assert abs(ra["train_loss"] - rb["train_loss"]) <= 1e-6, ra["step"]
        assert (ra["val_loss"] is None) == (rb["val_loss"] is None)
        if ra["val_loss"] is not None:
            assert abs(ra["val_loss"] - rb["val_loss"]) <= 1e-6
        for la, lb in zip(ra["router"], rb["router"]):
            assert la["tokens_per_expert"] == lb["tokens_per_expert"]
            assert la["bias"] == lb["bias"]


def test_nan_loss_stops_and_keeps_last_good_checkpoint(tmp_path, cache, monkeypatch):
    real_build = T.build_model

    def poisoned(spec):
        model = real_build(spec)
        calls = {"n": 0}

        def hook(module, args, out):
            calls["n"] += 1
            if module.training and calls["n"] >= 3:  # third training forward = step 3
                out.loss = out.loss * float("nan")
            return out
        model.register_forward_hook(hook)
        return model
    monkeypatch.setattr(T, "build_model", poisoned)
    with pytest.raises(exits.TrainingDiverged, match="non-finite loss at step 3"):
        T.train(spec_for(cache, "model=dense", "train.max_steps=6", "train.ckpt_every=2",
                         "train.eval_every=100"), tmp_path)
    state = torch.load(tmp_path / "checkpoint.pt", weights_only=False)
    assert state["step"] == 2


def test_flops_budget_sets_steps(tmp_path, cache):
    spec = spec_for(cache, "model=moe", "train.max_steps=1000")
    from experiments.metrics import train_flops_per_token
    per_step = train_flops_per_token(spec.shape) * 4 * 32
    spec = spec_for(cache, "model=moe", "train.max_steps=1000", f"train.flops_budget={3 * per_step}")
    assert T.train(spec, tmp_path)["step"] == 3


def _torchrun(tmp_path, cache, name, *overrides):
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           "-m", "experiments.train", "model=deepseek", *FAST, "train.max_steps=3", "train.log_every=1",
           "train.grad_accum=2", "train.progress=lines", f"paths.runs={tmp_path}", f"paths.cache={cache}",
           f"name={name}", *overrides]
    p = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=240)
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-2000:]
    run = tmp_path / name / "deepseek" / "tiny-seed0"
    (run / "launcher.log").write_text(p.stdout + p.stderr)
    return run


@pytest.fixture(scope="module")
def ddp_run(tmp_path_factory, cache):
    return _torchrun(tmp_path_factory.mktemp("ddp"), cache, "ddp")


def test_two_process_gloo_keeps_replicas_identical(ddp_run):
    run = ddp_run
    summary = json.loads((run / "summary.json").read_text())
    assert summary["world_size"] == 2 and summary["replica_max_abs_diff"] == 0.0
    assert [r["step"] for r in read_metrics(run)] == [1, 2, 3]  # rank 0 alone wrote
    rows = read_metrics(run)
    assert rows[0]["tokens"] == 2 * 2 * 4 * 32  # ranks x micro-batches x batch x seq_len
    assert any(b != 0 for b in rows[-1]["router"][0]["bias"])  # loss-free biases moved (identical: checked)


def test_fsdp_matches_ddp_and_its_checkpoint_resumes_anywhere(tmp_path, cache, ddp_run):
    """FSDP2 (sharded parameters, gradients, optimizer state) sees the same batches as DDP, so its losses
    agree up to reduction order; its checkpoint holds full tensors and loads into a single-process model."""
    run = _torchrun(tmp_path, cache, "fsdp", "train.parallel=fsdp")
    summary = json.loads((run / "summary.json").read_text())
    assert summary["world_size"] == 2 and summary["replica_max_abs_diff"] == 0.0
    fsdp_rows, ddp_rows = read_metrics(run), read_metrics(ddp_run)
    assert [r["step"] for r in fsdp_rows] == [1, 2, 3]
    for a, b in zip(fsdp_rows, ddp_rows):
        assert a["train_loss"] == pytest.approx(b["train_loss"], abs=1e-4)
        assert a["router"][0]["bias"] == pytest.approx(b["router"][0]["bias"], abs=1e-6)
    assert fsdp_rows[-1]["val_loss"] == pytest.approx(ddp_rows[-1]["val_loss"], abs=1e-4)
    assert fsdp_rows[-1]["train_loss"] != fsdp_rows[0]["train_loss"]

    from experiments import checkpoint as ckpt
    spec = spec_for(cache, "model=deepseek")
    model = T.build_model(spec)
    optimizer = T.make_optimizer(model, spec.cfg["optim"], torch.device("cpu"))
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule.lr_lambda(2, 3, 0.1))  # as train() builds them
    state = ckpt.load(run / ckpt.CHECKPOINT, model=model, optimizer=optimizer, scheduler=scheduler)
    assert state["step"] == 3 and state["extra"]["parallel"] == "fsdp"
    assert sum(p.numel() for p in model.parameters()) == summary["parameters_total"]
    assert len(optimizer.state) == len(list(model.parameters()))  # full Adam moments for every parameter


def test_ddp_checkpoint_resumes_under_fsdp_to_the_same_losses(tmp_path, cache, ddp_run):
    """Pre-empted after step 2 under DDP, resumed under FSDP2: step 3 matches the uninterrupted DDP run."""
    _torchrun(tmp_path, cache, "switch", "train.stop_at_step=2")
    run = _torchrun(tmp_path, cache, "switch", "train.parallel=fsdp", "resume=true")
    log = (run / "launcher.log").read_text()
    assert "resumed from" in log and "at step 2" in log  # it resumed (a fresh start would match too)
    rows, ref = read_metrics(run), read_metrics(ddp_run)
    assert [r["step"] for r in rows] == [1, 2, 3]
    assert rows[-1]["train_loss"] == pytest.approx(ref[-1]["train_loss"], abs=1e-4)
    assert rows[-1]["val_loss"] == pytest.approx(ref[-1]["val_loss"], abs=1e-4)


def test_bench_writes_csv(tmp_path):
    from experiments.bench import grid as bench
    out = tmp_path / "bench.csv"
    bench.main(["--what", "layer", "model", "decode", "--experts", "4", "--top-k", "2", "--tokens", "256",
                "--contexts", "16", "--warmup", "0", "--repeats", "1", "--out", str(out), "--quiet"])
    rows = list(csv.DictReader(out.open()))
    kinds = {r["kind"] for r in rows}
    assert {"matmul_peak", "layer", "model"} <= kinds
    timed = [r for r in rows if r["kind"] in ("layer", "model")]
    assert {r["backend"] for r in timed} >= {"dense", "loop", "grouped"}
    ok = [r for r in timed if not r["note"].startswith("error")]
    assert ok and all(float(r["tflops_per_s"]) > 0 and int(r["flops"]) > 0 for r in ok)
    assert all(r["torch"] == torch.__version__ and r["git_commit"] for r in rows)
