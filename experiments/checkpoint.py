"""Atomic checkpoints: model (parameters AND buffers, so router balancing biases), optimizer, scheduler,
data position (the step; batches are a function of it) and every RNG state.

A checkpoint is written to a temporary file in the run folder and moved into place with ``os.replace``,
so ``checkpoint.pt`` is always either the previous complete checkpoint or the new complete one, never a
torn file, even if the process is killed mid-write. The temporary file is flushed and ``fsync``-ed before
the rename; a write that fails (a full disk: ``OSError`` ENOSPC) removes it and leaves the old checkpoint.
A checkpoint file has the mode of its sibling files (umask), not mkstemp's 0600.

A checkpoint records the run's model shape, model family and configuration (``meta``). `load` reads the
file, compares its shape and family with the model it is asked to fill, and checks every tensor's shape
BEFORE loading anything, raising `CheckpointError` (one line naming the file and what differs) for a
damaged, empty or foreign file.

Model and optimizer are stored as *full* state dicts keyed by parameter name (``torch.distributed.checkpoint``'s
``get_state_dict``), whether the run was single-process, DDP or FSDP2-sharded, so a checkpoint written by one
resumes under any other. Gathering a sharded state is a collective: every rank calls `save`, rank 0 writes.
"""
from __future__ import annotations

import pickle
import random
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .atomic import write_atomic

