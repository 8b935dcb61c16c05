"""Assemble REPORT.md: collect runs and CSVs, compute the shared numbers once (`reports.context`), write the
sections in order (`reports.sections`), delete stale figures.

Every number comes from code (accounting, including the note's printed values and DeepSeek's reported
figures in ``accounting.reproduce.note``; the live FlopCounter check) or a file (run folders, bench CSVs); every
figure's caption names the files it was drawn from.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from . import context
from .collect import Collected, collect
from .sections import Page, cost_per_flop, costs, deepseek, findings, header, measurements, scaling, serving
from .sections import table3, training_memory

SECTIONS = ("1. The note's Table 3, recomputed", "2. DeepSeek-V3: the note's estimate and its corrections",
            "3. Dense vs MoE cost", "4. Measured", "5. Measured cost per flop")
NUMBERED = (table3.section, deepseek.section, costs.section, measurements.section, cost_per_flop.section)
"""The functions of the numbered sections, in the order of `SECTIONS`."""
TITLED = (serving.section, scaling.section, training_memory.section)
"""Sections that carry their own ``## `` heading, after the numbered ones."""


@dataclass
class Report:
    """What `build` wrote: the collected data and the context; in ``page``, every figure drawn (paths), the
    numbers the sections printed and each figure's layout problems; the stale PNGs removed."""
    col: Collected
    ctx: context.Context
    page: Page = field(default_factory=Page)
    stale: list[Path] = field(default_factory=list)

    @property
    def costs(self) -> pd.DataFrame:
        return self.ctx.costs

    @property
    def figures(self) -> list[Path]:
        return self.page.figures

    @property
    def values(self) -> dict[str, float]:
        return self.page.values

    @property
    def layout_problems(self) -> dict[str, tuple[str, ...]]:
        """Figure name -> the problems `reports.layout.layout_problems` found (empty when clean)."""
        return self.page.problems


def _numbered(rep: Report, title: str, fn) -> list[str]:
    """A numbered section with its heading; a failure is printed in its place (section 2's is raised)."""
    try:
        text = rep.page.include(fn(rep.ctx))
    except Exception as e:  # noqa: BLE001  (one broken section must not sink the report)
        if fn is deepseek.section:
            raise
        text = f"Section failed: `{type(e).__name__}: {e}`"
    return [f"## {title}\n", text, ""]


def render(rep: Report) -> str:
    """The whole REPORT.md: title, header, key findings (from the values the sections printed), sections."""
    body = [line for title, fn in zip(SECTIONS, NUMBERED) for line in _numbered(rep, title, fn)]
    body += [rep.page.include(fn(rep.ctx)) for fn in TITLED]
    parts = ["# Report: the note's economics, recomputed and measured", rep.page.include(header.section(rep.ctx)),
             "## Key findings\n", rep.page.include(findings.section(rep.ctx, rep.values)), *body]
    return "\n".join(parts)


def remove_stale_figures(figdir: Path, keep) -> list[Path]:
    """Delete the PNGs in ``figdir`` that this report did not draw (left by earlier reports)."""
    keep = {Path(p).resolve() for p in keep}
    stale = [p for p in sorted(Path(figdir).glob("*.png")) if p.resolve() not in keep]
    for p in stale:
        p.unlink()
    return stale


def build(roots, out: str | Path = "reports", select=None) -> Report:
    """Collect (runs matching ``select``; all when None), compute, draw and write ``<out>/REPORT.md`` and
    ``<out>/figures/*.png``; PNGs in ``<out>/figures`` that this report did not draw are deleted."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    col = collect(roots, select)
    rep = Report(col, context.compute(col, out))
    (out / "REPORT.md").write_text(render(rep))
    rep.stale = remove_stale_figures(rep.ctx.figdir, rep.figures)
    return rep
