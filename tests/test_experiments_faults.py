"""Fault and bad-input suite for experiments.train (issue 16): divergence, concurrent runs, signals, kills,
damaged files, changed settings, paths, data. Process-level behaviour (exit statuses, signals, locks, kill
-9, Hydra's run folder) runs `python -m experiments.train` in subprocesses; the rest calls `train`/`run`
in-process. Tiny dense model, byte tokenizer, a given MFU peak (no matmul measurement): the whole file
takes about a minute on 2 CPU cores.
"""
import errno
import fcntl
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import experiments.train as launch
import experiments.trainer as T
from experiments import checkpoint as ckpt
from experiments import exits, preflight
from experiments.config import ConfigError, compose, validate
from experiments.data import DataError
from experiments.metrics import read_metrics

REPO = Path(__file__).resolve().parent.parent
moe = pytest.importorskip("moe")
if not hasattr(moe, "build_model"):
    pytest.skip("moe.build_model not available yet", allow_module_level=True)

FAST = ["model=dense", "data.tokenizer=bytes", "train.batch_size=2", "model.shape.seq_len=16",
        "train.eval_batches=1", "train.progress=none", "train.threads=1", "hardware.peak_flops_per_s=1e12",
        "optim.warmup_steps=2", "train.log_every=1", "train.eval_every=50"]
ENV = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}


pytestmark = pytest.mark.usefixtures("clear_hydra")  # tests/conftest.py


def cfg_for(tmp_path, cache, *overrides):
    return compose(FAST + [f"paths.runs={tmp_path / 'runs'}", f"paths.cache={cache}", *overrides])


def spec_for(tmp_path, cache, *overrides):
    return validate(cfg_for(tmp_path, cache, *overrides))


def run_dir(tmp_path, model="dense", name="default"):
    return tmp_path / "runs" / name / model / "tiny-seed0"


def train(tmp_path, cache, *overrides):
    spec = spec_for(tmp_path, cache, *overrides)
    return T.train(spec, spec.cfg["run_dir"])


def run_cli(tmp_path, cache, *overrides, code=None):
    """``T.run`` as the CLI calls it: (exit status, stderr)."""
    import io
    from contextlib import redirect_stderr
    err = io.StringIO()
    with redirect_stderr(err):
        try:
            launch.run(cfg_for(tmp_path, cache, *overrides))
            status = 0
        except SystemExit as e:
            status = e.code
    if code is not None:
        assert status == code, err.getvalue()
    return status, err.getvalue()


def cmd(tmp_path, cache, *overrides):
    return [sys.executable, "-m", "experiments.train", *FAST, f"paths.runs={tmp_path / 'runs'}",
            f"paths.cache={cache}", *overrides]


def sub(tmp_path, cache, *overrides, timeout=120):
    return subprocess.run(cmd(tmp_path, cache, *overrides), cwd=tmp_path, env=ENV, capture_output=True,
                          text=True, timeout=timeout)


def one_line(stderr: str) -> str:
    lines = [ln for ln in stderr.splitlines() if ln.strip() and "Warning" not in ln]
    assert len(lines) == 1, stderr
    assert "Traceback" not in stderr
    return lines[0]


def wait_for_lines(path: Path, n: int, proc, timeout=60):
    t0 = time.time()
    while time.time() - t0 < timeout:
        if path.exists() and len(path.read_bytes().splitlines()) >= n:
            return
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.02)
    raise AssertionError(f"{path} never reached {n} lines")


def model_state(path: Path) -> dict:
    return torch.load(path, weights_only=False)["model"]


