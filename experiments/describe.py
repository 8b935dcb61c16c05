"""Every key of the run config with its type, default and one-line meaning.

    python -m experiments.describe [--format text|json] [OVERRIDE ...]

The keys are the fields of `experiments.settings.RunSettings` and the dataclasses under it (``model.shape``
is `accounting.shapes.ModelShape`, ``model.router`` is `moe.RouterConfig`), so the listing cannot miss a
field or list one the validation refuses. The default is the value that ``python -m experiments.train``
with the same overrides would use (conf/ composed by Hydra, interpolations shown unresolved, e.g.
``${mul:4,${model.shape.d_model}}``); a key that the composed config does not hold (a `ModelShape` field
that the model file leaves at its default) is printed with a leading ``+``, the form that sets it on the
command line (``+model.shape.router_groups=4``), and the dataclass default. Types: ``int``, ``float``,
``str``, ``bool``, ``list[...]``; ``|null`` when null is allowed; a string with choices lists them
(``none|aux_loss|loss_free``). Overrides are Hydra's (``model=deepseek``); a bad one exits 2 with one line.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import typing
from dataclasses import dataclass
from typing import Any, Iterator

from hydra.errors import HydraException
from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from accounting.shapes import split_optional

from .config import compose, config_error, one_line
from .settings import RunSettings, field_help, field_types


@dataclass(frozen=True)
class Row:
    """One key: ``key`` (dotted), ``type``, ``default``, ``help``; ``in_config``: the composed config holds
    it (set it with ``key=value``; otherwise ``+key=value``)."""

    key: str
    type: str
    default: Any
    help: str
    in_config: bool


@dataclass(frozen=True)
class Section:
    """A group of keys (a nested dataclass): its dotted prefix, class name and meaning."""

    key: str
    cls: str
    help: str


def type_name(tp: Any, nullable: bool = False, choices: tuple | None = None) -> str:
    """``int``, ``float``, ``str``, ``bool``, ``list[str]``, choices ``a|b``; ``|null`` when nullable."""
    if choices:
        name = "|".join(map(str, choices))
    elif typing.get_origin(tp) in (list, tuple):
        items = {getattr(a, "__name__", str(a)) for a in typing.get_args(tp) if a is not Ellipsis}
        name = f"list[{', '.join(sorted(items))}]"
    else:
        name = getattr(tp, "__name__", str(tp))
    return f"{name}|null" if nullable else name


def _dataclass_default(f: dataclasses.Field) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return "???"


def walk(cls: type = RunSettings, node: Any = None, prefix: str = "") -> Iterator[Row | Section]:
    """The sections and rows of ``cls`` in field order; ``node`` is the composed config (unresolved plain
    container) for defaults, None to list the dataclass defaults."""
    hints, helps = field_types(cls), field_help(cls)
    for f in dataclasses.fields(cls):
        key = prefix + f.name
        tp, nullable = split_optional(hints[f.name])
        present = isinstance(node, dict) and f.name in node
        if dataclasses.is_dataclass(tp):
            yield Section(key, tp.__name__, helps[f.name])
            yield from walk(tp, node[f.name] if present else None, key + ".")
            continue
        value = node[f.name] if present else _dataclass_default(f)
        yield Row(key, type_name(tp, nullable, f.metadata.get("choices")), value, helps[f.name],
                  present or node is None)


def composed(overrides: list[str]) -> dict:
    """conf/ composed with ``overrides``, interpolations unresolved, without the ``hydra`` node."""
    cfg = OmegaConf.to_container(compose(overrides), resolve=False)
    cfg.pop("hydra", None)
    return cfg


def _show(value: Any) -> str:
    if isinstance(value, str):
        return value
    if dataclasses.is_dataclass(value):
        return "(see below)"
    return repr(value) if isinstance(value, float) else json.dumps(value)


def render_text(items: list[Row | Section]) -> str:
    rows = [r for r in items if isinstance(r, Row)]
    key_w = max(len(r.key) + 1 for r in rows)
    type_w = max(len(r.type) for r in rows)
    default_w = min(34, max(len(_show(r.default)) for r in rows))
    out = [f"{'key':<{key_w}}  {'type':<{type_w}}  {'default':<{default_w}}  meaning"]
    for r in items:
        if isinstance(r, Section):
            out.append(f"# {r.key} ({r.cls}): {r.help}")
            continue
        key = r.key if r.in_config else "+" + r.key
        out.append(f"{key:<{key_w}}  {r.type:<{type_w}}  {_show(r.default):<{default_w}}  {r.help}".rstrip())
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m experiments.describe", description=__doc__.split("\n\n")[0])
    p.add_argument("--format", choices=("text", "json"), default="text")
    p.add_argument("overrides", nargs="*", help="Hydra overrides, as for experiments.train (model=deepseek)")
    args = p.parse_args(argv)
    try:
        items = list(walk(RunSettings, composed(args.overrides)))
    except (HydraException, OmegaConfBaseException) as e:  # the trainer's one-line wording (unknown key, ...)
        print(one_line(config_error(e)), file=sys.stderr)
        return 2
    if args.format == "json":
        print(json.dumps([dataclasses.asdict(r) for r in items if isinstance(r, Row)], indent=1, default=str))
    else:
        print(render_text(items))
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except BrokenPipeError:  # `| head`: the reader left; not an error of ours
        sys.stderr.close()
        sys.exit(0)
