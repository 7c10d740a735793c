"""Delivering queued events: batches, halving refused ones, the spool and checkpoint, drain.

One loop (`run`) takes batches from the backlog in the order they were submitted, so events
of one resource arrive in order. A batch leaves once full, or a flush interval after its
oldest event arrived; it is sent whole and retried until it goes through (`retries.py`).
After a start, events an earlier process may have delivered are looked up first
(`stored.py`). The spool's settled cursor and the checkpoint are written as batches settle;
on `stop` what is queued is delivered until the deadline, and the rest is settled as
undelivered. What became of each event goes back to the intake through `Settlement`.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Sequence
from datetime import datetime
from uuid import UUID

import structlog
from prometheus_client import Counter

from infra_observer.config import EmitterSettings
from infra_observer.emitter.backlog import Backlog
from infra_observer.emitter.queued import Pending, Settlement, new_backlog
from infra_observer.emitter.retries import DeadlinePassed, RetryingSender
from infra_observer.emitter.sinks import Sink
from infra_observer.emitter.spool import Checkpoint, Spool
from infra_observer.emitter.stored import StoredEvents
from infra_observer.errors import BatchTooLargeError, ConfigError, RejectedBatchError
from infra_observer.events.handoff import Outcome
from infra_observer.events.model import Event
from infra_observer.metrics import Metrics

log = structlog.get_logger(__name__)


class Delivery:
    """Takes batches from the backlog and delivers them to one `Sink`."""

    def __init__(
        self,
        *,
        sink: Sink,
        settings: EmitterSettings,
        metrics: Metrics,
        backlog: Backlog[Pending],
        settlement: Settlement,
        spool: Spool | None = None,
        checkpoint: Checkpoint | None = None,
        stored: StoredEvents | None = None,
    ) -> None:
        self._settings = settings
        self._metrics = metrics
        self._backlog = backlog
        self._settlement = settlement
        self._spool = spool
        self._checkpoint = checkpoint
        self._stored = stored
        self._sender = RetryingSender(sink=sink, settings=settings, metrics=metrics)
        self._replay = new_backlog(settings, limit=1)
        # resource id -> (event id, occurred) of its latest delivered event, for the
        # checkpoint only; kept as objects and formatted when saved, off the delivery path.
        self._last_delivered: OrderedDict[str, tuple[UUID, datetime]] = OrderedDict()
        self._checkpoint_due = 0.0
        # Labelled metric children, looked up once per (source, event name).
        self._emitted: dict[tuple[str, str], Counter] = {}

    @property
    def healthy(self) -> bool:
        return self._sender.healthy

    async def open(self) -> None:
        """Load the checkpoint and the spool; call before any source submits."""
        try:
            await self._load_state()
        except OSError as exc:
            raise ConfigError(
                f"INFRA_OBSERVER_EMITTER_SPOOL_DIR={str(self._settings.spool_dir)!r}: cannot be "
                f"used ({exc.strerror or exc}); give the process a writable directory"
            ) from exc

    async def _load_state(self) -> None:
        if self._checkpoint is not None:
            latest = await asyncio.to_thread(self._checkpoint.load)
            for resource_id, (event_id, occurred) in latest.items():
                restored = (UUID(event_id), datetime.fromisoformat(occurred))
                self._settlement.restore(resource_id, *restored)
                self._last_delivered[resource_id] = restored
            log.info("checkpoint_loaded", resources=len(latest))
        if self._spool is not None:
            spooled = await asyncio.to_thread(self._spool.open)
            # Replayed in batches cut as the live ones are, by count and by bytes.
            self._replay = new_backlog(self._settings, limit=max(1, len(spooled)))
            for record in spooled:
                self._replay.add(self._settlement.replayed(record))
            if self._spool.unreadable:
                self._metrics.spool_records_unreadable.inc(self._spool.unreadable)
            log.info(
                "spool_opened",
                pending=len(self._replay),
                unreadable=self._spool.unreadable,
                bytes=self._spool.bytes_used,
            )

    def stop(self, deadline_seconds: float) -> None:
        """Deliver what is queued within the deadline, then make `run` return."""
        self._sender.stop(deadline_seconds)
        self._backlog.wake()

    async def run(self) -> None:
        await self._sender.check()
        batch: list[Pending] = []
        try:
            while batch := self._replay.take():
                await self._deliver_unstored(batch)
                await self._settled(batch)
            while batch := await self._next_batch():
                await self._deliver_unstored(batch)
                await self._settled(batch)
        except DeadlinePassed:
            pass
        left = batch + self._replay.take_all() + self._backlog.take_all()
        undelivered = self._settlement.undelivered(left)
        await self._save_checkpoint()
        if self._spool is not None:
            self._spool.close()
        if undelivered:
            log.error("emitter_stopped_with_undelivered_events", count=undelivered)
        else:
            log.info("emitter_drained")

    async def _next_batch(self) -> list[Pending]:
        """The next batch: once full, or a flush interval after its oldest event arrived."""
        stopping = self._sender.stopping
        if not await self._backlog.wait_for_first(stopping):
            return []
        if not stopping.is_set():
            flush_at = self._backlog.oldest().arrived + self._settings.flush_interval_seconds
            await self._backlog.wait_for_batch(flush_at)
        return self._backlog.take()

    async def _settled(self, batch: list[Pending]) -> None:
        if self._spool is not None:
            cursor = self._spool.settle(len(batch))
            self._settlement.spool_settled()
            await asyncio.to_thread(self._spool.save_cursor, cursor)
        if time.monotonic() >= self._checkpoint_due:
            await self._save_checkpoint()

    async def _save_checkpoint(self) -> None:
        if self._checkpoint is None:
            return
        self._checkpoint_due = time.monotonic() + self._settings.checkpoint_interval_seconds
        latest = list(self._last_delivered.items())
        await asyncio.to_thread(_save_checkpoint, self._checkpoint, latest)

    async def _deliver_unstored(self, batch: list[Pending]) -> None:
        """`_deliver_batch`, less the events found already stored (see `stored.py`)."""
        stopping = self._sender.stopping
        if self._stored is not None and not stopping.is_set():
            found = await self._stored.among([item.event for item in batch], stopping=stopping)
            if found:
                stored = [item for item in batch if item.event.id.int in found]
                self._settle_stored(stored, Outcome.DUPLICATE)
                batch = [item for item in batch if item.event.id.int not in found]
                if not batch:
                    return
        await self._deliver_batch(batch)

    async def _deliver_batch(self, batch: list[Pending]) -> None:
        self._settlement.before_send(batch)
        started = time.monotonic()
        try:
            await self._sender.send(batch)
        except RejectedBatchError as exc:
            await self._isolate_rejected(batch, exc)
            return
        self._metrics.batch_seconds.observe(time.monotonic() - started)
        self._settle_delivered(batch)

    async def _isolate_rejected(self, batch: list[Pending], exc: RejectedBatchError) -> None:
        # One refused event (or, for a 413, too many bytes) fails the whole batch: halve
        # until the culprits are alone.
        if len(batch) == 1:
            item = batch[0]
            if isinstance(exc, BatchTooLargeError):
                reason = "too_large"
                detail = (
                    f"{exc.status}: {item.size} bytes on its own are over the body size limit "
                    "of a proxy in front of the events API; raise that limit"
                )
            else:
                reason, detail = "server_rejected", f"{exc.status}: {exc.detail}"
            self._settlement.rejected(item, reason=reason, detail=detail)
            return
        middle = len(batch) // 2
        for half in (batch[:middle], batch[middle:]):
            await self._deliver_batch(half)

    def _settle_delivered(self, batch: Sequence[Pending]) -> None:
        counts: dict[tuple[str, str], int] = {}
        self._settle_stored(batch, Outcome.DELIVERED)
        for item in batch:
            key = (item.source, item.event.event)
            counts[key] = counts.get(key, 0) + 1
        for key, count in counts.items():
            emitted = self._emitted.get(key)
            if emitted is None:
                emitted = self._emitted[key] = self._metrics.events_emitted.labels(*key)
            emitted.inc(count)
        self._metrics.last_delivery.set(time.time())

    def _settle_stored(self, items: Sequence[Pending], outcome: Outcome) -> None:
        """The server stores these events: the checkpoint learns them, and the intake
        settles them as `outcome`."""
        if self._checkpoint is not None:
            for item in items:
                self._remember_delivered(item.event)
        self._settlement.stored(items, outcome)

    def _remember_delivered(self, event: Event) -> None:
        resource_id = event.resource_id
        self._last_delivered[resource_id] = (event.id, event.occurred)
        self._last_delivered.move_to_end(resource_id)
        if len(self._last_delivered) > self._settings.follows_max_resources:
            self._last_delivered.popitem(last=False)


def _save_checkpoint(
    checkpoint: Checkpoint, latest: list[tuple[str, tuple[UUID, datetime]]]
) -> None:
    checkpoint.save(
        {
            resource: (str(event_id), occurred.isoformat())
            for resource, (event_id, occurred) in latest
        }
    )