CHECKPOINT = "checkpoint.pt"
FORMAT = 2
"""Checkpoint layout version (2: ``meta`` with shape, family and config; ``wall_time_s``)."""


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be used; ``str(err)`` is one line naming the file and the cause."""


def stale_temporaries(folder: str | Path) -> list[Path]:
    """Temporary files `write_atomic` leaves when killed mid-write (``<name>.<random>.tmp``)."""
    folder = Path(folder)
    return sorted(p for p in folder.glob("*.tmp") if p.is_file()) if folder.is_dir() else []


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
    """``torch.save(obj)`` to ``path`` via `write_atomic`. A write the file system refuses (a full disk:
    ENOSPC; a file-size limit, ``ulimit -f``: EFBIG) raises that ``OSError``, not the RuntimeError ("unexpected
    pos") that torch's zip writer raises over it when it closes the file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return write_atomic(path, lambda f: _torch_save(obj, f))


def _torch_save(obj: Any, f) -> None:
    try:
        torch.save(obj, f)
    except RuntimeError as e:
        cause = e.__context__
        while cause is not None and not isinstance(cause, OSError):
            cause = cause.__context__
        if cause is None:
            raise
        raise cause from None


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


def all_finite(tensors) -> bool:
    """True when every floating-point tensor in ``tensors`` (plain or the local shard of a DTensor) is
    finite."""
    for t in tensors:
        t = t.to_local() if hasattr(t, "to_local") else t
        if t.is_floating_point() and not bool(torch.isfinite(t).all()):
            return False
    return True


def save(path: str | Path, *, model: torch.nn.Module, optimizer, scheduler, step: int, tokens: int,
         extra: dict | None = None, meta: dict | None = None, write: bool = True) -> Path:
    """Write a training checkpoint; ``step`` is the number of optimizer steps done (the data position).
    ``meta`` records what the checkpoint is of (``shape``, ``family``, ``config``; compared by `load`).
    Under FSDP every rank must call it (the state is gathered); only the caller with ``write=True`` writes."""
    model_state, optim_state = full_state_dicts(model, optimizer)
    if not write:
        return Path(path)
    state = {"format": FORMAT, "meta": meta or {}, "model": model_state, "optimizer": optim_state,
             "scheduler": scheduler.state_dict(), "step": step, "tokens": tokens,
             "data_position": {"next_step": step}, "rng": rng_state(), "extra": extra or {}}
    return save_atomic(state, path)


def read(path: str | Path, map_location: str | torch.device = "cpu") -> dict:
    """The raw checkpoint dict; `CheckpointError` (one line) for a missing, empty, truncated or foreign
    file."""
    path = Path(path)
    try:
        size = path.stat().st_size
    except OSError as e:
        raise CheckpointError(f"checkpoint {path}: cannot read it ({e.strerror or e})") from None
    if size == 0:
        raise CheckpointError(f"checkpoint {path} is empty (0 bytes); delete it or pass overwrite=true")
    try:
        state = torch.load(path, map_location=map_location, weights_only=False)
    except (RuntimeError, pickle.UnpicklingError, zipfile.BadZipFile, EOFError, ValueError, KeyError,
            AttributeError, ImportError, IndexError, TypeError, UnicodeDecodeError) as e:
        first = (str(e).strip().splitlines() or [type(e).__name__])[0][:160]
        raise CheckpointError(f"checkpoint {path} ({size} bytes) is damaged or not a training checkpoint "
                              f"({type(e).__name__}: {first})") from None
    except OSError as e:
        raise CheckpointError(f"checkpoint {path}: cannot read it ({e.strerror or e})") from None
    missing = [k for k in ("model", "optimizer", "scheduler", "step", "rng") if not isinstance(state, dict)
               or k not in state]
    if missing:
        raise CheckpointError(f"checkpoint {path} is not a training checkpoint (missing "
                              f"{', '.join(missing)})")
    return state


def _differences(saved: dict, wanted: dict) -> list[str]:
    keys = sorted(set(saved) | set(wanted), key=str)
    return [f"{k} {saved.get(k)!r} != {wanted.get(k)!r}" for k in keys if saved.get(k) != wanted.get(k)]


def check_compatible(state: dict, path: str | Path, model: torch.nn.Module, *, shape: dict | None = None,
                     family: str | None = None) -> None:
    """Raise `CheckpointError` (one line) unless ``state`` fits ``model``: same family and shape fields
    (when the checkpoint records them), then the same parameter/buffer names and tensor shapes."""
    meta = state.get("meta") or {}
    diffs = []
    if family is not None and meta.get("family") is not None and meta["family"] != family:
        diffs.append(f"model family {meta['family']!r} (checkpoint) != {family!r} (this run)")
    if shape is not None and meta.get("shape") is not None:
        d = _differences(meta["shape"], shape)
        if d:
            diffs.append("shape " + ", ".join(d) + " (checkpoint != this run)")
    if not diffs:
        ours = {k: tuple(v.shape) for k, v in model.state_dict().items()}
        theirs = {k: tuple(v.shape) for k, v in state["model"].items() if hasattr(v, "shape")}
        only_ckpt, only_model = sorted(set(theirs) - set(ours)), sorted(set(ours) - set(theirs))
        shapes = [f"{k} {list(theirs[k])} != {list(ours[k])}" for k in sorted(set(ours) & set(theirs))
                  if ours[k] != theirs[k]]
        if only_ckpt:
            diffs.append(f"{len(only_ckpt)} tensor(s) not in this model (e.g. {only_ckpt[0]})")
        if only_model:
            diffs.append(f"{len(only_model)} tensor(s) missing (e.g. {only_model[0]})")
        if shapes:
            diffs.append(f"{len(shapes)} tensor shape(s) differ (e.g. {shapes[0]})")
    if diffs:
        raise CheckpointError(f"checkpoint {path} does not fit this model: {'; '.join(diffs)}")


def load(path: str | Path, *, model: torch.nn.Module, optimizer=None, scheduler=None,
         map_location: str | torch.device = "cpu", state: dict | None = None) -> dict:
    """Restore a checkpoint written by `save` into ``model`` (and optimizer, scheduler, RNGs); returns it.
    ``model`` may be plain, or already sharded with FSDP2 (every rank then loads the full file and keeps its
    shard); build the optimizer on the model as it will be trained before calling this."""
    from torch.distributed.checkpoint.state_dict import (StateDictOptions, set_model_state_dict,
                                                         set_state_dict)
    if state is None:
        state = read(path, map_location)
        check_compatible(state, path, model)
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