# ----- 1. non-finite state is never applied or saved; non-finite final evaluation exits 3 ----------------
def test_nonfinite_gradient_is_not_applied_or_saved(tmp_path, cache, monkeypatch):
    real_build = T.build_model
    calls = {"n": 0}

    def poisoned(spec):
        model = real_build(spec)
        p = model.lm_head.weight if hasattr(model, "lm_head") else next(model.parameters())

        def hook(grad):
            calls["n"] += 1
            return grad * float("nan") if calls["n"] == 3 else grad  # step 3: loss finite, gradient NaN
        p.register_hook(hook)
        return model
    monkeypatch.setattr(T, "build_model", poisoned)
    with pytest.raises(exits.TrainingDiverged, match="non-finite gradient norm at step 3.*not applied.*kept at"):
        train(tmp_path, cache, "train.max_steps=6", "train.ckpt_every=2")
    state = torch.load(run_dir(tmp_path) / "checkpoint.pt", weights_only=False)
    assert state["step"] == 2 and all(torch.isfinite(v).all() for v in state["model"].values())
    summary = json.loads((run_dir(tmp_path) / "summary.json").read_text())
    assert summary["status"] == "diverged" and summary["checkpoint_step"] == 2


def test_nonfinite_weights_are_never_checkpointed(tmp_path, cache, monkeypatch):
    real_step = torch.optim.AdamW.step

    def bad_step(self, *a, **k):
        out = real_step(self, *a, **k)
        if self._step_count_for_test == 2:
            with torch.no_grad():
                self.param_groups[0]["params"][0].fill_(float("inf"))
        return out
    monkeypatch.setattr(torch.optim.AdamW, "_step_count_for_test", 0, raising=False)

    def counting(self, *a, **k):
        self._step_count_for_test += 1
        return bad_step(self, *a, **k)
    monkeypatch.setattr(torch.optim.AdamW, "step", counting)
    with pytest.raises(exits.TrainingDiverged, match="non-finite weights after step 2; not saved"):
        train(tmp_path, cache, "train.max_steps=4", "train.ckpt_every=2", "train.eval_every=100")
    assert not (run_dir(tmp_path) / "checkpoint.pt").exists()


def test_nonfinite_final_validation_exits_3(tmp_path, cache, monkeypatch):
    monkeypatch.setattr(T, "evaluate", lambda *a, **k: float("nan"))
    status, err = run_cli(tmp_path, cache, "train.max_steps=2")
    assert status == exits.EXIT_DIVERGED and "non-finite validation loss nan at step 2" in one_line(err)
    assert json.loads((run_dir(tmp_path) / "summary.json").read_text())["status"] == "diverged"
    assert not (run_dir(tmp_path) / "checkpoint.pt").exists()  # the NaN-evaluated weights were not saved


def test_huge_learning_rate_exits_3_without_saving_nan(tmp_path, cache):
    p = sub(tmp_path, cache, "model=moe", "train.max_steps=6", "train.ckpt_every=1", "optim.lr=1e4",
            "optim.grad_clip=0")
    assert p.returncode == 3, p.stderr
    assert one_line(p.stderr).startswith("training stopped: non-finite")
    d = run_dir(tmp_path, "moe")
    assert json.loads((d / "summary.json").read_text())["status"] == "diverged"
    if (d / "checkpoint.pt").exists():
        assert all(torch.isfinite(v).all() for v in model_state(d / "checkpoint.pt").values()
                   if v.is_floating_point())


# ----- 2. an exclusive lock on the run folder ---------------------------------------------------------
def test_second_run_into_a_locked_folder_exits_2_naming_the_holder(tmp_path, cache):
    d = run_dir(tmp_path)
    d.mkdir(parents=True)
    fd = os.open(d / ".lock", os.O_RDWR | os.O_CREAT)
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    os.write(fd, f"{os.getpid()}\n".encode())
    try:
        p = sub(tmp_path, cache, "train.max_steps=2")
    finally:
        os.close(fd)
    assert p.returncode == 2
    assert f"in use by another training (pid {os.getpid()}" in one_line(p.stderr)
    assert sorted(f.name for f in d.iterdir()) == [".lock"]  # nothing written by the refused run


