"""Section 1: the note's Table 3 recomputed (``accounting.press2025``) beside the printed values.

Returns a long DataFrame: quantity, case, printed, computed, ratio (computed / printed), and whether the
difference exceeds the rounding of the printed value (``differs``). Empty when press2025 is missing.
"""
from __future__ import annotations

import math

import pandas as pd


def _printed_digits(x: float) -> float:
    """Half a unit of the printed value's last significant digit, relative: 2.7e21 -> 0.05/2.7."""
    if not x:
        return 0.0
    s = f"{x:.2g}"
    mant = float(s.split("e")[0]) if "e" in s else float(s) / 10 ** math.floor(math.log10(abs(float(s))))
    digits = len(f"{mant:g}".replace(".", "").replace("-", "").lstrip("0"))
    return 0.5 * 10 ** (-(digits - 1)) / abs(mant)


def table3() -> tuple[pd.DataFrame, str]:
    """(table, message). Message names what is missing when the table is empty."""
    try:
        from accounting import press2025 as p
    except ImportError:
        return pd.DataFrame(), "accounting.press2025 is not available yet (it produces the recomputed Table 3: `python -m accounting table3`)"
    fn = next((getattr(p, n) for n in ("table3_comparison", "compare_table3", "table3") if hasattr(p, n)), None)
    if fn is None:
        return pd.DataFrame(), "accounting.press2025 has no Table 3 function yet"
    try:
        raw = fn()
    except Exception as e:  # noqa: BLE001
        return pd.DataFrame(), f"accounting.press2025 Table 3 failed: {type(e).__name__}: {e}"
    df = pd.DataFrame(raw)
    if not {"quantity", "case", "printed", "computed"} <= set(df.columns):
        return pd.DataFrame(), f"accounting.press2025 Table 3 has columns {list(df.columns)}"
    df["ratio"] = df["computed"] / df["printed"]
    df["tolerance"] = df["printed"].map(_printed_digits)
    df["differs"] = (df["ratio"] - 1).abs() > df["tolerance"] + 1e-12
    return df, ""
