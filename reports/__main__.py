"""``python -m reports [--runs DIR ...] [--out DIR]``: write REPORT.md and figures/."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .build import build


DEFAULT_ROOTS = ("runs", "reports/data")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m reports", description=__doc__.split("\n")[0])
    p.add_argument("--runs", nargs="+", default=None,
                   help="folders searched for run folders (metrics.jsonl) and bench CSVs "
                        "(default: runs/ if present, then reports/data/)")
    p.add_argument("--out", default="reports", help="where REPORT.md and figures/ go")
    a = p.parse_args(argv)
    if a.runs is None:
        roots = [r for r in DEFAULT_ROOTS if Path(r).is_dir()]
    else:
        missing = [r for r in a.runs if not Path(r).is_dir()]
        if missing:
            print(f"error: --runs {missing[0]}: no such directory", file=sys.stderr)
            return 2
        roots = a.runs
    rep = build(roots, a.out)
    print(f"wrote {a.out}/REPORT.md with {len(rep.figures)} figure(s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
