"""What one training segment holds (`RunState`): its settings, data, model and optimiser, and where it stands.

A segment is one process's stretch of a run, from a fresh start or a resume to completion, a stop step, a
signal or a failure; `experiments.trainer.train` builds one and passes it through its parts.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from . import checkpoint as ckpt
from .config import RunSpec
from .data import WindowSampler
from .distributed import DistInfo
from .metrics import MetricsWriter
from .run_folder import RunLock


@dataclass
class RunState:
    """One training segment's settings, data, model, optimiser and progress (steps are optimizer steps)."""

    spec: RunSpec
    run_dir: Path
    info: DistInfo
    dtype: str
    label: str
    t_start: float
    sampler: WindowSampler | None = None
    data: Any = None
    raw: torch.nn.Module | None = None        # the model as built
    model: torch.nn.Module | None = None      # raw, wrapped for DDP/FSDP and compiled
    optimizer: torch.optim.Optimizer | None = None
    scheduler: Any = None
    writer: MetricsWriter | None = None
    meta: dict = field(default_factory=dict)
    tokens_per_step: int = 0
    flops_per_token: float = 0.0
    max_steps: int = 0
    schedule_steps: int = 0                   # the LR schedule's length (`experiments.schedule.schedule_steps`)
    step: int = 0
    saved_step: int | None = None
    wall_before: float = 0.0
    last_train: float | None = None
    last_val: float | None = None
    peak: dict = field(default_factory=dict)
    lock: RunLock | None = None

    @property
    def cfg(self) -> dict:
        return self.spec.cfg

    @property
    def ckpt_path(self) -> Path:
        return self.run_dir / ckpt.CHECKPOINT

    @property
    def stop(self) -> int:
        return self.cfg["train"]["stop_at_step"] or self.max_steps

    def kept(self) -> str:
        """The end of a divergence message: where the last good checkpoint is, if any."""
        if self.ckpt_path.exists():
            return f"the last good checkpoint is kept at {self.ckpt_path}"
        return "no checkpoint was written"
