"""Section 1: the note's Table 3 recomputed by `accounting.reproduce.note`, beside the printed values."""
from __future__ import annotations

from .. import figures as plots
from ..context import Context
from ..table3 import table3
from ..tables import markdown, ratio, si
from . import Page, Section


def section(ctx: Context) -> Section:
    df, msg = table3()
    if df.empty:
        return Section(f"Not available: {msg}.\n")
    page = Page()
    page.values["table3_cells"] = len(df)
    rows = [[r.quantity, r.case, si(r.printed), si(r.computed), ratio(r.ratio)] for r in df.itertuples()]
    page.add(markdown(rows, ["quantity", "case", "printed", "recomputed", "ratio"], "llrrr"))
    diffs = df[df["differs"]]
    page.values["table3_differs"] = len(diffs)
    page.add(f"\n{len(diffs)} of {len(df)} cells differ from the printed value by more than its rounding "
             "(half a unit in the last printed digit):\n")
    for r in diffs.itertuples():
        page.add(f"- **{r.quantity}, case {r.case}**: printed {si(r.printed)}, recomputed {si(r.computed)} "
                 f"({ratio(r.ratio)}, {100 * (r.ratio - 1):+.1f}%). {r.note}".rstrip())
    page.add("\n" + page.figure(plots.table3_ratios(df, ctx.figdir),
                                "recomputed / printed for each cell of Table 3; data: accounting.reproduce.note "
                                "(printed values and formulas)"))
    return page.section()
