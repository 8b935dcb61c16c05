"""Atomic checkpoints: model (parameters AND buffers, so router balancing biases), optimizer, scheduler,
data position (the step; batches are a function of it) and every RNG state.

A checkpoint is written to a temporary file in the run folder and moved into place with ``os.replace``,
so ``checkpoint.pt`` is always either the previous complete checkpoint or the new complete one, never a
torn file, even if the process is killed mid-write.
"""
from __future__ import annotations

import os
import random
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

CHECKPOINT = "checkpoint.pt"


def rng_state() -> dict[str, Any]:
    """Python, NumPy, torch CPU and (if present) CUDA RNG states."""
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_atomic(obj: Any, path: str | Path) -> Path:
    """``torch.save(obj)`` to ``path`` via a temporary file in the same folder and ``os.replace``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".tmp")
    os.close(fd)
    try:
        torch.save(obj, tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def save(path: str | Path, *, model: torch.nn.Module, optimizer, scheduler, step: int, tokens: int,
         extra: dict | None = None) -> Path:
    """Write a training checkpoint; ``step`` is the number of optimizer steps done (the data position)."""
    state = {"model": model.state_dict(), "optimizer": optimizer.state_dict(),
             "scheduler": scheduler.state_dict(), "step": step, "tokens": tokens,
             "data_position": {"next_step": step}, "rng": rng_state(), "extra": extra or {}}
    return save_atomic(state, path)


def load(path: str | Path, *, model: torch.nn.Module, optimizer=None, scheduler=None,
         map_location: str | torch.device = "cpu") -> dict:
    """Restore a checkpoint written by `save` into ``model`` (and optimizer, scheduler, RNGs); returns it."""
    state = torch.load(path, map_location=map_location, weights_only=False)
    model.load_state_dict(state["model"])
    if optimizer is not None:
        optimizer.load_state_dict(state["optimizer"])
    if scheduler is not None:
        scheduler.load_state_dict(state["scheduler"])
    set_rng_state(state["rng"])
    return state
