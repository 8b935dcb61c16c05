"""Checks before a run does any work: its folders are writable and its memory fits (`preflight`).

Both refuse with `RunError` (one line, exit status 2) before data is prepared, a model built or a run folder
created; ``python -m experiments.train`` runs them for every job of a ``-m`` sweep before the first starts.
"""
from __future__ import annotations

import os
from pathlib import Path

import torch

from accounting.memory import activation_elements
from accounting.params import count_parameters

from . import distributed
from .config import RunSpec
from .exits import RunError


def check_paths(cfg: dict) -> None:
    """``paths.runs``, ``paths.cache`` and the run folder must be (or be creatable as) writable folders:
    `RunError` with one line naming the path and the cause otherwise."""
    for key, value in (("paths.runs", cfg["paths"]["runs"]), ("paths.cache", cfg["paths"]["cache"]),
                       ("run_dir", cfg["run_dir"])):
        p = Path(value).expanduser()
        probe = p
        while not probe.exists() and probe != probe.parent:
            probe = probe.parent
        if probe.exists() and not probe.is_dir():
            raise RunError(f"{key}={value}: {probe} is a file, not a folder")
        if not os.access(probe, os.W_OK | os.X_OK):
            raise RunError(f"{key}={value}: {probe} is not writable (read-only or no permission)")


def training_memory_bytes(spec: RunSpec, world_size: int = 1) -> int:
    """A lower bound of the memory one rank needs (accounting): fp32 weights, gradients and two AdamW
    moments (16 bytes per parameter; sharded over the ranks under FSDP) plus the activations kept for the
    backward pass (``n_layers x`` the note's per-layer activations of one micro-batch, 4 bytes each)."""
    t = spec.cfg["train"]
    params = count_parameters(spec.shape).total
    state = 16 * params / (world_size if t["parallel"] == "fsdp" else 1)
    acts = spec.shape.n_layers * activation_elements(spec.shape, batch=t["batch_size"]) * 4
    return int(state + acts)


def available_memory(device: torch.device) -> tuple[int | None, str]:
    """(bytes, what): the device's total memory on CUDA, the machine's available memory on a CPU."""
    if device.type == "cuda":
        try:
            return int(torch.cuda.mem_get_info(device)[1]), f"{device} total memory"
        except Exception:  # no driver: leave it to CUDA
            return None, ""
    try:
        for ln in Path("/proc/meminfo").read_text().splitlines():
            if ln.startswith("MemAvailable:"):
                return int(ln.split()[1]) * 1024, "available memory"
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"), "physical memory"
    except (ValueError, OSError, AttributeError):
        return None, ""


def check_memory(spec: RunSpec, device: torch.device | None = None) -> None:
    """Refuse (one line) a run whose `training_memory_bytes` exceed what the device or machine has."""
    device = device or distributed.pick_device(spec.cfg["train"]["device"], int(os.environ.get("LOCAL_RANK", "0")))
    world = int(os.environ.get("WORLD_SIZE", "1"))
    need = training_memory_bytes(spec, world)
    if device.type == "cpu":
        need *= int(os.environ.get("LOCAL_WORLD_SIZE", "1"))  # the ranks of one machine share its memory
    have, what = available_memory(device)
    if have is not None and need > have:
        s = spec.shape
        raise RunError(f"this run needs at least {need / 2**30:,.1f} GiB (accounting: 16 bytes x "
                       f"{count_parameters(s).total:,} parameters + activations; d_model={s.d_model}, "
                       f"n_layers={s.n_layers}) but {what} is {have / 2**30:,.1f} GiB")


def preflight(spec: RunSpec, device: torch.device | None = None) -> None:
    """Checks that need no work: paths (`check_paths`) and memory (`check_memory`)."""
    check_paths(spec.cfg)
    check_memory(spec, device)