def test_two_concurrent_runs_never_mix(tmp_path, cache):
    procs = [subprocess.Popen(cmd(tmp_path, cache, "train.max_steps=150", "train.ckpt_every=50"), cwd=tmp_path,
                              env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    outs = [p.communicate(timeout=180) for p in procs]
    codes = sorted(p.returncode for p in procs)
    assert codes == [0, 2], outs
    loser = outs[[p.returncode for p in procs].index(2)][1]
    assert "in use by another training (pid" in one_line(loser) or "already holds a run" in loser
    steps = [r["step"] for r in read_metrics(run_dir(tmp_path))]
    assert steps == list(range(1, 151))


def test_kill_9_leaves_a_stale_lock_and_temporary_that_resume_takes_over(tmp_path, cache):
    d = run_dir(tmp_path)
    proc = subprocess.Popen(cmd(tmp_path, cache, "train.max_steps=150", "train.ckpt_every=5"), cwd=tmp_path,
                            env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wait_for_lines(d / "metrics.jsonl", 12, proc)
    proc.kill()
    proc.wait()
    assert (d / ".lock").read_text().strip() == str(proc.pid)
    (d / "checkpoint.pt.k1ll3d.tmp").write_bytes(b"half a checkpoint")  # as a kill mid-save leaves it
    dead_cache_tmp = Path(cache) / "tokens" / f"x-train.{proc.pid}.tmp.npy"
    dead_cache_tmp.parent.mkdir(exist_ok=True)
    dead_cache_tmp.write_bytes(b"")
    p = sub(tmp_path, cache, "train.max_steps=150", "train.ckpt_every=5", "resume=true")
    assert p.returncode == 0, p.stderr
    assert f"taking over the stale lock of pid {proc.pid}" in p.stdout
    assert "removed stale temporary" in p.stdout
    assert not list(d.glob("*.tmp")) and not dead_cache_tmp.exists()
    assert [r["step"] for r in read_metrics(d)] == list(range(1, 151))


# ----- 3. run names stay inside the runs root -----------------------------------------------------------
def test_name_cannot_escape_the_runs_root(tmp_path, cache):
    p = sub(tmp_path, cache, "name=../../escaped")
    assert p.returncode == 2 and "name='../../escaped'" in one_line(p.stderr)
    assert not (tmp_path / "escaped").exists() and not (tmp_path.parent / "escaped").exists()
    for bad in (["name=/abs"], ["name=a/../.."], ["run_dir=/tmp/elsewhere"], ["model.name=.."]):
        with pytest.raises(ConfigError):
            spec_for(tmp_path, cache, *bad)
    assert spec_for(tmp_path, cache, "name=sweep/a").cfg["run_dir"].endswith("sweep/a/dense/tiny-seed0")


# ----- 4. damaged or foreign checkpoints: one line naming the file and what differs -------------------
@pytest.mark.parametrize("damage", ["truncated", "random", "empty"])
def test_damaged_checkpoint_is_one_line(tmp_path, cache, damage):
    train(tmp_path, cache, "train.max_steps=2", "train.stop_at_step=1")
    f = run_dir(tmp_path) / "checkpoint.pt"
    good = f.read_bytes()
    f.write_bytes({"truncated": good[: len(good) // 2], "random": os.urandom(5000), "empty": b""}[damage])
    before = (run_dir(tmp_path) / "metrics.jsonl").read_bytes()
    status, err = run_cli(tmp_path, cache, "train.max_steps=2", "resume=true")
    line = one_line(err)
    assert status == 2 and str(f) in line and ("damaged" in line or "empty" in line), line
    assert (run_dir(tmp_path) / "metrics.jsonl").read_bytes() == before


@pytest.mark.parametrize("change,needle", [(["model.shape.d_model=32"], "d_model 64 != 32"),
                                           (["model=moe", "model.name=dense"], "n_experts 0 != 8")])
def test_checkpoint_of_another_shape_is_one_line(tmp_path, cache, change, needle):
    train(tmp_path, cache, "train.max_steps=2", "train.stop_at_step=1")
    status, err = run_cli(tmp_path, cache, "train.max_steps=2", "resume=true", *change)
    line = one_line(err)
    assert status == 2 and "checkpoint.pt does not fit this model" in line and needle in line, line


def test_checkpoint_of_another_family_is_refused_before_loading(tmp_path, cache):
    train(tmp_path, cache, "train.max_steps=2", "train.stop_at_step=1")
    state = torch.load(run_dir(tmp_path) / "checkpoint.pt", weights_only=False)
    model = T.build_model(spec_for(tmp_path, cache))
    with pytest.raises(ckpt.CheckpointError, match="family 'dense' \\(checkpoint\\) != 'moe'"):
        ckpt.check_compatible(state, "x.pt", model, family="moe")
    legacy = {k: v for k, v in state.items() if k != "meta"}  # an old checkpoint: tensor shapes compared
    small = T.build_model(spec_for(tmp_path, cache, "model.shape.d_model=32"))
    with pytest.raises(ckpt.CheckpointError, match="tensor shape\\(s\\) differ"):
        ckpt.check_compatible(legacy, "x.pt", small)


# ----- 5. metrics.jsonl: a torn last line is dropped, other bad lines reported by number ------------------
def test_torn_last_metrics_line_is_dropped_with_a_warning(tmp_path, cache, capsys):
    ref = tmp_path / "ref"
    train(ref, cache, "train.max_steps=4")
    train(tmp_path, cache, "train.max_steps=4", "train.stop_at_step=2")
    m = run_dir(tmp_path) / "metrics.jsonl"
    with m.open("a") as f:
        f.write('{"step": 3, "train_lo')  # a crash mid-append
    train(tmp_path, cache, "train.max_steps=4", "resume=true")
    assert "dropping torn last line 3" in capsys.readouterr().err
    assert [r["train_loss"] for r in read_metrics(run_dir(tmp_path))] == \
        [r["train_loss"] for r in read_metrics(run_dir(ref))]


@pytest.mark.parametrize("bad", ["not json", "17", '{"no_step": 1}', '{"step": "abc"}'])
def test_bad_metrics_line_is_reported_with_its_number(tmp_path, cache, bad):
    train(tmp_path, cache, "train.max_steps=4", "train.stop_at_step=3")
    m = run_dir(tmp_path) / "metrics.jsonl"
    lines = m.read_text().splitlines()
    lines[1] = bad
    m.write_text("\n".join(lines) + "\n")
    before = {f: (run_dir(tmp_path) / f).read_bytes() for f in ("metrics.jsonl", "checkpoint.pt")}
    status, err = run_cli(tmp_path, cache, "train.max_steps=4", "resume=true")
    assert status == 2 and "metrics.jsonl line 2" in one_line(err)
    assert {f: (run_dir(tmp_path) / f).read_bytes() for f in before} == before


# ----- 6. resume with changed settings is refused, naming them ---------------------------------------
def test_resume_with_changed_optimiser_or_schedule_is_refused(tmp_path, cache):
    train(tmp_path, cache, "train.max_steps=4", "train.stop_at_step=2")
    with pytest.raises(exits.RunError, match=r"settings that differ from the checkpoint's run \(optim.lr 0.003 -> 0.1\)"):
        train(tmp_path, cache, "train.max_steps=8", "optim.lr=0.1", "resume=true")  # max_steps may rise
    with pytest.raises(exits.RunError, match=r"train.max_steps 4 -> 3"):  # but not fall
        train(tmp_path, cache, "train.max_steps=3", "resume=true")
    with pytest.raises(exits.RunError, match=r"optim.warmup_steps 2 -> 5"):
        train(tmp_path, cache, "train.max_steps=4", "optim.warmup_steps=5", "resume=true")
    # how it runs (logging, checkpoint cadence) may change; config.yaml records what this segment used
    s = train(tmp_path, cache, "train.max_steps=4", "train.log_every=2", "resume=true")
    assert s["status"] == "completed"
    assert "log_every: 2" in (run_dir(tmp_path) / "config.yaml").read_text()


def test_resume_of_a_checkpoint_without_recorded_settings_compares_config_yaml(tmp_path, cache):
    train(tmp_path, cache, "train.max_steps=4", "train.stop_at_step=2")
    f = run_dir(tmp_path) / "checkpoint.pt"
    state = torch.load(f, weights_only=False)
    del state["meta"]["config"]  # as written before settings were recorded
    torch.save(state, f)
    with pytest.raises(exits.RunError, match=r"optim.lr 0.003 -> 0.1"):
        train(tmp_path, cache, "train.max_steps=4", "optim.lr=0.1", "resume=true")
    assert train(tmp_path, cache, "train.max_steps=4", "resume=true")["status"] == "completed"


# ----- 7. finished runs are kept; a used folder is not silently replaced --------------------------------
def test_resuming_a_finished_run_is_a_no_op(tmp_path, cache):
    first = train(tmp_path, cache, "train.max_steps=2")
    before = (run_dir(tmp_path) / "summary.json").read_bytes()
    again = train(tmp_path, cache, "train.max_steps=2", "resume=true")
    assert (run_dir(tmp_path) / "summary.json").read_bytes() == before
    assert again["final_val_loss"] == first["final_val_loss"] is not None


def test_rerun_into_a_used_folder_refuses_unless_overwrite(tmp_path, cache):
    train(tmp_path, cache, "train.max_steps=2")
    before = {f.name: f.read_bytes() for f in run_dir(tmp_path).iterdir() if f.is_file()}
    status, err = run_cli(tmp_path, cache, "train.max_steps=3")
    assert status == 2 and "already holds a run" in one_line(err) and "overwrite=true" in err
    assert {f.name: f.read_bytes() for f in run_dir(tmp_path).iterdir() if f.is_file()} == before
    s = train(tmp_path, cache, "train.max_steps=3", "overwrite=true")
    assert s["step"] == 3 and [r["step"] for r in read_metrics(run_dir(tmp_path))] == [1, 2, 3]
    with pytest.raises(ConfigError, match="contradict"):
        spec_for(tmp_path, cache, "resume=true", "overwrite=true")


# ----- 8. ranges checked before any work ----------------------------------------------------------------
@pytest.mark.parametrize("override,needle", [
    ("seed=18446744073709551616", "seed=18446744073709551616 must be in [0, 2^63 - 1]"),
    ("seed=-1", "seed=-1 must be >= 0"),
    ("model.shape.d_model=abc", "model.shape.d_model='abc' must be a number"),
])
def test_validation_ranges(tmp_path, cache, override, needle):
    with pytest.raises(ConfigError) as e:
        spec_for(tmp_path, cache, override)
    assert needle in str(e.value)


def test_memory_the_run_needs_is_checked_before_any_work(tmp_path, cache):
    p = sub(tmp_path, cache, "model.shape.d_model=1000000000")
    line = one_line(p.stderr)
    assert p.returncode == 2 and "needs at least" in line and "GiB" in line and "d_model=1000000000" in line
    assert not (tmp_path / "runs").exists()  # refused before Hydra made the run folder
    spec = spec_for(tmp_path, cache)
    assert preflight.training_memory_bytes(spec) < 50e6  # the tiny run passes


# ----- 9. path errors are one line naming the path and the cause ---------------------------------------
def test_runs_root_that_is_a_file_is_one_line(tmp_path, cache):
    (tmp_path / "runs").write_text("not a folder")
    p = sub(tmp_path, cache)
    assert p.returncode == 2 and "is a file, not a folder" in one_line(p.stderr)
    (tmp_path / "cachefile").write_text("x")
    with pytest.raises(exits.RunError, match=r"paths.cache=.*cachefile is a file, not a folder"):
        preflight.check_paths(validate(compose(FAST + [f"paths.cache={tmp_path / 'cachefile' / 'sub'}"])).cfg)


def test_disk_full_while_checkpointing_is_one_line_and_keeps_the_old_checkpoint(tmp_path, cache, monkeypatch):
    train(tmp_path, cache, "train.max_steps=4", "train.stop_at_step=2")
    good = (run_dir(tmp_path) / "checkpoint.pt").read_bytes()

    def full(obj, f, *a, **k):
        f.write(b"partial")
        raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(ckpt.torch, "save", full)
    status, err = run_cli(tmp_path, cache, "train.max_steps=4", "resume=true")
    line = one_line(err)
    assert status == exits.EXIT_IO and "disk full" in line and "checkpoint.pt" in line, line
    assert (run_dir(tmp_path) / "checkpoint.pt").read_bytes() == good and not list(run_dir(tmp_path).glob("*.tmp"))


def test_disk_full_in_the_cache_is_one_line(tmp_path, monkeypatch):
    import experiments.data as data

    def full(path, arr, *a, **k):
        Path(path).write_bytes(b"part")
        raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(data.np, "save", full)
    status, err = run_cli(tmp_path, str(tmp_path / "fresh-cache"))
    line = one_line(err)
    assert status == exits.EXIT_IO and line.startswith(f"I/O error: {tmp_path / 'fresh-cache' / 'tokens'}")
    assert line.endswith(": disk full") and not list((tmp_path / "fresh-cache" / "tokens").iterdir())
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").rglob("*"))


def test_unwritable_runs_root_is_refused_before_any_work(tmp_path, monkeypatch):
    (tmp_path / "runs").mkdir()
    real = os.access
    monkeypatch.setattr(os, "access", lambda p, mode: False if Path(p) == tmp_path / "runs" else real(p, mode))
    with pytest.raises(exits.RunError, match=r"paths.runs=.*runs is not writable \(read-only or no permission\)"):
        preflight.check_paths(validate(compose(FAST + [f"paths.runs={tmp_path / 'runs'}"])).cfg)


def test_read_only_folder_is_one_line(tmp_path, cache, monkeypatch):
    def ro(*a, **k):
        raise OSError(errno.EROFS, "Read-only file system", str(tmp_path / "runs"))
    monkeypatch.setattr(Path, "mkdir", ro)
    status, err = run_cli(tmp_path, cache)
    assert status == exits.EXIT_IO and one_line(err) == f"I/O error: {tmp_path / 'runs'}: read-only file system"


# ----- 10. nothing of an old run is touched until the new one can proceed ------------------------------
def test_a_new_run_that_cannot_proceed_leaves_the_old_one_whole(tmp_path, cache):
    train(tmp_path, cache, "train.max_steps=2")
    d = run_dir(tmp_path)
    before = {f.name: f.read_bytes() for f in d.iterdir() if f.is_file() and f.name != ".lock"}
    bad_text = tmp_path / "missing.txt"
    with pytest.raises(DataError):  # overwrite asked, but its data fails: the old run is kept whole
        train(tmp_path, cache, "overwrite=true", "data=text", f"data.path={bad_text}")
    with pytest.raises(exits.RunError):  # a bigger model cannot resume this checkpoint... nor replace it silently
        train(tmp_path, cache, "model.shape.d_model=32")
    assert {f.name: f.read_bytes() for f in d.iterdir() if f.is_file() and f.name != ".lock"} == before


# ----- 13. SIGINT / SIGTERM stop at a step boundary with a checkpoint -----------------------------------
def test_sigint_checkpoints_marks_interrupted_exits_130_and_resumes_bit_identically(tmp_path, cache):
    common = ["train.max_steps=120", "train.ckpt_every=0"]
    ref = tmp_path / "ref"
    T.train(spec_for(ref, cache, *common), run_dir(ref))
    d = run_dir(tmp_path)
    proc = subprocess.Popen(cmd(tmp_path, cache, *common), cwd=tmp_path, env=ENV, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    wait_for_lines(d / "metrics.jsonl", 5, proc)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert one_line(err).startswith("interrupted: SIGINT at step")
    summary = json.loads((d / "summary.json").read_text())
    stopped = summary["step"]
    assert summary["status"] == "interrupted" and summary["checkpoint_step"] == stopped
    assert torch.load(d / "checkpoint.pt", weights_only=False)["step"] == stopped
    assert read_metrics(d)[-1]["step"] == stopped
    if stopped == 120:
        pytest.skip("the run finished before the signal arrived")
    p = sub(tmp_path, cache, *common, "resume=true")
    assert p.returncode == 0, p.stderr
    a, b = read_metrics(run_dir(ref)), read_metrics(d)
    assert [r["train_loss"] for r in a] == [r["train_loss"] for r in b]
    assert [r["lr"] for r in a] == [r["lr"] for r in b]
    ma, mb = model_state(run_dir(ref) / "checkpoint.pt"), model_state(d / "checkpoint.pt")
    assert all(torch.equal(ma[k], mb[k]) for k in ma)
    s = json.loads((d / "summary.json").read_text())
    assert s["status"] == "completed" and s["wall_time_s"] > s["wall_time_this_segment_s"]


def test_sigterm_checkpoints_and_exits_143(tmp_path, cache):
    d = run_dir(tmp_path)
    proc = subprocess.Popen(cmd(tmp_path, cache, "train.max_steps=400", "train.ckpt_every=0"), cwd=tmp_path,
                            env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wait_for_lines(d / "metrics.jsonl", 3, proc)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 143, err
    assert one_line(err).startswith("interrupted: SIGTERM at step")
    summary = json.loads((d / "summary.json").read_text())
    assert summary["status"] == "interrupted"
    assert torch.load(d / "checkpoint.pt", weights_only=False)["step"] == summary["step"] == \
        read_metrics(d)[-1]["step"]


# ----- 14. stale temporaries are cleaned at start -----------------------------------------------------------
def test_stale_temporaries_are_cleaned_at_start(tmp_path, cache):
    train(tmp_path, cache, "train.max_steps=2", "train.stop_at_step=1")
    d = run_dir(tmp_path)
    (d / "checkpoint.pt.abc123.tmp").write_bytes(b"x" * 100)
    live = Path(cache) / "tokens" / f"y-train.{os.getpid()}.tmp.npy"  # a live writer's: kept
    live.parent.mkdir(exist_ok=True)
    live.write_bytes(b"")
    train(tmp_path, cache, "train.max_steps=2", "resume=true")
    assert not (d / "checkpoint.pt.abc123.tmp").exists() and live.exists()
    live.unlink()


# ----- 15. data that is not what it claims ------------------------------------------------------------------
def test_random_bytes_text_is_refused_and_leaves_no_run_folder(tmp_path, cache):
    f = tmp_path / "random.txt"
    f.write_bytes(os.urandom(200_000))
    p = sub(tmp_path, cache, "data=text", f"data.path={f}", "data.tokenizer=bytes")
    line = one_line(p.stderr)
    assert p.returncode == 2 and "is not UTF-8 text" in line and "of 200,000 bytes" in line
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").rglob("*"))  # item 17


def test_a_little_invalid_utf8_is_a_warning_with_numbers(tmp_path, capsys):
    from experiments.data import read_text
    f = tmp_path / "a.txt"
    f.write_bytes(b"hello world " * 1000 + b"\xff\xfe")
    assert read_text(f).startswith("hello")
    assert "2 of 12,002 bytes" in capsys.readouterr().err


def test_odd_length_bin_is_refused(tmp_path):
    from experiments.data import load_bin
    f = tmp_path / "tokens.bin"
    f.write_bytes(b"\x01\x00" * 500 + b"\x07")
    with pytest.raises(DataError, match="1,001 bytes, an odd number"):
        load_bin(str(f), 0.1, 256)


# ----- 17. small things --------------------------------------------------------------------------------------
def test_no_checkpoint_is_not_called_last_good(tmp_path, cache, monkeypatch):
    monkeypatch.setattr(T, "evaluate", lambda *a, **k: float("inf"))
    with pytest.raises(exits.TrainingDiverged) as e:
        train(tmp_path, cache, "train.max_steps=2", "train.ckpt_every=0")
    assert "no checkpoint was written" in str(e.value) and "last good" not in str(e.value)


def test_checkpoint_has_the_mode_of_its_siblings(tmp_path, cache):
    train(tmp_path, cache, "train.max_steps=1")
    d = run_dir(tmp_path)
    modes = {f: (d / f).stat().st_mode & 0o777 for f in ("checkpoint.pt", "summary.json", "metrics.jsonl")}
    assert len(set(modes.values())) == 1, modes


def test_wall_time_covers_every_segment(tmp_path, cache):
    first = train(tmp_path, cache, "train.max_steps=3", "train.stop_at_step=2")
    saved = torch.load(run_dir(tmp_path) / "checkpoint.pt", weights_only=False)["extra"]["wall_time_s"]
    assert 0 < saved <= first["wall_time_s"]  # the first segment's time up to its checkpoint
    second = train(tmp_path, cache, "train.max_steps=3", "resume=true")
    assert second["wall_time_s"] == pytest.approx(saved + second["wall_time_this_segment_s"], abs=1e-3)


# ----- 16. 2-process gloo DDP tears down cleanly, every time --------------------------------------------------
def _free_port() -> int:
    import socket
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_gloo_ddp_exits_cleanly_every_time(tmp_path, cache):
    """Three 2-process gloo DDP runs in a row, each rank launched as torchrun would (env://): every rank exits
    0, with no abort at teardown ("terminate called without an active exception") and without torch's
    broadcast_buffers FutureWarning. (Without torchrun's own process the three runs cost ~2/3 as much.)"""
    for i in range(3):
        port = _free_port()
        procs = [subprocess.Popen(cmd(tmp_path, cache, "model=moe", "train.max_steps=1", f"name=ddp{i}"),
                                  cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                  env={**ENV, "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port),
                                       "WORLD_SIZE": "2", "RANK": str(r), "LOCAL_RANK": str(r),
                                       "LOCAL_WORLD_SIZE": "2"})
                 for r in range(2)]
        outs = [p.communicate(timeout=180)[0] for p in procs]
        for rank, (p, out) in enumerate(zip(procs, outs)):
            assert p.returncode == 0, f"run {i} rank {rank}: {out[-3000:]}"
            assert "terminate called" not in out and "broadcast_buffers" not in out, out[-3000:]
        assert json.loads((run_dir(tmp_path, "moe", f"ddp{i}") / "summary.json").read_text())["world_size"] == 2


def test_a_data_error_under_ddp_stops_every_rank_at_once(tmp_path, cache):
    """Rank 0 prepares the data first; its failure is broadcast, so rank 1 exits with the same status at once
    (silently) instead of waiting in a collective; one line in all."""
    port = _free_port()
    procs = [subprocess.Popen(cmd(tmp_path, cache, "data=text", f"data.path={tmp_path / 'absent.txt'}"),
                              cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              env={**ENV, "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "WORLD_SIZE": "2",
                                   "RANK": str(r), "LOCAL_RANK": str(r), "LOCAL_WORLD_SIZE": "2"})
             for r in range(2)]
    outs = [p.communicate(timeout=60) for p in procs]
    assert [p.returncode for p in procs] == [2, 2], outs
    assert one_line(outs[0][1]).startswith("data error: data.path=") and outs[1][1].strip() == ""
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").rglob("*"))
