"""The registry of ``python -m accounting`` subcommands and what every subcommand shares: its one-line error
(`CliError`), option types that refuse bad input, ``--config``, and strict JSON.

A subcommand is one `Command` added to `COMMANDS` with `register`; the topic modules of this package
(`accounting.commands.reproduce`, `model`, `serving`) register the shipped ones, `accounting.cli` parses and runs.
"""
from __future__ import annotations

import argparse
import json
import math
from dataclasses import dataclass
from typing import Any, Callable

from ..api import Result, parse_count as _parse_count
from ..config_files import resolve_config
from ..formatting import flatten, kv_csv
from ..shapes import ModelShape


class CliError(ValueError):
    """Bad input: printed as one line ``error: ...``."""


# ----- input parsing ---------------------------------------------------------------------------------
def parse_count(text: str, what: str = "value") -> float:
    """'14.8e12', '14.8T', '2B', '1500000' -> a positive finite number (K/M/B/G/T/P suffixes)."""
    try:
        return _parse_count(text, what)
    except ValueError as e:
        raise CliError(str(e)) from None


def argument_type(name: str, parse, ok, not_parsed: str, refused: str):
    """An argparse ``type``: ``parse(text)``; "must be <not_parsed>" when that fails, "must be <refused>" when
    ``ok(value)`` is false (one validator, several ranges)."""
    def check(text: str):
        try:
            value = parse(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be {not_parsed}, got {text!r}") from None
        if not ok(value):
            raise argparse.ArgumentTypeError(f"must be {refused}, got {text!r}")
        return value
    check.__name__ = name
    return check


YEAR_RANGE = (1900.0, 2200.0)
"""``--year``: price years the halving-cost model is asked about (outside: refused, not overflowed)."""

positive_int = argument_type("positive_int", int, lambda v: v >= 1, "a positive integer", "a positive integer")
nonneg_int = argument_type("nonneg_int", int, lambda v: v >= 0, "an integer >= 0", "an integer >= 0")
fraction = argument_type("fraction", float, lambda v: 0 < v <= 1, "a number in (0, 1]", "in (0, 1]")
unit_interval = argument_type("unit_interval", float, lambda v: 0 <= v <= 1, "a number in [0, 1]", "in [0, 1]")
nonneg = argument_type("nonneg", float, lambda v: math.isfinite(v) and v >= 0, "a number >= 0",
                    "a finite number >= 0")
positive_number = argument_type("positive_number", float, lambda v: math.isfinite(v) and v > 0, "a number > 0",
                             "a finite number > 0")
gpus_or_auto = argument_type("gpus_or_auto", lambda t: "auto" if t.strip().lower() == "auto" else int(t),
                          lambda v: v == "auto" or v >= 1, "a positive integer or 'auto'",
                          "a positive integer or 'auto'")
year_argument = argument_type("year", float, lambda v: math.isfinite(v) and YEAR_RANGE[0] <= v <= YEAR_RANGE[1],
                              "a year like 2027", f"a year in [{YEAR_RANGE[0]:g}, {YEAR_RANGE[1]:g}]")


def check_finite(data: Any, what: str) -> None:
    """Raise `CliError` naming the first non-finite number in ``data`` (an overflow), never print it."""
    for key, value in flatten(data):
        if isinstance(value, float) and not math.isfinite(value):
            raise CliError(f"{what}: {key} is {value} (the numbers overflow); use smaller inputs")


def json_text(data: Any) -> str:
    """Strict JSON: never ``Infinity`` or ``NaN``."""
    check_finite(data, "no JSON output")
    return json.dumps(data, indent=2, allow_nan=False)


class Once(argparse.Action):
    """Store an option's value; a second occurrence is an error (never a silent 'last one wins')."""

    def __call__(self, parser, namespace, values, _option_string=None):
        seen = f"_seen_{self.dest}"
        if getattr(namespace, seen, False):
            parser.error(f"argument {'/'.join(self.option_strings)}: given twice "
                         f"({getattr(namespace, self.dest)!r} and {values!r}); give it once")
        setattr(namespace, seen, True)
        setattr(namespace, self.dest, values)


def load_config(spec: str, seq_len: int | None = None) -> tuple[ModelShape, str]:
    """``--config SPEC`` -> (shape, source): a shipped name, an HF config.json or a checkpoint folder holding
    one, a JSON/YAML of ModelShape fields, a run folder or its config.yaml, or a conf/model/<name>.yaml
    (`accounting.config_files`). ``seq_len`` overrides the context length."""
    loaded = resolve_config(spec, seq_len)
    return loaded.shape, loaded.source


CONFIG_HELP = ("a shipped name (deepseek-v3, ...), an HF config.json or a checkpoint folder holding one, a JSON/YAML "
               "of ModelShape fields, a run folder or its config.yaml, or conf/model/<name>.yaml (Hydra compose)")


def config_argument(parser: argparse.ArgumentParser) -> None:
    """Add the ``--config SPEC`` option (required, given once)."""
    parser.add_argument("--config", required=True, action=Once, help=CONFIG_HELP)


# ----- the command registry ----------------------------------------------------------------------------
@dataclass(frozen=True)
class Command:
    """One subcommand of ``python -m accounting``.

    ``arguments(parser)`` adds the subcommand's options (``--format`` is added for every command);
    ``result(args)`` returns its result, an `accounting.api.Result` (a frozen dataclass whose ``to_dict()``
    is the JSON output; bad input raises ``ValueError`` with a one-line message); ``text(data)`` renders that
    dict as the default table output; ``csv(data)`` as CSV (default: ``field,value`` rows of the flattened
    dict)."""

    name: str
    help: str
    arguments: Callable[[argparse.ArgumentParser], None]
    result: Callable[[argparse.Namespace], Result]
    text: Callable[[dict[str, Any]], str]
    csv: Callable[[dict[str, Any]], str] = kv_csv


COMMANDS: dict[str, Command] = {}
"""Registered subcommands, in the order ``--help`` lists them."""


def register(command: Command) -> Command:
    """Add ``command`` to `COMMANDS` (a second registration of a name is a programming error)."""
    if command.name in COMMANDS:
        raise ValueError(f"accounting subcommand {command.name!r} is registered twice")
    COMMANDS[command.name] = command
    return command


def no_arguments(parser: argparse.ArgumentParser) -> None:
    """A subcommand without options of its own."""
