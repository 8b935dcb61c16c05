"""How a training run ends: the failures it can stop with, their exit statuses and one-line messages.

Exit statuses: 0 done, `EXIT_REFUSED` (2) refused before training (config, data, paths, memory, lock, used
folder, checkpoint, metrics file), `EXIT_DIVERGED` (3) diverged (non-finite loss, gradient, weights or
validation loss), `EXIT_IO` (4) an I/O error while running (disk full, read-only), ``distributed.EXIT_PEER``
(5) a peer rank died or went silent, 128 + signal (130 SIGINT, 143 SIGTERM) interrupted and checkpointed.
`Signals` turns SIGINT/SIGTERM into `Interrupted` at a step boundary; `agree` makes every rank of a
distributed run follow rank 0's decision or failure.
"""
from __future__ import annotations

import errno
import signal
import threading

import torch

from . import distributed
from .checkpoint import CheckpointError
from .config import ConfigError, one_line
from .data import DataError
from .metrics import MetricsError

EXIT_REFUSED, EXIT_DIVERGED, EXIT_IO = 2, 3, 4
"""Exit statuses: 2 refused before training, 3 diverged, 4 an I/O error while running (module docstring)."""


class RunError(RuntimeError):
    """The run cannot proceed (lock held, used folder, changed settings, paths, memory); one line."""


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite."""


class Interrupted(Exception):
    """SIGINT/SIGTERM: the run stopped at a step boundary with a checkpoint (exit 128 + signal)."""

    def __init__(self, signum: int, message: str):
        super().__init__(message)
        self.signum = signum


class Follower(RuntimeError):
    """A rank > 0 whose rank 0 refused the run: exits with rank 0's status, silently."""

    def __init__(self, status: int):
        super().__init__(f"rank 0 refused the run (exit {status})")
        self.status = status


def exit_status(e: BaseException) -> int:
    """The exit status of a run that stopped with ``e`` (1: unexpected, shown with its traceback)."""
    if isinstance(e, (ConfigError, RunError, DataError, CheckpointError, MetricsError)):
        return EXIT_REFUSED
    if isinstance(e, TrainingDiverged):
        return EXIT_DIVERGED
    if isinstance(e, Interrupted):
        return 128 + e.signum
    if isinstance(e, Follower):
        return e.status
    if isinstance(e, OSError):
        return EXIT_IO
    if distributed.peer_failure(e):  # a rank died or went silent
        return distributed.EXIT_PEER
    return 1


def _io_cause(e: OSError) -> str:
    return {errno.ENOSPC: "disk full", errno.EDQUOT: "disk quota exceeded", errno.EROFS: "read-only file system",
            errno.EFBIG: "file too large for the file-size limit (ulimit -f)",
            errno.EACCES: "permission denied (read-only?)", errno.EPERM: "permission denied",
            errno.ENOTDIR: "a path component is a file, not a folder",
            errno.EEXIST: "exists and is a file, not a folder"}.get(e.errno, e.strerror or type(e).__name__)


def io_error_line(e: OSError) -> str:
    """One line for an OSError: the path and the cause ("disk full" for ENOSPC)."""
    where = e.filename if e.filename is not None else "?"
    return f"I/O error: {where}: {_io_cause(e)}"


def error_line(e: BaseException) -> str | None:
    """The one line printed for an expected failure (None: print nothing)."""
    if isinstance(e, ConfigError):
        return one_line(e)
    if isinstance(e, DataError):
        return f"data error: {e}"
    if isinstance(e, TrainingDiverged):
        return f"training stopped: {e}"
    if isinstance(e, Interrupted):
        return f"interrupted: {e}"
    if isinstance(e, Follower):
        return None
    if isinstance(e, OSError):
        return io_error_line(e)
    if distributed.peer_failure(e):
        return distributed.peer_failure(e)
    return f"error: {e}"


def agree(value: int, err: BaseException | None, info: distributed.DistInfo) -> int:
    """Every rank takes rank 0's ``value`` (>= 0), or stops with rank 0's error: rank 0 raises ``err``, the
    others raise `Follower` with its exit status (printing nothing)."""
    flag = torch.tensor([value if err is None else -exit_status(err)], dtype=torch.int64, device=info.device)
    distributed.broadcast_(flag, info)
    if err is not None and info.is_main:
        raise err
    if flag.item() < 0:
        raise Follower(int(-flag.item()))
    return int(flag.item())


class Signals:
    """SIGINT/SIGTERM set a flag read at the next step boundary; a second one raises at once."""

    def __init__(self):
        self.signum, self.previous, self.in_loop = 0, {}, False

    def install(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return
        for s in (signal.SIGINT, signal.SIGTERM):
            self.previous[s] = signal.signal(s, self._handle)

    def _handle(self, signum, _frame) -> None:
        if self.signum or not self.in_loop:  # outside the loop there is no step boundary to wait for
            what = "second " if self.signum else ""
            raise Interrupted(signum, f"{what}{signal.Signals(signum).name}: stopped at once (any checkpoint "
                                      f"is intact)")
        self.signum = signum

    def restore(self) -> None:
        for s, h in self.previous.items():
            signal.signal(s, h)
        self.previous = {}
