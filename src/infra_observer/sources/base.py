"""What every source offers the application."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Protocol

Level = Literal["WARNING", "ERROR"]


@dataclass(frozen=True, slots=True)
class Diagnosis:
    """What is wrong with a flow run's infrastructure, ready for the flow run's logs.

    Written once per change of `category`, never per change of the summary's text.
    """

    category: str
    """The source's category, as in its `kubernetes.diagnosis` or `ecs.diagnosis` label."""
    level: Level
    summary: str
    """One line, built from the object (container, reason, exit code, the API's message)."""
    resolution: str


class Source(Protocol):
    """A watcher: its `run` loops forever (reconnecting by design) until it is cancelled."""

    name: str

    @property
    def ready(self) -> bool:
        """True once the initial state was listed and processed and changes are followed."""
        ...

    async def run(self) -> None: ...

    async def check(self) -> str:
        """Reach the peer once; return what was reached, or raise an InfraObserverError
        whose message says what is wrong and how to fix it (secrets redacted)."""
        ...


_SUMMARY_LIMIT = 300


def one_line(text: str) -> str:
    """`text` on one line (runs of white space become one space), cut to a readable length."""
    flat = " ".join(text.split())
    return flat if len(flat) <= _SUMMARY_LIMIT else f"{flat[: _SUMMARY_LIMIT - 1]}…"
