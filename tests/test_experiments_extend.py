"""Extending a run (issue 22, item 2): ``resume=true`` with a larger ``train.max_steps`` continues a finished
run; the steps it already trained are unchanged (read back from metrics.jsonl); the LR schedule keeps the
length the run started with, so the added steps train at the final LR."""
from __future__ import annotations

import json

import pytest

from experiments import exits
from experiments.metrics import read_metrics

from _run_helpers import fast_folder, train_fast

EXTRA = ["optim.warmup_steps=2", "optim.lr=0.01", "optim.min_lr_ratio=0.1"]

pytestmark = pytest.mark.usefixtures("clear_hydra")  # tests/conftest.py


def _train(root, cache, *overrides):
    return train_fast(root, cache, *EXTRA, *overrides)


_folder = fast_folder


def test_raising_max_steps_extends_a_finished_run(tmp_path, cache):
    a = tmp_path / "a"
    first = _train(a, cache, "train.max_steps=4")
    assert first["status"] == "completed" and first["step"] == 4
    old = read_metrics(_folder(a))
    ext = _train(a, cache, "train.max_steps=7", "resume=true")
    assert ext["status"] == "completed" and ext["step"] == 7 and ext["max_steps"] == 7
    assert ext["lr_schedule_steps"] == 4
    new = read_metrics(_folder(a))
    assert [r["step"] for r in new] == list(range(1, 8))
    # the steps of the finished run are unchanged: every value of every line, losses and router stats included
    assert new[:4] == old
    # the schedule keeps its 4 steps: warm-up and cosine as before, then the final LR (0.1 x 0.01)
    assert [r["lr"] for r in new[4:]] == pytest.approx([0.001] * 3, rel=1e-12)
    assert new[3]["lr"] > 0.001 and new[4]["train_loss"] != new[3]["train_loss"]
    assert json.loads((_folder(a) / "summary.json").read_text())["step"] == 7

    # extending in two segments (4 -> 5 -> 7) trains exactly the same steps as in one (4 -> 7)
    b = tmp_path / "b"
    _train(b, cache, "train.max_steps=4")
    _train(b, cache, "train.max_steps=5", "resume=true")
    _train(b, cache, "train.max_steps=7", "resume=true")
    two = read_metrics(_folder(b))
    assert [(r["train_loss"], r["lr"]) for r in two] == [(r["train_loss"], r["lr"]) for r in new]
    assert two[4]["val_loss"] is not None and new[4]["val_loss"] is None  # each segment evaluates its end
    assert [r["val_loss"] for r in two if r["step"] != 5] == [r["val_loss"] for r in new if r["step"] != 5]

    # a lower max_steps is still refused, and the same max_steps is a no-op
    with pytest.raises(exits.RunError, match=r"train.max_steps 7 -> 6"):
        _train(a, cache, "train.max_steps=6", "resume=true")
    assert _train(a, cache, "train.max_steps=7", "resume=true")["step"] == 7
    assert read_metrics(_folder(a)) == new


def test_a_checkpoint_without_a_recorded_schedule_uses_its_config(tmp_path, cache):
    """Checkpoints written before ``extra.schedule_steps`` existed: the length is their saved max_steps."""
    import torch
    _train(tmp_path, cache, "train.max_steps=3")
    f = _folder(tmp_path) / "checkpoint.pt"
    state = torch.load(f, weights_only=False)
    del state["extra"]["schedule_steps"]
    torch.save(state, f)
    s = _train(tmp_path, cache, "train.max_steps=5", "resume=true")
    assert s["lr_schedule_steps"] == 3
    assert [r["lr"] for r in read_metrics(_folder(tmp_path))[3:]] == pytest.approx([0.001] * 2, rel=1e-12)
