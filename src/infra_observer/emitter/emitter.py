"""The emitter's public face: one object that accepts events and delivers them.

Sources hand events over with `submit` (the intake: `intake.py`); one delivery loop (`run`,
the delivery: `delivery.py`) sends them in batches, in the order they were submitted, so
events of one resource arrive in order. The two share the backlog and talk through
`queued.Settlement`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any

from infra_observer.config import EmitterSettings
from infra_observer.emitter.delivery import Delivery
from infra_observer.emitter.intake import Intake
from infra_observer.emitter.queued import new_backlog
from infra_observer.emitter.sinks import Sink
from infra_observer.emitter.spool import Checkpoint, Spool
from infra_observer.emitter.stored import StoredEvents
from infra_observer.events.handoff import Outcome
from infra_observer.events.model import Event
from infra_observer.metrics import Metrics


class Emitter:
    """Implements `EventHandoff` for the sources and delivers to one `Sink`."""

    def __init__(
        self,
        *,
        sink: Sink,
        settings: EmitterSettings,
        metrics: Metrics,
        spool: Spool | None = None,
        checkpoint: Checkpoint | None = None,
        stored: StoredEvents | None = None,
    ) -> None:
        backlog = new_backlog(settings, limit=settings.queue_size)
        # Read when scraped, not written per event.
        metrics.queue_depth.set_function(backlog.__len__)
        self._backlog = backlog
        self._intake = Intake(settings=settings, metrics=metrics, backlog=backlog, spool=spool)
        self._delivery = Delivery(
            sink=sink,
            settings=settings,
            metrics=metrics,
            backlog=backlog,
            settlement=self._intake,
            spool=spool,
            checkpoint=checkpoint,
            stored=stored,
        )

    async def open(self) -> None:
        """Load the checkpoint and the spool; call before any source submits."""
        await self._delivery.open()

    @property
    def sink_healthy(self) -> bool:
        """False after a failed attempt, until one succeeds; None-safe for the probe."""
        return self._delivery.healthy

    @property
    def queued(self) -> int:
        return len(self._backlog)

    def submit(self, event: Event, *, source: str) -> Coroutine[Any, Any, asyncio.Future[Outcome]]:
        """`EventHandoff.submit`: the intake's own coroutine, not one wrapped in another per
        event."""
        return self._intake.submit(event, source=source)

    def stop(self, deadline_seconds: float) -> None:
        """Deliver what is queued within the deadline, then make `run` return."""
        self._delivery.stop(deadline_seconds)

    async def run(self) -> None:
        """The delivery loop: returns after `stop`, once what was queued is delivered or the
        deadline has passed."""
        await self._delivery.run()
