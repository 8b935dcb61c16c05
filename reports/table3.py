"""Section 1: the note's Table 3 recomputed by ``accounting.reproduce.note`` beside the printed values.

A thin view of :func:`accounting.reproduce.note.table3_comparison`: ``differs`` is True where our value does
not round to the printed digits, and ``note`` gives the sentence the report prints for such a cell.
"""
from __future__ import annotations

import pandas as pd

from accounting.reproduce import note


def _reason(row: pd.Series) -> str:
    if row["case"].startswith("D"):
        u = note.USE_CASES[row["case"]]
        return (f"Table 2 gives case D only as ranges; this endpoint is priced at n={u.seq_len}, "
                f"V={u.vocab_size}, d={u.d_model}, L={u.n_layers}, and the note prints D's endpoints "
                f"to about one figure (accepted within a factor {note.D_RATIO_TOLERANCE}).")
    if row["tolerance"].startswith("within"):
        why = row["tolerance"].split(": ", 1)[-1]
        return why[:1].upper() + why[1:] + "."
    return "Unexplained difference beyond rounding."


def table3() -> tuple[pd.DataFrame, str]:
    """(table, message): one row per Table 3 cell; the message is empty (kept for the section API)."""
    df = pd.DataFrame(note.table3_comparison())
    df["differs"] = ~df["rounds_to_printed"]
    df["note"] = [(_reason(r) if d else "") for d, (_, r) in zip(df["differs"], df.iterrows())]
    return df, ""
