"""``python -m reports [--runs DIR ...] [--out DIR]``: write REPORT.md and figures/."""
from __future__ import annotations

import argparse
import sys

from .build import build


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m reports", description=__doc__.split("\n")[0])
    p.add_argument("--runs", nargs="+", default=["runs", "reports/data"],
                   help="folders searched for run folders (metrics.jsonl) and bench CSVs")
    p.add_argument("--out", default="reports", help="where REPORT.md and figures/ go")
    a = p.parse_args(argv)
    rep = build(a.runs, a.out)
    print(f"wrote {a.out}/REPORT.md with {len(rep.figures)} figure(s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
