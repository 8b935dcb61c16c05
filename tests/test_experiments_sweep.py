"""-m sweeps (issue 22, item 1): every job gets its own folder named by the swept keys; the up-front check
expands the sweep and refuses two jobs on one folder; sweeps over a top-k, a size, a learning rate and a seed
run to the end through the real CLI; the report shows the swept values as columns."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import experiments.train as T
from experiments import exits
from experiments.config import ConfigError
from experiments.sweep import safe_value, sweep_tag, swept_keys

REPO = Path(__file__).resolve().parent.parent
ENV = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
FAST = ["data.tokenizer=bytes", "train.batch_size=2", "model.shape.seq_len=16", "train.eval_batches=1",
        "train.progress=none", "train.threads=1", "hardware.peak_flops_per_s=1e12", "train.max_steps=2",
        "train.log_every=1", "optim.warmup_steps=1"]

pytestmark = pytest.mark.usefixtures("clear_hydra")  # tests/conftest.py


def test_swept_keys_are_the_sweeps_minus_the_path():
    assert swept_keys(["name=s", "model.shape.top_k=1,2", "train.max_steps=10"]) == ["model.shape.top_k"]
    assert swept_keys(["model=dense,moe", "seed=0,1", "size=tiny,small", "name=a,b"]) == []
    assert swept_keys(["optim.lr=range(1,3)", "+model.router.jitter_eps=0.1,0.2"]) == \
        ["model.router.jitter_eps", "optim.lr"]
    # an experiment file's hydra.sweeper.params sweep, unless the command line sets the key
    assert swept_keys(["x=1"], {"optim.lr": "1e-3,3e-3", "model": "dense,moe"}) == ["optim.lr"]
    assert swept_keys(["optim.lr=0.01"], {"optim.lr": "1e-3,3e-3"}) == []
    assert sweep_tag(["name=s", "optim.lr=0.001", "model.shape.top_k=2"], ["optim.lr", "model.shape.top_k"]) == \
        ",model.shape.top_k=2,optim.lr=0.001"
    assert sweep_tag(["name=s"], []) == ""
    assert safe_value("[0.9,0.95]") == "_0.9_0.95_" and safe_value("a/b") == "a_b"


def test_single_runs_and_the_demo_keep_their_folders():
    assert T.sweep_folders(["model.shape.top_k=1"]) == ["runs/default/moe/tiny-seed0"]
    assert T.sweep_folders(["-m", "model=dense,moe", "experiment=demo"]) == \
        ["runs/demo/dense/tiny-seed0", "runs/demo/moe/tiny-seed0"]
    assert T.sweep_folders(["-m", "name=s", "model=dense,moe", "seed=0,1"]) == \
        ["runs/s/dense/tiny-seed0", "runs/s/dense/tiny-seed1", "runs/s/moe/tiny-seed0", "runs/s/moe/tiny-seed1"]


def test_precheck_names_each_job_and_refuses_a_collision(tmp_path):
    runs = f"paths.runs={tmp_path}"
    assert T.sweep_folders(["-m", runs, "name=s", "model.shape.top_k=1,2,4"]) == \
        [f"{tmp_path}/s/moe/tiny-seed0,model.shape.top_k={k}" for k in (1, 2, 4)]
    # experiment params (model) and a command-line sweep (optim.lr) together
    folders = T.sweep_folders(["-m", runs, "experiment=equal_active", "optim.lr=1e-3,3e-3"])
    assert [str(Path(f).relative_to(tmp_path / "equal_active")) for f in folders] == \
        ["dense/small-seed0,optim.lr=0.001", "dense/small-seed0,optim.lr=0.003",
         "moe/small-seed0,optim.lr=0.001", "moe/small-seed0,optim.lr=0.003"]
    with pytest.raises(ConfigError, match=r"sweep jobs 1 and 2 would both train into .*top_k=1"):
        T.precheck(["-m", runs, "name=s", "model.shape.top_k=1,1"])
    # a used folder is refused before any job starts, unless resume/overwrite
    used = tmp_path / "u" / "moe" / "tiny-seed0,model.shape.top_k=2"
    used.mkdir(parents=True)
    (used / "metrics.jsonl").write_text("")
    assert T.precheck(["-m", runs, "name=u", "model.shape.top_k=1,2"]) == 2
    with pytest.raises(exits.RunError, match=r"already holds a run .*\[job: .*top_k=2\]"):
        T.precheck(["-m", runs, "name=u", "model.shape.top_k=1,2"], check_used=True)
    assert T.precheck(["-m", runs, "name=u", "model.shape.top_k=1,2", "overwrite=true"], check_used=True) == 2


def _sweep(tmp_path, cache, *overrides, timeout=300):
    return subprocess.run([sys.executable, "-m", "experiments.train", "-m", *FAST, f"paths.runs={tmp_path / 'runs'}",
                           f"paths.cache={cache}", *overrides], cwd=tmp_path, env=ENV, capture_output=True,
                          text=True, timeout=timeout)


def _completed(folder: Path) -> int:
    return json.loads((folder / "summary.json").read_text())["step"] if (folder / "summary.json").exists() else -1


def test_top_k_sweep_runs_every_job_in_its_own_folder(tmp_path, cache):
    """The issue's command, with 3 values: job 2 used to stop with 'already holds a run'."""
    p = _sweep(tmp_path, cache, "name=sweep", "model.shape.top_k=1,2,4")
    assert p.returncode == 0, p.stderr[-2000:]
    runs = tmp_path / "runs" / "sweep" / "moe"
    assert sorted(d.name for d in runs.iterdir()) == [f"tiny-seed0,model.shape.top_k={k}" for k in (1, 2, 4)]
    for k in (1, 2, 4):
        d = runs / f"tiny-seed0,model.shape.top_k={k}"
        assert _completed(d) == 2
        cfg = (d / "config.yaml").read_text()
        assert f"top_k: {k}\n" in cfg and f"run_dir: runs/sweep/moe/tiny-seed0,model.shape.top_k={k}\n" in cfg
    assert "[sweep] job 3/3 done" in p.stderr
    # rerun: refused up front (job 1), in one line, before anything trains
    again = _sweep(tmp_path, cache, "name=sweep", "model.shape.top_k=1,2,4")
    assert again.returncode == 2 and again.stderr.count("\n") == 1 and "already holds a run" in again.stderr
    assert all(_completed(runs / f"tiny-seed0,model.shape.top_k={k}") == 2 for k in (1, 2, 4))

    # the report's run table has the swept key as a column
    from reports import context
    from reports.collect import collect
    from reports.sections.runs import training_runs
    col = collect([tmp_path / "runs"], ["sweep"])
    assert list(col.runs.sort_values("run")["swept"]) == [{"model.shape.top_k": k} for k in (1, 2, 4)]
    table = training_runs(context.compute(col, tmp_path / "report")).markdown
    assert "| run | model.shape.top_k | family |" in table
    for k in (1, 2, 4):
        assert f"| sweep/moe/tiny-seed0,model.shape.top_k={k} | {k} | moe |" in table


def test_size_lr_and_seed_sweep_runs_to_the_end(tmp_path, cache):
    p = _sweep(tmp_path, cache, "name=grid", "model=dense", "size=tiny,small", "optim.lr=1e-3,3e-3", "seed=0,1")
    assert p.returncode == 0, p.stderr[-2000:]
    folders = sorted(str(d.relative_to(tmp_path / "runs")) for d in (tmp_path / "runs" / "grid").glob("*/*"))
    assert folders == sorted(f"grid/dense/{s}-seed{seed},optim.lr={lr}" for s in ("small", "tiny")
                             for seed in (0, 1) for lr in ("0.001", "0.003"))
    assert all(_completed(tmp_path / "runs" / f) == 2 for f in folders)
