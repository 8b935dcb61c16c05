"""Number formatting shared by the accounting CLI and the report: one ``si``."""
from __future__ import annotations

import math
import numbers
from typing import Any

SUFFIXES = ((1e12, "T"), (1e9, "B"), (1e6, "M"), (1e3, "K"))  # the note's K, M, B, T


def si(x: Any, digits: int = 3) -> str:
    """A readable number: K/M/B/T suffixes (the note's) with ``digits`` significant digits, e-notation from
    1e15 up (``2.94e24``), ``digits + 1`` significant digits below 1000; ``-`` for None or NaN; anything
    that is not a real number (a string, a bool) as ``str``."""
    if x is None:
        return "-"
    if isinstance(x, bool) or not isinstance(x, numbers.Real):
        return str(x)
    if math.isnan(x):
        return "-"
    if x == 0:
        return "0"
    a = abs(x)
    if a >= 1e15:
        m, e = f"{x:.{digits - 1}e}".split("e")
        return f"{m}e{int(e)}"
    for scale, suffix in SUFFIXES:
        if a >= scale:
            return f"{x / scale:.{digits}g}{suffix}"
    return f"{x:.{digits + 1}g}"
