"""Time the ``grouped`` expert backend of earlier git commits beside today's, in the same MoE-layer run.

    PYTHONPATH=. .venv/bin/python scripts/moe_layer_against_commit.py --grouped-from <commit> [...]

Every option of ``python -m experiments.bench.moe_layer`` applies (same CSV and env JSON); ``--grouped-from``
adds, per commit, a contender ``ours_grouped@<commit>``: our layer on the same weights whose experts are
``GroupedExperts`` from that commit's ``moe/experts.py`` (read with ``git show`` and executed as a module of
its own), checked against the reference like every other contender and timed in the same rounds.
This is a tool for comparing versions of the code, so it lives outside the package.
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import types
from functools import partial
from pathlib import Path

import torch

from experiments.bench import moe_layer
from experiments.bench.moe_layer_contenders import Contender, module_contender, moe_shape, ours
from experiments.environment import REPO


def experts_at_commit(commit: str) -> types.ModuleType:
    """``moe/experts.py`` as of git ``commit``, executed as a module of its own. Raises ValueError with
    git's message when the commit or file cannot be read."""
    got = subprocess.run(["git", "-C", str(REPO), "show", f"{commit}:moe/experts.py"], capture_output=True,
                         text=True)
    if got.returncode != 0:
        why = (got.stderr.strip().splitlines() or ["git show failed"])[-1]
        raise ValueError(f"--grouped-from {commit}: {why}")
    module = types.ModuleType(f"experts_{commit}")
    exec(compile(got.stdout, f"{commit}:moe/experts.py", "exec"), module.__dict__)  # noqa: S102
    return module


def grouped_from(modules: dict[str, types.ModuleType], ref_mod, x: torch.Tensor,
                 gy: torch.Tensor) -> list[Contender]:
    """Per commit, our layer with that commit's ``GroupedExperts`` on the reference weights (the ``extra``
    of ``moe_layer.run``)."""
    E, d, f = ref_mod.experts.w_gate.shape
    shape = moe_shape(E, ref_mod.router.top_k, d, f, x.size(1))
    out = []
    for commit, module in modules.items():
        m = ours(shape, "loop", x.device, x.dtype)
        m.load_state_dict(ref_mod.state_dict())
        experts = module.GroupedExperts(shape)
        experts.load_state_dict(ref_mod.experts.state_dict())
        m.experts = experts.to(device=x.device, dtype=x.dtype)
        out.append(module_contender(f"ours_grouped@{commit}", m, x, gy, note=f"grouped backend as of {commit}"))
    return out


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The bench's options plus ``--grouped-from``; ``grouped_modules`` holds each commit's module."""
    p = moe_layer.make_parser(prog="scripts/moe_layer_against_commit.py")
    p.add_argument("--grouped-from", nargs="+", default=[], metavar="COMMIT",
                   help="also time the grouped backend as of these git commits (same weights, same run)")
    a = moe_layer.parse_args(argv, p)
    try:
        a.grouped_modules = {c: experts_at_commit(c) for c in a.grouped_from}
    except ValueError as e:
        p.error(str(e))
    return a


def run(args: argparse.Namespace) -> Path:
    """``moe_layer.run`` with the commits' contenders added to every configuration."""
    return moe_layer.run(args, partial(grouped_from, args.grouped_modules))


def main(argv: list[str] | None = None) -> int:
    print(f"wrote {run(parse_args(argv))}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
