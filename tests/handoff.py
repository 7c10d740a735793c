"""The one stand-in for the emitter in source tests: it records what a source hands over."""

from __future__ import annotations

import asyncio

from infra_observer.events.handoff import Outcome
from infra_observer.events.model import Event


class RecordingHandoff:
    """Records every event a source submits; each one's future resolves to `outcome` at once.

    With `accepts=False` any submit fails the test: for code paths that must hand nothing over.
    """

    def __init__(
        self,
        *,
        source: str | None = None,
        outcome: Outcome = Outcome.DELIVERED,
        accepts: bool = True,
    ) -> None:
        self.events: list[Event] = []
        self._source = source
        self._outcome = outcome
        self._accepts = accepts

    async def submit(self, event: Event, *, source: str) -> asyncio.Future[Outcome]:
        assert self._accepts, f"nothing may be submitted here, got {event.event}"
        assert self._source in (None, source), f"submitted by {source}, not {self._source}"
        self.events.append(event)
        future: asyncio.Future[Outcome] = asyncio.get_running_loop().create_future()
        future.set_result(self._outcome)
        return future

    def of(self, resource_id: str) -> list[Event]:
        """The events of one resource, in the order they were submitted."""
        return [e for e in self.events if e.resource_id == resource_id]

    def names(self, resource_id: str) -> list[str]:
        """The last dotted part of each event name of one resource: `running`, `failed`…"""
        return [e.event.rsplit(".", 1)[-1] for e in self.of(resource_id)]
