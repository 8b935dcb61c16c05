"""``python -m reports [--runs DIR ...] [--select PATTERN ...] [--out DIR]``: write REPORT.md and figures/.

Defaults: the demo's report. Run folders and measurements from ``runs/`` (when present) and the committed
``reports/data/``; runs selected by ``demo`` (= ``demo/*``, keys are ``<experiment>/<model>/<size>-seed<seed>``);
written to ``runs/report/`` (untracked). With ``--runs DIR`` given, every run under DIR is selected unless
``--select`` says otherwise (your own runs, whatever their experiment name). A ``--select`` that matches no
run, and an ``--out`` that is a file, exit 2 with one line. The committed ``reports/REPORT.md`` is rebuilt only
on request: ``make report`` = ``python -m reports --runs reports/data --select demo --out reports``.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .build import build
from .collect import find_run_dirs, normalise_patterns, run_key, selected

DEFAULT_ROOTS = ("runs", "reports/data")
DEFAULT_SELECT = ("demo",)
DEFAULT_OUT = "runs/report"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m reports", description=__doc__.split("\n")[0])
    p.add_argument("--runs", nargs="+", default=None,
                   help="folders searched for run folders (metrics.jsonl), bench CSVs and paired benchmarks "
                        "(default: runs/ if present, then reports/data/)")
    p.add_argument("--select", nargs="+", default=None, metavar="PATTERN",
                   help="runs to include: experiment names or shell patterns on <experiment>/<model>/<size>-seed<seed> "
                        "(default: demo, or every run under an explicit --runs; '*' for every run)")
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
    select = a.select if a.select is not None else (list(DEFAULT_SELECT) if a.runs is None else ["*"])
    if a.select is not None:
        keys = sorted({k for k in map(run_key, find_run_dirs(roots)) if k})
        if not any(selected(k, normalise_patterns(a.select)) for k in keys):
            found = f"found {', '.join(keys[:5])}{' ...' if len(keys) > 5 else ''}" if keys else "found no run"
            print(f"error: --select {' '.join(a.select)} matches no run under {', '.join(roots) or '(nothing)'} "
                  f"({found})", file=sys.stderr)
            return 2
    try:
        Path(a.out).mkdir(parents=True, exist_ok=True)
    except OSError as e:
        probe = Path(a.out)
        while not probe.exists() and probe != probe.parent:
            probe = probe.parent
        why = (("is a file" if probe == Path(a.out) else f"{probe} is a file") + ", not a folder"
               if probe.exists() and not probe.is_dir() else (e.strerror or type(e).__name__))
        print(f"error: --out {a.out}: {why}", file=sys.stderr)
        return 2
    rep = build(roots, a.out, select=select)
    n_runs = len(rep.col.run_paths)
    if n_runs == 0 and rep.col.skipped:  # the default selection (demo) found other runs only
        print(f"warning: no run matches {' '.join(select)}; found {', '.join(rep.col.skipped[:5])}"
              f"{' ...' if len(rep.col.skipped) > 5 else ''}; pass --select '*' for every run", file=sys.stderr)
    stale = f", removed {len(rep.stale)} stale figure(s)" if rep.stale else ""
    print(f"wrote {a.out}/REPORT.md with {len(rep.figures)} figure(s) from {n_runs} run(s){stale}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
