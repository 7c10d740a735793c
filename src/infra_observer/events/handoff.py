"""How a source hands an event over: the one seam between sources and the emitter."""

from __future__ import annotations

import asyncio
import enum
from typing import Protocol

from infra_observer.events.model import Event


class Outcome(enum.Enum):
    DELIVERED = "delivered"
    """Accepted by the sink (the events API answered 2xx, or the line was written)."""
    DUPLICATE = "duplicate"
    """Its id was already delivered by this process; nothing was sent."""
    REJECTED = "rejected"
    """Invalid: refused locally or by the server; logged and counted, never retried."""
    UNDELIVERED = "undelivered"
    """Still undelivered when the process stopped."""


class EventHandoff(Protocol):
    async def submit(self, event: Event, *, source: str) -> asyncio.Future[Outcome]:
        """Queue the event, waiting while the queue is full (backpressure).

        The returned future resolves when the event's fate is known; a source that must not
        acknowledge its input before delivery (an SQS message) awaits it, the others do not.
        """
        ...
