"""Output formatting shared by the accounting CLI and the report: one ``si`` for numbers, plus the plain-text
grid and the CSV writers the ``python -m accounting`` commands print with."""
from __future__ import annotations

import csv
import io
import math
import numbers
from typing import Any, Sequence

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


def flatten(obj: Any, prefix: str = "") -> list[tuple[str, Any]]:
    """Nested dicts -> [(dotted.key, value)]; lists of scalars are joined with ';'."""
    out: list[tuple[str, Any]] = []
    if isinstance(obj, dict):
        for k, v in obj.items():
            out.extend(flatten(v, f"{prefix}.{k}" if prefix else str(k)))
    elif isinstance(obj, (list, tuple)):
        out.append((prefix, ";".join(str(v) for v in obj)))
    else:
        out.append((prefix, obj))
    return out


def rows_csv(rows: list[dict[str, Any]]) -> str:
    """CSV of dict rows: the union of their keys as columns (first-seen order), floats at full precision
    (``repr``), None as an empty cell."""
    buf = io.StringIO()
    fields: list[str] = []
    for r in rows:
        fields.extend(k for k in r if k not in fields)
    w = csv.DictWriter(buf, fieldnames=fields, lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({k: ("" if r.get(k) is None else repr(r[k]) if isinstance(r.get(k), float) else r.get(k))
                    for k in fields})
    return buf.getvalue()


def kv_csv(obj: dict[str, Any]) -> str:
    """CSV of ``field,value`` rows: the flattened dict (`flatten`)."""
    return rows_csv([{"field": k, "value": v} for k, v in flatten(obj)])


def grid(header: Sequence[str], rows: list[Sequence[Any]]) -> str:
    """A plain-text table: left-aligned columns two spaces apart, a dashed rule under the header."""
    cells = [list(map(str, header))] + [[str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)
