"""Markdown tables and number formatting (SI suffixes: K, M, B, T as in the note; e for the rest)."""
from __future__ import annotations

import math
from typing import Sequence

import pandas as pd

from accounting.formatting import si  # noqa: F401  (the one SI format; build and serving import it from here)


def sci(x, digits: int = 3) -> str:
    """Scientific notation, ``2.94e24``."""
    try:
        x = float(x)
    except (TypeError, ValueError):
        return "-"
    return "-" if math.isnan(x) else _exp(f"{x:.{digits}g}")


def _exp(s: str) -> str:
    """``1.5e+07`` -> ``1.5e7``."""
    if "e" not in s:
        return s
    mant, exp = s.split("e")
    return f"{mant}e{int(exp)}"


def usd(x, digits: int = 3) -> str:
    """``$2.94M``."""
    try:
        x = float(x)
    except (TypeError, ValueError):
        return "-"
    return "-" if math.isnan(x) else "$" + si(x, digits)


def pct(x, digits: int = 3) -> str:
    try:
        x = float(x)
    except (TypeError, ValueError):
        return "-"
    return "-" if math.isnan(x) else f"{100 * x:.{digits}g}%"


def ratio(x, digits: int = 3) -> str:
    try:
        x = float(x)
    except (TypeError, ValueError):
        return "-"
    return "-" if math.isnan(x) else f"{x:.{digits}g}x"


def markdown(rows: Sequence[Sequence] | pd.DataFrame, headers: Sequence[str] | None = None,
             align: str | None = None) -> str:
    """A GitHub markdown table. ``align``: one letter per column, ``l`` or ``r`` (default: first l)."""
    if isinstance(rows, pd.DataFrame):
        headers = list(rows.columns) if headers is None else headers
        rows = rows.astype(object).values.tolist()
    rows = [["" if v is None else str(v).replace("|", "\\|") for v in r] for r in rows]
    headers = list(headers or [])
    n = len(headers)
    align = align or ("l" + "r" * (n - 1))
    sep = ["---:" if a == "r" else ":---" for a in align]
    lines = ["| " + " | ".join(headers) + " |", "| " + " | ".join(sep) + " |"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def swept_columns(runs: pd.DataFrame) -> list[str]:
    """The keys swept by any of ``runs`` (their ``swept`` dicts, `reports.collect.swept_values`), sorted:
    the extra columns of a run table."""
    if runs.empty or "swept" not in runs:
        return []
    return sorted({k for d in runs["swept"] if isinstance(d, dict) for k in d})


def swept_cells(runs: pd.DataFrame, run: str, keys: Sequence[str]) -> list[str]:
    """The values of ``keys`` for the run whose key is ``run`` ('-' where it did not sweep one)."""
    row = runs[runs["run"] == run]
    d = row["swept"].iloc[0] if len(row) and "swept" in row else {}
    d = d if isinstance(d, dict) else {}
    return [str(d[k]) if k in d else "-" for k in keys]
