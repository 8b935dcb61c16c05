"""``python -m reports [--runs DIR ...] [--select PATTERN ...] [--out DIR]``: write REPORT.md and figures/.

Defaults: the demo's report. Run folders and measurements from ``runs/`` (when present) and the committed
``reports/data/``; runs selected by ``demo`` (= ``demo/*``, keys are ``<experiment>/<model>/<size>-seed<seed>``);
written to ``runs/report/`` (untracked). The committed ``reports/REPORT.md`` is rebuilt only on request:
``make report`` = ``python -m reports --runs reports/data --out reports``.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .build import build

DEFAULT_ROOTS = ("runs", "reports/data")
DEFAULT_SELECT = ("demo",)
DEFAULT_OUT = "runs/report"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m reports", description=__doc__.split("\n")[0])
    p.add_argument("--runs", nargs="+", default=None,
                   help="folders searched for run folders (metrics.jsonl), bench CSVs and paired benchmarks "
                        "(default: runs/ if present, then reports/data/)")
    p.add_argument("--select", nargs="+", default=list(DEFAULT_SELECT), metavar="PATTERN",
                   help="runs to include: experiment names or shell patterns on <experiment>/<model>/<size>-seed<seed> "
                        "(default: demo; '*' for every run)")
    p.add_argument("--out", default=DEFAULT_OUT, help=f"where REPORT.md and figures/ go (default {DEFAULT_OUT})")
    a = p.parse_args(argv)
    if a.runs is None:
        roots = [r for r in DEFAULT_ROOTS if Path(r).is_dir()]
    else:
        missing = [r for r in a.runs if not Path(r).is_dir()]
        if missing:
            print(f"error: --runs {missing[0]}: no such directory", file=sys.stderr)
            return 2
        roots = a.runs
    rep = build(roots, a.out, select=a.select)
    n_runs = len(rep.col.run_paths)
    if n_runs == 0 and rep.col.skipped:
        print(f"warning: no run matches {' '.join(a.select)}; found {', '.join(rep.col.skipped[:5])}"
              f"{' ...' if len(rep.col.skipped) > 5 else ''}", file=sys.stderr)
    stale = f", removed {len(rep.stale)} stale figure(s)" if rep.stale else ""
    print(f"wrote {a.out}/REPORT.md with {len(rep.figures)} figure(s) from {n_runs} run(s){stale}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
