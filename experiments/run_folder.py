"""The run folder: one training per folder (`RunLock`), the decision to start, resume or stop
(`claim_folder`), what may change on resume (`changed_settings`) and the clean-up of what a killed run left.

Nothing of an earlier run is touched before the new one may proceed: `claim_folder` only locks and decides;
the trainer removes an old run's files (``overwrite=true``) or truncates its metrics (resume) afterwards.
"""
from __future__ import annotations

import enum
import fcntl  # POSIX only: runs are trained on Linux
import json
import os
import re
from pathlib import Path
from typing import Any, Callable

from omegaconf import OmegaConf

from . import checkpoint as ckpt
from .distributed import DistInfo
from .exits import RunError, agree

RUN_FILES = ("metrics.jsonl", ckpt.CHECKPOINT, "summary.json", "config.yaml", "env.json")
"""The files a run writes into its folder (besides the lock)."""
LOCK = ".lock"


class Decision(enum.IntEnum):
    """What rank 0 decided for a run folder (broadcast to every rank as an integer)."""

    FRESH = 0      # train from step 0 (an old run's files are removed only after the decision)
    RESUME = 1     # continue from the folder's checkpoint
    COMPLETED = 2  # the checkpoint's run already finished: nothing to do


class RunLock:
    """An exclusive ``flock`` on ``<run_dir>/.lock`` holding the holder's pid. The kernel drops the lock when
    its process dies, so a lock file left by a dead process is simply taken over."""

    def __init__(self, run_dir: Path):
        self.path, self.fd, self.previous = run_dir / LOCK, None, ""

    def acquire(self) -> None:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise RunError(f"run folder {self.path.parent} is in use by another training (pid {holder}, "
                           f"lock {self.path}); wait for it to finish or stop it") from None
        self.previous = os.pread(fd, 64, 0).decode(errors="replace").strip()
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self.fd = fd

    def release(self) -> None:
        if self.fd is not None:
            os.ftruncate(self.fd, 0)  # a pid left in the file means its holder died holding it
            fcntl.flock(self.fd, fcntl.LOCK_UN)
            os.close(self.fd)
            self.fd = None


def claim_folder(lock: RunLock | None, cfg: dict, label: str, info: DistInfo, max_steps: int,
                 check_resumable: Callable[[dict], None]) -> tuple[Decision, dict | None]:
    """Rank 0 (the rank given a ``lock``) creates and locks the folder and decides; every rank follows.
    Returns (decision, checkpoint state read by rank 0); ``check_resumable(state)`` refuses a checkpoint
    the run cannot continue. Nothing of an earlier run is touched here."""
    decision, err, state = Decision.FRESH, None, None
    if lock is not None:
        try:
            decision, state = _decide(lock, cfg, label, info, max_steps, check_resumable)
        except BaseException as e:
            err = e
    return Decision(agree(decision, err, info)), state


def _decide(lock: RunLock, cfg: dict, label: str, info: DistInfo, max_steps: int,
            check_resumable: Callable[[dict], None]) -> tuple[Decision, dict | None]:
    run_dir = lock.path.parent
    ckpt_path = run_dir / ckpt.CHECKPOINT
    run_dir.mkdir(parents=True, exist_ok=True)
    lock.acquire()
    if lock.previous:
        print(f"[{label}] taking over the stale lock of pid {lock.previous} (no longer running)", flush=True)
    for p in clean_temporaries(run_dir, cfg["paths"]["cache"]):
        print(f"[{label}] removed stale temporary file {p}", flush=True)
    used = [f for f in RUN_FILES if (run_dir / f).exists()]
    if cfg["resume"] and ckpt_path.exists():
        state = ckpt.read(ckpt_path, map_location=info.device)
        check_resumable(state)
        old = read_summary(run_dir)
        if old and old.get("status") == "completed" and state["step"] >= max_steps:
            print(f"[{label}] already completed at step {state['step']}: nothing to do (summary.json kept)",
                  flush=True)
            return Decision.COMPLETED, state
        return Decision.RESUME, state
    if used and not cfg["overwrite"] and not cfg["resume"]:
        raise RunError(f"run folder {run_dir} already holds a run ({', '.join(used)}): pass "
                       f"resume=true to continue it or overwrite=true to replace it")
    return Decision.FRESH, None


