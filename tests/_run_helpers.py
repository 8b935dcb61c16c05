"""A tiny in-process training run, shared by the run-extension and logger tests (not a test module)."""
from __future__ import annotations

from pathlib import Path

import experiments.trainer as T
from experiments.config import compose, validate

FAST_MOE = ["model=moe", "data.tokenizer=bytes", "train.batch_size=2", "model.shape.seq_len=16",
            "train.eval_batches=1", "train.progress=none", "train.threads=1", "hardware.peak_flops_per_s=1e12",
            "train.log_every=1", "train.eval_every=2"]
"""Overrides of a tiny MoE run on the byte tokenizer, logging every step (a few seconds on the CPU)."""


def train_fast(root: Path, cache: Path, *overrides: str) -> dict:
    """Train `FAST_MOE` plus ``overrides`` into ``root`` (tokenizer cache ``cache``); the summary dict."""
    spec = validate(compose(FAST_MOE + [f"paths.runs={root}", f"paths.cache={cache}", *overrides]))
    return T.train(spec, spec.cfg["run_dir"])


def fast_folder(root: Path) -> Path:
    """The run folder of `train_fast` under ``root``."""
    return root / "default" / "moe" / "tiny-seed0"
