"""How the project writes a path into records and captions (torch-free: ``reports`` uses it too)."""
from __future__ import annotations

from pathlib import Path


def portable_path(path: str | Path) -> str:
    """``path`` relative to the working directory when it lies below it (so committed records and report
    captions carry no machine-specific prefix), else absolute."""
    path = Path(path)
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path.resolve())
