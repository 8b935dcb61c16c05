"""Atomic file writes: a temporary file in the same folder, flushed and fsync-ed, then ``os.replace``.

One implementation for every file the experiments write whole (checkpoints, config/env/summary, the
metrics file when truncated, the tokenizer cache). Torch-free.
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def fsync_dir(path: str | Path) -> None:
    """``fsync`` a folder so that a rename in it survives a crash (best effort: not every OS allows it)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_atomic(path: str | Path, write, suffix: str = ".tmp") -> Path:
    """Write ``path`` through ``write(file)`` into a temporary file in the same folder (flushed, fsync-ed,
    mode ``0666 & ~umask``), then ``os.replace`` it into place. On any failure the temporary file is removed
    and ``path`` is left as it was. ``suffix`` ends the temporary's name (the tokenizer cache puts its pid there,
    so that a later run can tell a stale temporary from a live one)."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=suffix)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException as e:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(e, OSError) and e.filename is None:  # a failed write() names no file: name it
            e.filename = str(path)
        raise
    fsync_dir(path.parent)
    return path


def write_text_atomic(path: str | Path, text: str, suffix: str = ".tmp") -> Path:
    """`write_atomic` for a UTF-8 text file (config.yaml, env.json, summary.json, tokenizer.json)."""
    return write_atomic(path, lambda f: f.write(text.encode("utf-8")), suffix)
