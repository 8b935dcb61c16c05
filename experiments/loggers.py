"""Optional loggers beside metrics.jsonl (always written): the Hydra group ``logger`` (conf/logger/).

- ``logger=none`` (default): metrics.jsonl only.
- ``logger=tensorboard``: TensorBoard event files in the run folder (``torch.utils.tensorboard``; needs the
  ``tensorboard`` package: ``pip install -e '.[tensorboard]'``), so ``tensorboard --logdir runs`` shows
  every run folder as one run. The scalars are those of each metrics.jsonl record (`scalars`).
- ``logger=wandb``: Weights & Biases, OFFLINE (files under ``<run_dir>/wandb``, uploaded later with
  ``wandb sync``) unless configured otherwise through wandb's own environment variables (``WANDB_MODE=online``,
  ``WANDB_PROJECT``, ``WANDB_ENTITY``); used only when the ``wandb`` package is installed, else one line
  on stderr and the run goes on with metrics.jsonl.

A logger opens lazily, at the first record: creating it never touches a run folder before the trainer
has locked it and decided to train there. `experiments.metrics.MetricsWriter` calls it after each line it
appends (rank 0 only), tells it where a resumed run restarts (TensorBoard drops the events a killed
segment logged after its checkpoint: ``purge_step``). A run that starts afresh in a used folder
(``overwrite=true``) deletes the old run's event files (`remove_event_files`) with its other files.
"""
from __future__ import annotations

import hashlib
import importlib.util
import math
import os
import sys
from pathlib import Path
from typing import Any

LOGGERS = ("none", "tensorboard", "wandb")
"""The options of the ``logger`` group (``logger.name``)."""

TB_EVENTS = "events.out.tfevents.*"
"""TensorBoard's event file names (in the run folder)."""


def scalars(record: dict) -> dict[str, float]:
    """The finite numbers of one metrics.jsonl record as ``{tag: value}``, ``step`` (the x-axis) excluded.
    Nested fields get ``/``-joined tags: ``aux_losses/load_balance``, per MoE layer
    ``router/layer<l>/cv``, ``router/layer<l>/max_vio``, ... and per expert
    ``router/layer<l>/load_fraction/<e>`` (``tokens_per_expert``, ``bias`` likewise). ``None`` (not
    evaluated, no MTP), strings and non-finite values are left out."""
    out: dict[str, float] = {}

    def add(tag: str, v: Any) -> None:
        if isinstance(v, bool) or v is None:
            return
        if isinstance(v, (int, float)):
            if math.isfinite(v):
                out[tag] = float(v)
        elif isinstance(v, dict):
            for k, x in v.items():
                add(f"{tag}/{k}", x)
        elif isinstance(v, (list, tuple)):
            for i, x in enumerate(v):
                add(f"{tag}/{i}", x)

    for key, value in record.items():
        if key == "step":
            continue
        if key == "router" and isinstance(value, list):
            for i, layer in enumerate(value):
                if isinstance(layer, dict):
                    n = layer.get("layer", i)
                    add(f"router/layer{i if n is None else n}", {k: v for k, v in layer.items() if k != "layer"})
        else:
            add(key, value)
    return out


class Logger:
    """``logger=none``: does nothing. Subclasses open lazily in `_open`."""

    name = "none"

    def __init__(self, run_dir: str | Path, cfg: dict | None = None):
        self.run_dir, self.cfg = Path(run_dir), cfg or {}
        self.first_step: int | None = None   # a resumed run's first new step (drop later events of older segments)
        self._opened = False

    def log(self, record: dict) -> None:
        if not self._opened:
            self._opened = True
            self._open()
        self._log(int(record["step"]), scalars(record))

    def close(self) -> None:
        """Flush and close (the trainer calls it at the end of every segment)."""

    def _open(self) -> None:
        pass

    def _log(self, step: int, values: dict[str, float]) -> None:
        pass


class TensorBoardLogger(Logger):
    """Event files in the run folder through ``torch.utils.tensorboard.SummaryWriter``."""

    name = "tensorboard"

    def __init__(self, run_dir: str | Path, cfg: dict | None = None):
        super().__init__(run_dir, cfg)
        self.writer = None

    def _open(self) -> None:
        from torch.utils.tensorboard import SummaryWriter
        # purge_step: TensorBoard hides what an earlier segment logged from this step on (steps a killed run
        # logged after its last checkpoint, which metrics.jsonl drops too)
        self.writer = SummaryWriter(log_dir=str(self.run_dir), purge_step=self.first_step)

    def _log(self, step: int, values: dict[str, float]) -> None:
        for tag, v in values.items():
            self.writer.add_scalar(tag, v, global_step=step)
        self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None
        self._opened = False


class WandbLogger(Logger):
    """Weights & Biases, offline unless ``WANDB_MODE`` says otherwise; one run id per run folder, so a
    resumed segment continues the same wandb run."""

    name = "wandb"

    def __init__(self, run_dir: str | Path, cfg: dict | None = None):
        super().__init__(run_dir, cfg)
        self.run = None

    def _open(self) -> None:
        import wandb
        cfg = self.cfg
        run_id = hashlib.sha1(str(self.run_dir.resolve()).encode()).hexdigest()[:16]
        self.run = wandb.init(dir=str(self.run_dir), mode=os.environ.get("WANDB_MODE", "offline"),
                              project=os.environ.get("WANDB_PROJECT") or str(cfg.get("name", "experiments")),
                              name=f"{cfg.get('name')}/{self.run_dir.parent.name}/{self.run_dir.name}",
                              id=run_id, resume="allow",
                              config={k: v for k, v in cfg.items() if k not in ("hydra", "logger")})

    def _log(self, step: int, values: dict[str, float]) -> None:
        self.run.log(values, step=step)

    def close(self) -> None:
        if self.run is not None:
            self.run.finish()
            self.run = None
        self._opened = False


def remove_event_files(run_dir: str | Path) -> list[Path]:
    """Delete the TensorBoard event files in ``run_dir`` (an old run's, when a new one replaces it)."""
    removed = sorted(Path(run_dir).glob(TB_EVENTS))
    for p in removed:
        p.unlink(missing_ok=True)
    return removed


def make_logger(cfg: dict, run_dir: str | Path, enabled: bool = True) -> Logger | None:
    """The logger ``cfg["logger"]["name"]`` asks for (None for ``none`` or when not ``enabled``: ranks > 0).
    A missing package prints one line on stderr and returns None: the run goes on with metrics.jsonl."""
    name = ((cfg.get("logger") or {}).get("name") or "none") if enabled else "none"
    if name == "none":
        return None
    package = name  # the logger's package has its name
    if importlib.util.find_spec(package) is None:
        hint = "pip install -e '.[tensorboard]'" if name == "tensorboard" else "pip install wandb"
        print(f"warning: logger={name} but the {package} package is not installed ({hint}); logging to "
              f"metrics.jsonl only", file=sys.stderr, flush=True)
        return None
    return (TensorBoardLogger if name == "tensorboard" else WandbLogger)(run_dir, cfg)
