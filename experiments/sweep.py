"""Run folders of a ``-m`` sweep: the keys a sweep varies and the tag they add to each job's folder name.

A single run trains into ``<paths.runs>/<name>/<model.name>/<model.size>-seed<seed>``. In a ``-m`` sweep
every job's folder name also carries ``,key=value`` for each key the sweep varies, sorted by key, as
Hydra's ``override_dirname`` writes them::

    python -m experiments.train -m name=sweep model.shape.top_k=1,2,4 optim.lr=1e-3,3e-3
    -> runs/sweep/moe/tiny-seed0,model.shape.top_k=1,optim.lr=0.001   (and five more)

A key is *swept* when its override on the command line is a sweep (``a,b``, ``range(..)``, ``choice(..)``)
or, when the command line does not set it, when the experiment file's ``hydra.sweeper.params`` sweeps it.
Keys already in the path (`PATH_KEYS`: ``name``, ``model``/``model.name``, ``size``/``model.size``,
``seed``, ``paths.runs``, ``run_dir``) and ``hydra.*`` keys add nothing, so the demo's
``-m model=dense,moe experiment=demo`` keeps ``runs/demo/<model>/tiny-seed0``. A value's characters other
than letters, digits and ``_ . + @ -`` become ``_`` (``optim.betas=[0.9,0.95]`` -> ``_0.9_0.95_``), so a
tag never adds a path level. Two jobs that would share a folder are refused up front by
``experiments.train.precheck``. The jobs themselves are Hydra's basic sweeper's own expansion (`sweep_jobs`).

The tag is computed twice from the same functions: by ``precheck`` from the command line before any job
starts, and by the OmegaConf resolver ``${sweep_tag:}`` in ``conf/config.yaml``'s ``hydra.sweep.subdir``
when Hydra names each job's folder (from the job's overrides, its ``hydra.sweeper.params`` and the
command line in ``sys.argv``: a job's config no longer says which of its overrides came from a sweep).
"""
from __future__ import annotations

import re
import sys
from collections import OrderedDict
from typing import Any, Iterable, Mapping

from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import OmegaConf

PATH_KEYS = frozenset({"name", "model", "model.name", "size", "model.size", "seed", "paths", "paths.runs",
                       "run_dir"})
"""Keys whose value is already part of the run folder's path: sweeping them adds no tag."""

MAX_NAME_CHARS = 200
"""Longest run folder name (the last path component, tag included) a sweep may produce (file systems allow
255 bytes)."""

_UNSAFE = re.compile(r"[^A-Za-z0-9_.+@-]")


def _parse(overrides: Iterable[str]) -> list:
    return OverridesParser.create().parse_overrides(list(overrides))


def _bare(key: str) -> str:
    """``+model.router.jitter_eps`` -> ``model.router.jitter_eps`` (the key without Hydra's ``+ ++ ~``)."""
    return key.lstrip("+~")


def params_overrides(sweeper_params: Mapping | None, given: Iterable[str] = ()) -> list[str]:
    """``key=value`` for each entry of ``hydra.sweeper.params`` whose key is not in ``given`` (the command
    line wins, as in Hydra's basic sweeper)."""
    given = {_bare(k) for k in given}
    return [f"{k}={v}" for k, v in (sweeper_params or {}).items() if _bare(str(k)) not in given]


def swept_keys(overrides: Iterable[str], sweeper_params: Mapping | None = None) -> list[str]:
    """The keys a ``-m`` sweep varies that name its jobs' folders (sorted): command-line ``overrides`` that
    are sweeps, plus ``sweeper_params`` entries that are sweeps and not set on the command line; without
    `PATH_KEYS` and ``hydra.*``. Raises Hydra's own parse errors for a malformed override."""
    cli = _parse(overrides)
    given = [o.get_key_element() for o in cli]
    final: OrderedDict[str, bool] = OrderedDict()
    for o in _parse(params_overrides(sweeper_params, given)) + cli:
        final[_bare(o.get_key_element())] = o.is_sweep_override()
    return sorted(k for k, swept in final.items()
                  if swept and k not in PATH_KEYS and not k.startswith("hydra."))


def sweep_jobs(overrides: Iterable[str], sweeper_params: Mapping | None = None) -> list[list[str]]:
    """The jobs of a ``-m`` sweep in the order Hydra runs them, each a list of ``key=value``: Hydra's basic
    sweeper's own expansion (``BasicSweeper.split_arguments``, one batch) of the ``sweeper_params`` entries
    the command line does not set followed by the command-line ``overrides``. Raises Hydra's errors (a
    malformed override, a sweep type the basic sweeper does not support)."""
    cli = _parse(overrides)
    extra = _parse(params_overrides(sweeper_params, [o.get_key_element() for o in cli]))
    return BasicSweeper.split_arguments(extra + cli, None)[0]


def safe_value(value: str) -> str:
    """A value as it appears in a folder name: characters other than letters, digits, ``_ . + @ -`` -> ``_``."""
    return _UNSAFE.sub("_", value) or "_"


def sweep_tag(job_overrides: Iterable[str], swept: Iterable[str]) -> str:
    """``,key=value,...`` for the ``swept`` keys, with their values in one job's ``key=value`` overrides
    (sorted by key; ``""`` when nothing is swept)."""
    values = {_bare(o.get_key_element()): o.get_value_element_as_str() for o in _parse(job_overrides)
              if not o.is_sweep_override()}
    return "".join(f",{k}={safe_value(values[k])}" for k in sorted(swept) if k in values)


def command_line_overrides(argv: list[str] | None = None) -> list[str]:
    """The ``key=value`` overrides of a Hydra command line (``sys.argv[1:]`` by default): the words that are
    not flags (``-m``, ``--cfg``) and hold a ``=``, so a flag's value (``--config-name x``) is left out.
    (A deletion ``~key`` is never a sweep.)"""
    argv = sys.argv[1:] if argv is None else argv
    return [a for a in argv if not a.startswith("-") and "=" in a]


def _resolve(*, _root_: Any) -> str:
    """``${sweep_tag:}``: the tag of the job whose (full, with ``hydra``) config is ``_root_``; ``""`` outside
    a ``-m`` sweep."""
    hydra = _root_.get("hydra") if hasattr(_root_, "get") else None
    if hydra is None or "MULTIRUN" not in str(hydra.get("mode")):
        return ""
    params = hydra.sweeper.get("params") if "sweeper" in hydra else None
    return sweep_tag(list(hydra.overrides.task), swept_keys(command_line_overrides(), params))


def register_resolver() -> None:
    """Register ``${sweep_tag:}`` (idempotent; not cached: every job resolves its own)."""
    if not OmegaConf.has_resolver("sweep_tag"):
        OmegaConf.register_new_resolver("sweep_tag", _resolve, use_cache=False)


register_resolver()
