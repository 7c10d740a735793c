"""Accepting events from the sources: checks, once-per-process ids, `follows`, backpressure.

`Intake.submit` is the sources' `EventHandoff` seam. An event is checked against the API's
limits, chained to the previous event of its resource, written to the spool when there is
one, and queued in the backlog, waiting while the backlog (or the spool) is full. The
delivery reports each event's fate back through `Settlement`, which the intake implements:
it resolves the future the submitter holds and keeps ids and `follows` links true to what
the server stores.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import Sequence
from datetime import datetime
from uuid import UUID

import structlog

from infra_observer.config import EmitterSettings
from infra_observer.emitter.backlog import Backlog
from infra_observer.emitter.queued import Pending
from infra_observer.emitter.spool import Spool, SpooledEvent
from infra_observer.events.follows import FollowsTracker, Link
from infra_observer.events.handoff import Outcome
from infra_observer.events.model import Event, accepted_size, limit_problems
from infra_observer.metrics import Metrics

log = structlog.get_logger(__name__)


class _IdMemory:
    """Ids delivered by this process, least recently used first out.

    Ids are held as their 128-bit numbers (`UUID.int`), here and in the intake's index of
    queued events: a `UUID` computes its hash in Python, and each event is looked up several
    times.
    """

    def __init__(self, limit: int) -> None:
        self._ids: OrderedDict[int, None] = OrderedDict()
        self._limit = limit

    def __contains__(self, event_id: int) -> bool:
        return event_id in self._ids

    def add(self, event_id: int) -> bool:
        """Remember the id; True when an older one had to be forgotten."""
        self._ids[event_id] = None
        if len(self._ids) > self._limit:
            self._ids.popitem(last=False)
            return True
        return False


class Intake:
    """Accepts events into the backlog (and the spool) and settles them as the delivery
    reports; implements `EventHandoff` and `Settlement`."""

    def __init__(
        self,
        *,
        settings: EmitterSettings,
        metrics: Metrics,
        backlog: Backlog[Pending],
        spool: Spool | None = None,
    ) -> None:
        """`spool`: written here, before an event is queued; opened, settled and closed by
        the delivery."""
        self._settings = settings
        self._metrics = metrics
        self._backlog = backlog
        self._spool = spool
        self._follows = FollowsTracker(
            max_resources=settings.follows_max_resources,
            on_evict=metrics.bound_hits.labels("follows_resources").inc,
        )
        self._delivered = _IdMemory(settings.sent_ids_max)
        # Rejected event id -> what it followed, for the later event already linked to it.
        self._orphaned: OrderedDict[int, Link | None] = OrderedDict()
        # Queued, not yet settled: a second submit of the same id shares the first's fate.
        self._queued: dict[int, asyncio.Future[Outcome]] = {}
        self._spool_lock = asyncio.Lock()
        self._spool_freed = asyncio.Event()
        # Looked up once: `asyncio.get_running_loop` asks the kernel for the process id on
        # every call, once per submitted event.
        self._loop: asyncio.AbstractEventLoop | None = None

    async def submit(self, event: Event, *, source: str) -> asyncio.Future[Outcome]:
        self._metrics.events_observed.inc((source, event.event))
        id_number = event.id.int
        queued = self._queued.get(id_number)
        if queued is not None:
            self._metrics.events_duplicate.labels(source).inc()
            return queued
        loop = self._loop
        if loop is None:
            loop = self._loop = asyncio.get_running_loop()
        future: asyncio.Future[Outcome] = loop.create_future()
        if id_number in self._delivered:
            self._metrics.events_duplicate.labels(source).inc()
            future.set_result(Outcome.DUPLICATE)
            return future
        followed = self._follows.link(event.resource_id, event.id, event.occurred)
        if followed is not None:
            event = event.with_follows(followed[0])
        size = accepted_size(event)
        if size is None:
            self._follows.unlink(event.resource_id, event.id, followed)
            problems = limit_problems(event)
            self._reject(event, source=source, reason="invalid", detail="; ".join(problems))
            future.set_result(Outcome.REJECTED)
            return future
        pending = Pending(
            event=event,
            source=source,
            size=size,
            future=future,
            arrived=loop.time(),
            followed=followed,
        )
        self._queued[id_number] = future
        if self._spool is None:
            if self._backlog.full:
                await self._enqueue(pending)
            else:
                self._backlog.add(pending)  # the usual case, without a coroutine per event
        else:
            # One writer at a time, so the spool's order is the queue's order.
            async with self._spool_lock:
                await self._wait_for_spool_space(source)
                self._spool.append(event, source=source)
                await self._enqueue(pending)
        return future

    async def _enqueue(self, pending: Pending) -> None:
        if self._backlog.full:
            self._metrics.bound_hits.labels("queue").inc()
            if self._backlog.newly_full():
                # Every waiting event is counted, but a burst must not become a line of log
                # per event.
                log.warning(
                    "emitter_queue_full", source=pending.source, size=self._settings.queue_size
                )
        await self._backlog.put(pending)

    async def _wait_for_spool_space(self, source: str) -> None:
        assert self._spool is not None
        if self._spool.bytes_used < self._settings.spool_max_bytes:
            return
        self._metrics.bound_hits.labels("spool").inc()
        log.warning("spool_full", source=source, bytes=self._spool.bytes_used)
        while self._spool.bytes_used >= self._settings.spool_max_bytes:
            self._spool_freed.clear()
            await self._spool_freed.wait()

    def spool_settled(self) -> None:
        self._spool_freed.set()

    def restore(self, resource_id: str, event_id: UUID, occurred: datetime) -> None:
        self._follows.remember(resource_id, event_id, occurred)
        self._delivered.add(event_id.int)

    def replayed(self, record: SpooledEvent) -> Pending:
        event = record.event
        self._follows.remember(event.resource_id, event.id, event.occurred)
        future: asyncio.Future[Outcome] = asyncio.get_running_loop().create_future()
        self._queued[event.id.int] = future
        size = len(event.to_json())
        return Pending(event=event, source=record.source, size=size, future=future)

    def before_send(self, batch: Sequence[Pending]) -> None:
        orphaned = self._orphaned
        if not orphaned:
            return
        for item in batch:
            follows = item.event.follows
            if follows is None or follows.int not in orphaned:
                continue
            followed = self._follows.in_window(orphaned.pop(follows.int), item.event.occurred)
            item.followed = followed
            item.event = item.event.with_follows(None if followed is None else followed[0])

    def stored(self, items: Sequence[Pending], outcome: Outcome) -> None:
        """Their ids are not sent again, and whoever submitted them learns `outcome`."""
        queued, delivered = self._queued, self._delivered
        for item in items:
            id_number = item.event.id.int
            queued.pop(id_number, None)
            if delivered.add(id_number):
                self._metrics.bound_hits.labels("sent_ids").inc()
            if not item.future.done():
                item.future.set_result(outcome)
        if outcome is Outcome.DUPLICATE:
            for item in items:
                self._metrics.events_duplicate.labels(item.source).inc()

    def rejected(self, item: Pending, *, reason: str, detail: str) -> None:
        self._queued.pop(item.event.id.int, None)
        self._unchain(item)
        self._reject(item.event, source=item.source, reason=reason, detail=detail)
        item.future.set_result(Outcome.REJECTED)

    def _unchain(self, item: Pending) -> None:
        """A rejected event is never stored: nothing may follow it."""
        event = item.event
        if not self._follows.unlink(event.resource_id, event.id, item.followed):
            # A later event of the resource was linked to it: re-pointed before it is sent.
            self._orphaned[event.id.int] = item.followed
            if len(self._orphaned) > self._settings.follows_max_resources:
                self._orphaned.popitem(last=False)
                self._metrics.bound_hits.labels("follows_resources").inc()

    def _reject(self, event: Event, *, source: str, reason: str, detail: str) -> None:
        self._metrics.events_rejected.labels(source, reason).inc()
        log.error(
            "event_rejected",
            source=source,
            reason=reason,
            detail=detail,
            event_name=event.event,
            event_id=str(event.id),
            resource_id=event.resource.get("prefect.resource.id"),
        )

    def undelivered(self, items: Sequence[Pending]) -> int:
        abandoned = [item for item in items if not item.future.done()]
        for item in abandoned:
            self._metrics.events_undelivered.labels(item.source).inc()
            self._queued.pop(item.event.id.int, None)
            item.future.set_result(Outcome.UNDELIVERED)
        return len(abandoned)
