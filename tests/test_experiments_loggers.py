"""Loggers (issue 22, item 3): ``logger=tensorboard`` writes the scalars of metrics.jsonl, per-layer router
statistics included, as TensorBoard events in the run folder (read back with tensorboard's
EventAccumulator); ``logger=wandb`` without the package is one warning line; ``logger=none`` writes no
event file."""
from __future__ import annotations

import sys

import numpy as np
import pytest

from experiments.loggers import make_logger, scalars
from experiments.metrics import read_metrics

from _run_helpers import fast_folder, train_fast

EXTRA = ["optim.warmup_steps=1"]

pytestmark = pytest.mark.usefixtures("clear_hydra")  # tests/conftest.py


def _train(root, cache, *overrides):
    return train_fast(root, cache, *EXTRA, *overrides)


_folder = fast_folder


def _events(folder) -> dict[str, list[tuple[int, float]]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    ea = EventAccumulator(str(folder), size_guidance={"scalars": 0})
    ea.Reload()
    out = {tag: [(e.step, e.value) for e in ea.Scalars(tag)] for tag in ea.Tags()["scalars"]}
    return {tag: v for tag, v in out.items() if v}  # a purged tag stays listed, without values


def _expected(folder) -> dict[str, list[tuple[int, float]]]:
    out: dict[str, list] = {}
    for rec in read_metrics(folder):
        for tag, v in scalars(rec).items():
            out.setdefault(tag, []).append((rec["step"], float(np.float32(v))))  # events hold float32
    return out


def test_scalars_flatten_a_record():
    rec = {"step": 3, "train_loss": 2.5, "val_loss": None, "mtp_loss": None, "lr": 1e-3, "cv": "nan",
           "aux_losses": {"load_balance": 0.01}, "router": [{"layer": 1, "cv": 0.2, "load_fraction": [0.25, 0.75],
                                                             "bias": None, "z_loss": float("nan")}]}
    assert scalars(rec) == {"train_loss": 2.5, "lr": 1e-3, "aux_losses/load_balance": 0.01, "router/layer1/cv": 0.2,
                            "router/layer1/load_fraction/0": 0.25, "router/layer1/load_fraction/1": 0.75}


def test_tensorboard_events_equal_metrics_jsonl(tmp_path, cache):
    pytest.importorskip("tensorboard")
    _train(tmp_path, cache, "logger=tensorboard", "train.max_steps=4", "train.stop_at_step=2")
    folder = _folder(tmp_path)
    # as a segment killed after logging step 3 but before checkpointing it leaves things: a metrics line and
    # events past the checkpoint, which the resumed segment must drop (metrics truncated, TB purge_step)
    from torch.utils.tensorboard import SummaryWriter
    with (folder / "metrics.jsonl").open("a") as f:
        f.write('{"step": 3, "train_loss": 99.0}\n')
    with SummaryWriter(str(folder)) as w:
        w.add_scalar("train_loss", 99.0, 3)
        w.add_scalar("killed_only", 1.0, 3)
    _train(tmp_path, cache, "logger=tensorboard", "train.max_steps=4", "resume=true")  # a second segment
    assert list(folder.glob("events.out.tfevents.*"))
    events, expected = _events(folder), _expected(folder)
    assert events == expected
    assert {"train_loss", "val_loss", "lr", "mfu", "aux_losses/load_balance", "router/layer0/max_vio",
            "router/layer1/cv", "router/layer0/load_fraction/7", "router/layer1/tokens_per_expert/0"} <= set(events)
    assert [s for s, _ in events["train_loss"]] == [1, 2, 3, 4] and [s for s, _ in events["val_loss"]] == [2, 4]

    # overwrite=true replaces the old run's events with the new run's; logger=none writes none
    _train(tmp_path, cache, "logger=tensorboard", "train.max_steps=2", "overwrite=true", "optim.lr=0.001")
    assert _events(folder) == _expected(folder) and [s for s, _ in _events(folder)["lr"]] == [1, 2]
    _train(tmp_path, cache, "train.max_steps=2", "overwrite=true")
    assert not list(folder.glob("events.out.tfevents.*")) and len(read_metrics(folder)) == 2


def test_wandb_without_the_package_is_one_line(tmp_path, cache, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "wandb", None)  # `import wandb` raises ImportError
    assert make_logger({"logger": {"name": "wandb"}}, tmp_path) is None
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "logger=wandb but the wandb package is not installed" in err
    s = _train(tmp_path, cache, "logger=wandb", "train.max_steps=1")
    assert s["status"] == "completed" and len(read_metrics(_folder(tmp_path))) == 1
    assert make_logger({"logger": {"name": "tensorboard"}}, tmp_path, enabled=False) is None  # ranks > 0
