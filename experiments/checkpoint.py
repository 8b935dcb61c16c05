"""Atomic checkpoints: model (parameters AND buffers, so router balancing biases), optimizer, scheduler,
data position (the step; batches are a function of it) and every RNG state.

A checkpoint is written to a temporary file in the run folder and moved into place with ``os.replace``,
so ``checkpoint.pt`` is always either the previous complete checkpoint or the new complete one, never a
torn file, even if the process is killed mid-write.

Model and optimizer are stored as *full* state dicts keyed by parameter name (``torch.distributed.checkpoint``'s
``get_state_dict``), whether the run was single-process, DDP or FSDP2-sharded, so a checkpoint written by one
resumes under any other. Gathering a sharded state is a collective: every rank calls `save`, rank 0 writes.
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


def _is_sharded(model: torch.nn.Module) -> bool:
    from torch.distributed.tensor import DTensor
    return any(isinstance(p, DTensor) for p in model.parameters())


def full_state_dicts(model: torch.nn.Module, optimizer) -> tuple[dict, dict]:
    """Full (unsharded) model and optimizer state dicts keyed by parameter name. For a sharded model this
    is a collective and only rank 0 gets the tensors (gathered to CPU); the other ranks get empty dicts."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_state_dict
    sharded = _is_sharded(model)
    return get_state_dict(model, optimizer,
                          options=StateDictOptions(full_state_dict=True, cpu_offload=sharded))


def save(path: str | Path, *, model: torch.nn.Module, optimizer, scheduler, step: int, tokens: int,
         extra: dict | None = None, write: bool = True) -> Path:
    """Write a training checkpoint; ``step`` is the number of optimizer steps done (the data position).
    Under FSDP every rank must call it (the state is gathered); only the caller with ``write=True`` writes."""
    model_state, optim_state = full_state_dicts(model, optimizer)
    if not write:
        return Path(path)
    state = {"model": model_state, "optimizer": optim_state,
             "scheduler": scheduler.state_dict(), "step": step, "tokens": tokens,
             "data_position": {"next_step": step}, "rng": rng_state(), "extra": extra or {}}
    return save_atomic(state, path)


def load(path: str | Path, *, model: torch.nn.Module, optimizer=None, scheduler=None,
         map_location: str | torch.device = "cpu") -> dict:
    """Restore a checkpoint written by `save` into ``model`` (and optimizer, scheduler, RNGs); returns it.
    ``model`` may be plain, or already sharded with FSDP2 (every rank then loads the full file and keeps its
    shard); build the optimizer on the model as it will be trained before calling this."""
    from torch.distributed.checkpoint.state_dict import (StateDictOptions, set_model_state_dict,
                                                         set_state_dict)
    state = torch.load(path, map_location=map_location, weights_only=False)
    options = StateDictOptions(full_state_dict=True)
    if optimizer is None:
        set_model_state_dict(model, state["model"], options=options)
    else:
        set_state_dict(model, optimizer, model_state_dict=state["model"], optim_state_dict=state["optimizer"],
                       options=options)
    if scheduler is not None:
        scheduler.load_state_dict(state["scheduler"])
    set_rng_state(state["rng"])
    return state
