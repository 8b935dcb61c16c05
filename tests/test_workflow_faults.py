"""Faults still open in issue 22 (item 9): a checkpoint write refused with EFBIG (a file-size limit) is one
line and exit 4; ``python -m reports --out FILE`` is one line and exit 2; ``--runs MYRUNS`` includes the
user's own runs whatever their experiment name; a ``--select`` that matches nothing is an error."""
from __future__ import annotations

import os
import resource
import signal
import subprocess
import sys
from pathlib import Path

import pytest

import experiments.trainer as T
from experiments import exits
from experiments.config import compose, validate
from reports.__main__ import main as reports_main

from test_reports import _write_run

REPO = Path(__file__).resolve().parent.parent
ENV = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
FAST = ["model=dense", "data.tokenizer=bytes", "train.batch_size=2", "model.shape.seq_len=16", "train.eval_batches=1",
        "train.progress=none", "train.threads=1", "hardware.peak_flops_per_s=1e12", "train.max_steps=2"]


def test_checkpoint_refused_with_efbig_is_one_line(tmp_path, cache, clear_hydra):
    # the data cache first, without a limit (the tiny model's checkpoint is ~1.6 MB, the cache's arrays larger)
    spec = validate(compose(FAST + [f"paths.runs={tmp_path / 'warm'}", f"paths.cache={cache}"]))
    T.train(spec, spec.cfg["run_dir"])
    limit = 400_000  # bytes: config, env and metrics fit, the checkpoint does not

    def limited():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG, no signal
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    p = subprocess.run([sys.executable, "-m", "experiments.train", *FAST, f"paths.runs={tmp_path / 'runs'}",
                        f"paths.cache={cache}"], cwd=tmp_path, env=ENV, capture_output=True, text=True, timeout=300,
                       preexec_fn=limited)
    folder = tmp_path / "runs" / "default" / "dense" / "tiny-seed0"
    assert p.returncode == exits.EXIT_IO, p.stderr[-3000:]
    assert p.stderr == f"I/O error: {folder / 'checkpoint.pt'}: file too large for the file-size limit (ulimit -f)\n"
    assert not (folder / "checkpoint.pt").exists() and not list(folder.glob("*.tmp"))
    assert (folder / "metrics.jsonl").read_text().count("\n") == 1  # the step was logged, only the save failed


def test_reports_out_that_is_a_file_is_one_line(tmp_path, capsys):
    _write_run(tmp_path / "mine", "dense", False, "dense", steps=3)
    f = tmp_path / "report.md"
    f.write_text("not a folder")
    assert reports_main(["--runs", str(tmp_path / "mine"), "--out", str(f)]) == 2
    assert capsys.readouterr().err == f"error: --out {f}: is a file, not a folder\n"
    assert reports_main(["--runs", str(tmp_path / "mine"), "--out", str(f / "sub")]) == 2
    assert capsys.readouterr().err == f"error: --out {f / 'sub'}: {f} is a file, not a folder\n"
    assert f.read_text() == "not a folder"


def test_reports_over_my_runs_includes_them_and_an_empty_select_is_an_error(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    _write_run(tmp_path / "mine", "dense", False, "dense", steps=3)   # experiment "synthetic", not "demo"
    _write_run(tmp_path / "mine" / "b", "moe", True, "aux_loss", steps=3)
    assert reports_main(["--runs", "mine", "--select", "nosuch", "--out", "out"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: --select nosuch matches no run under mine (found "
                                                   "synthetic/dense/tiny-seed0, synthetic/moe/tiny-seed0)")
    assert not (tmp_path / "out").exists()
    assert reports_main(["--runs", "mine", "--out", "out"]) == 0
    assert "from 2 run(s)" in capsys.readouterr().out
    text = (tmp_path / "out" / "REPORT.md").read_text()
    assert "2 run folder(s) selected by `*`" in text and "| synthetic/moe/tiny-seed0 |" in text
