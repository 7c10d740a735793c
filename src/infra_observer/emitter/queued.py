"""What passes between the emitter's intake and its delivery: queued events, and their fate.

The intake puts `Pending` events in a `Backlog`; the delivery takes them out in batches and
tells the intake, through `Settlement`, what became of each one. Neither reads the other's
state: the intake alone resolves the futures callers hold and remembers ids and `follows`
links; the delivery alone sends, retries, spools and checkpoints.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol
from uuid import UUID

from infra_observer.config import EmitterSettings
from infra_observer.emitter.backlog import Backlog
from infra_observer.emitter.spool import SpooledEvent
from infra_observer.events.follows import Link
from infra_observer.events.handoff import Outcome
from infra_observer.events.model import Event


@dataclass(slots=True)
class Pending:
    """An accepted event waiting for its batch, with the future its submitter holds."""

    event: Event
    source: str
    size: int
    future: asyncio.Future[Outcome] = field(repr=False)
    arrived: float = 0.0
    """The loop's clock when it was queued: its batch leaves a flush interval later."""
    followed: Link | None = None
    """The event its `follows` names, as the follows tracker gave it."""


def new_backlog(settings: EmitterSettings, *, limit: int) -> Backlog[Pending]:
    """A backlog of at most `limit` events, cut into batches by the configured bounds."""
    return Backlog(
        limit=limit,
        batch_events=settings.batch_max_events,
        batch_bytes=settings.batch_max_bytes,
    )


class Settlement(Protocol):
    """What the delivery tells the intake: state found at start, and each event's fate."""

    def restore(self, resource_id: str, event_id: UUID, occurred: datetime) -> None:
        """An event the checkpoint says was delivered: not sent again, and followed."""
        ...

    def replayed(self, record: SpooledEvent) -> Pending:
        """An event accepted by an earlier process and not settled: queued again."""
        ...

    def before_send(self, batch: Sequence[Pending]) -> None:
        """Point events that follow a rejected one at what that one followed."""
        ...

    def stored(self, items: Sequence[Pending], outcome: Outcome) -> None:
        """The server stores these events (delivered now, or found stored after a start)."""
        ...

    def rejected(self, item: Pending, *, reason: str, detail: str) -> None:
        """The server refused this event: reported, and nothing follows it."""
        ...

    def undelivered(self, items: Sequence[Pending]) -> int:
        """Not delivered by the shutdown deadline; returns how many were still unsettled."""
        ...

    def spool_settled(self) -> None:
        """Settled records left the spool: submits waiting for its space may go on."""
        ...
