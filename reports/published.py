"""Published numbers the report compares against, read from committed CSVs (never typed in code).

``reports/data/published/deepseek_v3.csv``: DeepSeek-V3's reported sizes, tokens, GPU-hours and price.
``reports/data/published/press2025_printed.csv``: the values printed in the note's section 6.
Each row carries its unit and source; the report cites the file.
"""
from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import pandas as pd

DIR = Path(__file__).resolve().parent / "data" / "published"
DEEPSEEK = DIR / "deepseek_v3.csv"
NOTE = DIR / "press2025_printed.csv"


@lru_cache(maxsize=None)
def _table(path: str) -> dict[str, float]:
    df = pd.read_csv(path)
    return {k: float(v) for k, v in zip(df["key"], df["value"])}


def deepseek(key: str) -> float:
    """A DeepSeek-V3 reported value (see the CSV for units and sources)."""
    return _table(str(DEEPSEEK))[key]


def note(key: str) -> float:
    """A value printed in Press (2025) section 6."""
    return _table(str(NOTE))[key]


def rel(path: Path) -> str:
    """Path relative to the repository root, for captions."""
    try:
        return str(path.relative_to(Path(__file__).resolve().parent.parent))
    except ValueError:
        return str(path)
