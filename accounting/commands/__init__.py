"""The subcommands of ``python -m accounting``, by topic; `accounting.cli` parses the command line and runs them.

* `accounting.commands.base`: the registry (`Command`, `COMMANDS`, `register`), `CliError`, option types.
* `accounting.commands.reproduce`: ``table3``, ``deepseek``.
* `accounting.commands.model`: ``scaling``, ``params``, ``cost``, ``train-memory``.
* `accounting.commands.serving`: ``serve``, ``serving-check``.

Importing this package registers every shipped subcommand, in the order ``--help`` lists them (`TOPICS`).
"""
from . import reproduce, model, serving  # this order is the order of --help: keep it
from .base import COMMANDS

TOPICS = (reproduce, model, serving)
"""The modules whose ``register`` calls fill `COMMANDS` (imported in this order: ``--help`` follows it)."""

__all__ = ["COMMANDS", "TOPICS"]
