"""``python -m accounting``: the note's Table 3, its DeepSeek section, and parameter/cost/serving reports.

Subcommands: ``table3``, ``deepseek``, ``params --config SPEC``, ``cost --config SPEC --tokens D [--seq-len n]
[--gpu NAME] [--usd-per-hour X] [--mfu X]``, ``serve --config SPEC --gpu NAME --gpus G --batch B [B ...]
--context n`` (roofline of decode and prefill, accounting.serving) and ``serving-check`` (DeepSeek-V3 in
DeepSeek's disclosed layouts; the note's case D). ``--format table|json|csv``, before or after the subcommand
(table: readable, SI suffixes; json/csv: full precision). Bad input exits with status 2 and ONE line
``error: ...``. JSON field names are documented in docs/accounting.md.

Each subcommand is one `Command` in `COMMANDS` (`accounting.commands`, one module per topic): a function
adding its options to its parser, a function turning the parsed options into its result (a frozen dataclass
from `accounting.api`, whose ``to_dict()`` is the JSON output), and a function rendering that dict as a table
(CSV defaults to flattened ``field,value`` rows). A new subcommand is one ``register(Command(...))`` call;
`build_parser` and `run` need no change.
"""
from __future__ import annotations

import argparse
import sys
from typing import Sequence

from .api import CONVENTION
from .commands import COMMANDS
from .commands.base import (CliError, Command, Once, config_argument, json_text, load_config, parse_count,
                            register)

__all__ = ["Command", "COMMANDS", "register", "config_argument", "build_parser", "run", "main", "CliError",
           "load_config", "parse_count", "CONVENTION"]


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, no usage block
        raise CliError(message)


# ----- entry point ---------------------------------------------------------------------------------
FORMATS = ("table", "json", "csv")


def build_parser() -> _Parser:
    """The parser of every registered command. ``--format`` is accepted before the subcommand (dest
    ``format_before``) or after it (dest ``format``); `run` refuses it in both places."""
    p = _Parser(prog="python -m accounting", description=__doc__.split("\n\n")[0])
    p.add_argument("--format", dest="format_before", choices=FORMATS, default=None, action=Once,
                   help="table (readable, SI suffixes; default), json or csv (full precision); before or "
                        "after the subcommand")
    sub = p.add_subparsers(dest="command", metavar="{" + ",".join(COMMANDS) + "}")
    sub.required = True
    for command in COMMANDS.values():
        sp = sub.add_parser(command.name, help=command.help)
        sp.add_argument("--format", choices=FORMATS, default=argparse.SUPPRESS, action=Once,
                        help="table (default), json or csv")
        command.arguments(sp)
    return p


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Parse ``argv``; ``args.format`` is the one ``--format`` given (default ``table``)."""
    args = build_parser().parse_args(argv)
    after = getattr(args, "format", None)
    if args.format_before is not None and after is not None:
        raise CliError(f"argument --format: given twice ({args.format_before!r} before the subcommand and "
                       f"{after!r} after it); give it once")
    args.format = after or args.format_before or "table"
    return args


def run(argv: Sequence[str] | None = None) -> str:
    """Parse ``argv`` and return the output text (raises CliError/ValueError on bad input)."""
    args = parse_args(argv)
    command = COMMANDS[args.command]
    data = command.result(args).to_dict()
    if args.format == "json":
        return json_text(data)
    if args.format == "csv":
        return command.csv(data)
    return command.text(data)


def main(argv: Sequence[str] | None = None) -> int:
    try:
        text = run(argv)
    except (CliError, ValueError, OSError, KeyError, TypeError) as e:
        msg = " ".join(str(e).split()) or type(e).__name__
        print(f"error: {msg}", file=sys.stderr)
        return 2
    except Exception as e:  # noqa: BLE001  (never a traceback)
        print(f"error: internal {type(e).__name__}: {' '.join(str(e).split())}", file=sys.stderr)
        return 1
    try:
        sys.stdout.write(text if text.endswith("\n") else text + "\n")
        sys.stdout.flush()
    except BrokenPipeError:
        pass
    return 0