def remove_if_empty(run_dir: Path, runs_root: str, lock: RunLock | None) -> None:
    """Remove ``run_dir`` (and its empty parents below the runs root) if it holds nothing but our lock."""
    try:
        entries = {p.name for p in run_dir.iterdir()}
    except OSError:
        return
    if entries - {LOCK} or (LOCK in entries and (lock is None or lock.fd is None)):
        return
    if lock is not None:
        lock.path.unlink(missing_ok=True)
        lock.release()
    root = Path(runs_root).expanduser().resolve()
    d = run_dir.resolve()
    while d != root and root in d.parents:
        try:
            d.rmdir()
        except OSError:
            break
        d = d.parent


def clean_temporaries(run_dir: Path, cache: str) -> list[Path]:
    """Delete the temporary files a killed save left: in the run folder (we hold its lock, so every one is
    stale) and in the cache (only those whose writer pid, the number before ``.tmp``, is no longer running)."""
    removed = ckpt.stale_temporaries(run_dir)
    for p in removed:
        p.unlink(missing_ok=True)
    for p in list(Path(cache).expanduser().glob("*/*.tmp*")):
        m = re.search(r"\.(\d+)\.tmp", p.name)
        if m and not _pid_alive(int(m.group(1))):
            p.unlink(missing_ok=True)
            removed.append(p)
    return removed


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def read_summary(run_dir: Path) -> dict | None:
    """The folder's summary.json (None when absent or unreadable)."""
    try:
        s = json.loads((run_dir / "summary.json").read_text())
    except (OSError, ValueError):
        return None
    return s if isinstance(s, dict) else None


def saved_config(run_dir: Path) -> dict | None:
    """The resolved config.yaml an earlier segment wrote (None when absent or unreadable)."""
    try:
        cfg = OmegaConf.to_container(OmegaConf.load(run_dir / "config.yaml"), resolve=False)
    except Exception:  # absent or damaged: nothing to compare with
        return None
    return cfg if isinstance(cfg, dict) else None


# ----- what a resumed run may change -----------------------------------------------------------------
RESUME_MAY_RAISE = ("train.max_steps",)
"""Keys a resumed run may raise but not lower: a larger ``train.max_steps`` extends the run (a finished one
included) with the LR schedule it started with (`experiments.schedule.schedule_steps`)."""

RESUME_MAY_CHANGE = ("train.stop_at_step", "train.log_every", "train.eval_every", "train.ckpt_every",
                     "train.device", "train.compile", "train.threads", "train.progress", "train.parallel",
                     "train.recompute", "resume", "overwrite", "paths.", "run_dir", "hardware.", "logger.")
"""Keys a resumed run may change: they decide how and where it runs, not what it computes. Any other
change (optimiser, schedule, model, data, seed, batch, world size, a lower max_steps) is refused."""

ADDED_KEYS = {"model.shape.mtp_modules": 0, "model.mtp_loss_weight": 0.3, "train.expert_parallel": 1}
"""Keys added to conf/ after runs were saved without them, with the value those runs had in effect: a run
saved before a key existed resumes when the key now holds that value."""


def _flat(d: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(d, dict):
        out = {}
        for k, v in d.items():
            out.update(_flat(v, f"{prefix}{k}."))
        return out
    return {prefix[:-1]: d}


def changed_settings(saved: dict, now: dict) -> list[str]:
    """``key old -> new`` for every setting that differs and may not change on resume (`RESUME_MAY_CHANGE`;
    `RESUME_MAY_RAISE` keys only upwards)."""
    a, b = _flat(saved), _flat(now)
    a = {**{k: v for k, v in ADDED_KEYS.items() if k in b}, **a}

    def raised(k: str) -> bool:
        return k in RESUME_MAY_RAISE and all(type(x) is int for x in (a.get(k), b.get(k))) and b[k] >= a[k]
    return [f"{k} {a.get(k)!r} -> {b.get(k)!r}" for k in sorted(set(a) | set(b))
            if a.get(k) != b.get(k) and not raised(k) and not any(k == m or (m.endswith(".") and k.startswith(m))
                                                                   for m in RESUME_MAY_CHANGE)]
