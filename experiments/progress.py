"""Progress lines: of one run's steps (`Progress`) and of a Hydra sweep (``[sweep] job i/n ... elapsed, ~time
left``, `SweepProgress`).

`Progress` draws a tqdm bar on a TTY and prints plain lines otherwise (CI), on rank 0 only.

Registered in ``conf/config.yaml`` under ``hydra.callbacks``; Hydra calls it around every job of
``python -m experiments.train -m ...`` (the basic launcher runs the jobs one after another in this
process). The number of jobs is counted from the sweep's overrides as Hydra's basic sweeper expands them;
time left is the mean time of the finished jobs times the jobs still to run. A single run (no ``-m``)
prints nothing. Lines go to stderr so that they never mix with a job's own output on stdout.
"""
from __future__ import annotations

import sys
import time
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig
from tqdm import tqdm

from .sweep import sweep_jobs


def fmt_loss(x: float | None) -> str:
    """A loss with 4 decimals, ``-`` when there is none."""
    return "-" if x is None else f"{x:.4f}"


class Progress:
    """tqdm bar on a TTY, plain lines otherwise (CI), nothing on ranks > 0."""

    def __init__(self, mode: str, total: int, initial: int, enabled: bool, label: str):
        self.bar, self.label, self.enabled = None, label, enabled
        self.lines = enabled and (mode == "lines" or (mode == "auto" and not sys.stderr.isatty()))
        if enabled and (mode == "bar" or (mode == "auto" and sys.stderr.isatty())):
            self.bar = tqdm(total=total, initial=initial, desc=label, dynamic_ncols=True)

    def update(self, step: int, rec: dict | None) -> None:
        if self.bar is not None:
            self.bar.update(1)
            if rec:
                self.bar.set_postfix(loss=f"{rec['train_loss']:.3f}", val=fmt_loss(rec.get("val_loss")),
                                     tok_s=f"{rec['tokens_per_s']:.0f}")
        elif self.lines and rec:
            mfu = rec.get("mfu")
            print(f"[{self.label}] step {step}/{rec['max_steps']} | loss {rec['train_loss']:.4f} | "
                  f"val {fmt_loss(rec.get('val_loss'))} | lr {rec['lr']:.2e} | {rec['tokens_per_s']:.0f} tok/s | "
                  f"mfu {'-' if mfu is None else f'{100 * mfu:.2f}%'}", flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def count_jobs(config: DictConfig) -> int | None:
    """Jobs of the sweep described by ``config.hydra`` (task overrides + sweeper params); None if unknown."""
    try:
        return len(sweep_jobs(list(config.hydra.overrides.task), config.hydra.sweeper.get("params")))
    except Exception:  # noqa: BLE001  (progress is a courtesy; never break a sweep over it)
        return None


def _dur(s: float) -> str:
    s = max(0.0, s)
    return f"{int(s // 60)} min {int(s % 60):02d} s" if s >= 60 else f"{s:.0f} s"


class SweepProgress(Callback):
    """Prints one line when each job of a multirun starts and ends."""

    def __init__(self) -> None:
        self.n: int | None = None
        self.t0 = 0.0
        self.done = 0
        self.job_t0 = 0.0

    def _print(self, msg: str) -> None:
        print(f"[sweep] {msg}", file=sys.stderr, flush=True)

    def on_multirun_start(self, config: DictConfig, **_kwargs: Any) -> None:
        self.n, self.t0, self.done = count_jobs(config), time.perf_counter(), 0
        if self.n:
            self._print(f"{self.n} job(s), run one after another")

    def _multirun(self, config: DictConfig) -> bool:
        try:
            return str(config.hydra.mode) == "RunMode.MULTIRUN" or str(config.hydra.mode) == "MULTIRUN"
        except Exception:  # noqa: BLE001
            return False

    def on_job_start(self, config: DictConfig, **_kwargs: Any) -> None:
        if not self._multirun(config):
            return
        self.job_t0 = time.perf_counter()
        i = int(config.hydra.job.num) + 1
        of = f"/{self.n}" if self.n else ""
        left = ""
        if self.done and self.n:
            el = time.perf_counter() - self.t0
            left = f"; {_dur(el)} elapsed, ~{_dur(el / self.done * (self.n - self.done))} left"
        self._print(f"job {i}{of} starting: {' '.join(config.hydra.overrides.task)}{left}")

    def on_job_end(self, config: DictConfig, job_return: Any = None, **_kwargs: Any) -> None:
        if not self._multirun(config):
            return
        self.done += 1
        el = time.perf_counter() - self.t0
        of = f"/{self.n}" if self.n else ""
        left = f", ~{_dur(el / self.done * (self.n - self.done))} left" if self.n else ""
        status = getattr(getattr(job_return, "status", None), "name", "")
        self._print(f"job {int(config.hydra.job.num) + 1}{of} {'failed' if status == 'FAILED' else 'done'} in "
                    f"{_dur(time.perf_counter() - self.job_t0)}; {_dur(el)} elapsed{left}")
