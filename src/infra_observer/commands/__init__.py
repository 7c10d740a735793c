"""The one-shot subcommands besides `run` and `check`: `config`, `emit` and `validate`.

Each module parses its own arguments into typed inputs and returns results; `cli` prints
them and maps them to exit codes.
"""

from __future__ import annotations

from infra_observer.errors import InfraObserverError


class CommandInputError(InfraObserverError):
    """A command's arguments are wrong in a way argparse cannot see alone; exit status 2."""
