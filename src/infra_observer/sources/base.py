"""What every source offers the application."""

from __future__ import annotations

from typing import Protocol


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
