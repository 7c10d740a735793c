"""The emitter: a bounded queue, batching, `follows`, once-per-process ids, and retries.

Sources hand events over with `submit`; one delivery loop (`run`) sends them in batches,
in the order they were submitted, so events of one resource arrive in order.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from uuid import UUID

import structlog
import tenacity
from prometheus_client import Counter
from tenacity.wait import wait_base, wait_exponential_jitter

from infra_observer.config import EmitterSettings
from infra_observer.emitter.backlog import Backlog
from infra_observer.emitter.sinks import Sink
from infra_observer.emitter.spool import Checkpoint, Spool, SpooledEvent
from infra_observer.emitter.stored import StoredEvents
from infra_observer.errors import (
    BatchTooLargeError,
    ConfigError,
    DeliveryError,
    MisconfiguredSinkError,
    RejectedBatchError,
    RetryableDeliveryError,
)
from infra_observer.events.follows import FollowsTracker, Link
from infra_observer.events.handoff import Outcome
from infra_observer.events.model import Event, accepted_size, limit_problems
from infra_observer.metrics import Metrics

log = structlog.get_logger(__name__)


@dataclass(slots=True)
class _Pending:
    event: Event
    source: str
    size: int
    future: asyncio.Future[Outcome] = field(repr=False)
    arrived: float = 0.0
    """The loop's clock when it was queued: its batch leaves a flush interval later."""
    followed: Link | None = None
    """The event its `follows` names, as the follows tracker gave it."""


class _IdMemory:
    """Ids delivered by this process, least recently used first out.

    Ids are held as their 128-bit numbers (`UUID.int`), here and in the emitter's queue
    index: a `UUID` computes its hash in Python, several times per event.
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


class _WaitHonouringRetryAfter(wait_base):
    """Exponential backoff with jitter, but never shorter than the server's Retry-After, and
    the longest delay for errors only an operator can fix (so they cause no retry storm)."""

    def __init__(self, *, initial: float, maximum: float) -> None:
        self._backoff = wait_exponential_jitter(multiplier=initial, max=maximum, jitter=initial)
        self._maximum = maximum

    def __call__(self, retry_state: tenacity.RetryCallState) -> float:
        delay = float(self._backoff(retry_state))
        outcome = retry_state.outcome
        error = outcome.exception() if outcome is not None else None
        if isinstance(error, MisconfiguredSinkError):
            return self._maximum
        if isinstance(error, DeliveryError) and error.retry_after is not None:
            return max(delay, error.retry_after)
        return delay


class _DeadlinePassed(Exception):
    pass


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
        self._sink = sink
        self._stored = stored
        self._spool = spool
        self._checkpoint = checkpoint
        self._settings = settings
        self._metrics = metrics
        self._backlog = self._batcher(limit=settings.queue_size)
        # Read when scraped, not written per event.
        metrics.queue_depth.set_function(self._backlog.__len__)
        self._follows = FollowsTracker(
            max_resources=settings.follows_max_resources,
            on_evict=metrics.bound_hits.labels("follows_resources").inc,
        )
        self._delivered = _IdMemory(settings.sent_ids_max)
        # Rejected event id -> what it followed, for the later event already linked to it.
        self._orphaned: OrderedDict[int, Link | None] = OrderedDict()
        # Queued, not yet settled: a second submit of the same id shares the first's fate.
        self._queued: dict[int, asyncio.Future[Outcome]] = {}
        self._stopping = asyncio.Event()
        self._stop_at = float("inf")
        self._sink_healthy: bool | None = None
        self._spool_lock = asyncio.Lock()
        self._spool_freed = asyncio.Event()
        self._replay = self._batcher(limit=1)
        # resource id -> (event id, occurred) of its latest delivered event, for the
        # checkpoint only; kept as objects and formatted when saved, off the delivery path.
        self._last_delivered: OrderedDict[str, tuple[UUID, datetime]] = OrderedDict()
        # Labelled metric children, looked up once per (source, event name).
        self._emitted: dict[tuple[str, str], Counter] = {}
        self._checkpoint_due = 0.0
        self._full_reported = False
        # Built once: one per batch, with a closure over the batch, made reference cycles
        # that kept whole batches alive until the next full garbage collection.
        self._retrying = tenacity.AsyncRetrying(
            retry=tenacity.retry_if_exception_type(RetryableDeliveryError),
            wait=_WaitHonouringRetryAfter(
                initial=settings.retry_initial_seconds, maximum=settings.retry_max_seconds
            ),
            sleep=self._sleep_until_deadline,
            before_sleep=self._before_retry,
            reraise=True,
        )
        self._sending: list[_Pending] = []
        self._in_flight: asyncio.Future[None] | None = None
        # Looked up once: `asyncio.get_running_loop` asks the kernel for the process id on
        # every call, once per submitted event.
        self._loop: asyncio.AbstractEventLoop | None = None

    def _batcher(self, *, limit: int) -> Backlog[_Pending]:
        settings = self._settings
        return Backlog(
            limit=limit,
            batch_events=settings.batch_max_events,
            batch_bytes=settings.batch_max_bytes,
        )

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
                self._restore(resource_id, UUID(event_id), datetime.fromisoformat(occurred))
            log.info("checkpoint_loaded", resources=len(latest))
        if self._spool is not None:
            spooled = await asyncio.to_thread(self._spool.open)
            # Replayed in batches cut as the live ones are, by count and by bytes.
            self._replay = self._batcher(limit=max(1, len(spooled)))
            for record in spooled:
                self._replay.add(self._pending_from_spool(record))
            if self._spool.unreadable:
                self._metrics.spool_records_unreadable.inc(self._spool.unreadable)
            log.info(
                "spool_opened",
                pending=len(self._replay),
                unreadable=self._spool.unreadable,
                bytes=self._spool.bytes_used,
            )

    def _restore(self, resource_id: str, event_id: UUID, occurred: datetime) -> None:
        self._follows.remember(resource_id, event_id, occurred)
        self._delivered.add(event_id.int)
        self._last_delivered[resource_id] = (event_id, occurred)

    def _pending_from_spool(self, record: SpooledEvent) -> _Pending:
        event = record.event
        self._follows.remember(event.resource_id, event.id, event.occurred)
        future: asyncio.Future[Outcome] = asyncio.get_running_loop().create_future()
        self._queued[event.id.int] = future
        size = len(event.to_json())
        return _Pending(event=event, source=record.source, size=size, future=future)

    @property
    def sink_healthy(self) -> bool:
        """False after a failed attempt, until one succeeds; None-safe for the probe."""
        return bool(self._sink_healthy)

    @property
    def queued(self) -> int:
        return len(self._backlog)

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
        pending = _Pending(
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

    async def _enqueue(self, pending: _Pending) -> None:
        if self._backlog.full:
            self._metrics.bound_hits.labels("queue").inc()
            if not self._full_reported:
                # Once until the queue empties again: every waiting event is counted,
                # but a burst must not become a line of log per event.
                self._full_reported = True
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

    def stop(self, deadline_seconds: float) -> None:
        """Deliver what is queued within the deadline, then make `run` return."""
        self._stop_at = min(self._stop_at, time.monotonic() + deadline_seconds)
        self._stopping.set()
        self._backlog.wake()
        if self._in_flight is not None:
            self._schedule_cut(self._in_flight)

    async def run(self) -> None:
        await self._check_sink()
        batch: list[_Pending] = []
        try:
            while batch := self._replay.take():
                await self._deliver_unstored(batch)
                await self._settled(batch)
            while batch := await self._next_batch():
                await self._deliver_unstored(batch)
                await self._settled(batch)
        except _DeadlinePassed:
            pass
        undelivered = self._abandon(batch + self._replay.take_all())
        await self._save_checkpoint()
        if self._spool is not None:
            self._spool.close()
        if undelivered:
            log.error("emitter_stopped_with_undelivered_events", count=undelivered)
        else:
            log.info("emitter_drained")

    async def _settled(self, batch: list[_Pending]) -> None:
        if self._spool is not None:
            cursor = self._spool.settle(len(batch))
            self._spool_freed.set()
            await asyncio.to_thread(self._spool.save_cursor, cursor)
        if time.monotonic() >= self._checkpoint_due:
            await self._save_checkpoint()

    async def _save_checkpoint(self) -> None:
        if self._checkpoint is None:
            return
        self._checkpoint_due = time.monotonic() + self._settings.checkpoint_interval_seconds
        latest = list(self._last_delivered.items())
        await asyncio.to_thread(_save_checkpoint, self._checkpoint, latest)

    async def _check_sink(self) -> None:
        try:
            detail = await self._sink.check()
        except DeliveryError as exc:
            self._sink_healthy = False
            log.warning("sink_unreachable", sink=self._sink.name, error=str(exc))
        else:
            self._sink_healthy = True
            log.info("sink_reachable", sink=self._sink.name, detail=detail)

    async def _next_batch(self) -> list[_Pending]:
        """The next batch: once full, or a flush interval after its oldest event arrived."""
        if not await self._backlog.wait_for_first(self._stopping):
            return []
        if not self._stopping.is_set():
            flush_at = self._backlog.oldest().arrived + self._settings.flush_interval_seconds
            await self._backlog.wait_for_batch(flush_at)
        batch = self._backlog.take()
        if not self._backlog:
            self._full_reported = False
        return batch

    async def _deliver_batch(self, batch: list[_Pending]) -> None:
        if self._orphaned:
            self._repoint_orphans(batch)
        started = time.monotonic()
        try:
            await self._send_with_retries(batch)
        except RejectedBatchError as exc:
            await self._isolate_rejected(batch, exc)
            return
        self._metrics.batch_seconds.observe(time.monotonic() - started)
        self._settle_delivered(batch)

    async def _deliver_unstored(self, batch: list[_Pending]) -> None:
        """`_deliver_batch`, less the events found already stored (see `stored.py`)."""
        if self._stored is not None and not self._stopping.is_set():
            found = await self._stored.among(
                [item.event for item in batch], stopping=self._stopping
            )
            if found:
                stored = [item for item in batch if item.event.id.int in found]
                self._settle_stored(stored, Outcome.DUPLICATE)
                for item in stored:
                    self._metrics.events_duplicate.labels(item.source).inc()
                batch = [item for item in batch if item.event.id.int not in found]
                if not batch:
                    return
        await self._deliver_batch(batch)

    async def _isolate_rejected(self, batch: list[_Pending], exc: RejectedBatchError) -> None:
        # One refused event (or, for a 413, too many bytes) fails the whole batch: halve
        # until the culprits are alone.
        if len(batch) == 1:
            item = batch[0]
            self._queued.pop(item.event.id.int, None)
            self._unchain(item)
            if isinstance(exc, BatchTooLargeError):
                reason = "too_large"
                detail = (
                    f"{exc.status}: {item.size} bytes on its own are over the body size limit "
                    "of a proxy in front of the events API; raise that limit"
                )
            else:
                reason, detail = "server_rejected", f"{exc.status}: {exc.detail}"
            self._reject(item.event, source=item.source, reason=reason, detail=detail)
            item.future.set_result(Outcome.REJECTED)
            return
        middle = len(batch) // 2
        for half in (batch[:middle], batch[middle:]):
            await self._deliver_batch(half)

    def _unchain(self, item: _Pending) -> None:
        """A rejected event is never stored: nothing may follow it."""
        event = item.event
        if not self._follows.unlink(event.resource_id, event.id, item.followed):
            # A later event of the resource was linked to it: re-pointed before it is sent.
            self._orphaned[event.id.int] = item.followed
            if len(self._orphaned) > self._settings.follows_max_resources:
                self._orphaned.popitem(last=False)
                self._metrics.bound_hits.labels("follows_resources").inc()

    def _repoint_orphans(self, batch: list[_Pending]) -> None:
        """Point events that follow a rejected one at what that one followed."""
        orphaned = self._orphaned
        for item in batch:
            follows = item.event.follows
            if follows is None or follows.int not in orphaned:
                continue
            followed = self._follows.in_window(orphaned.pop(follows.int), item.event.occurred)
            item.followed = followed
            item.event = item.event.with_follows(None if followed is None else followed[0])

    async def _send_with_retries(self, batch: list[_Pending]) -> None:
        self._sending = batch
        try:
            async for attempt in self._retrying:
                with attempt:
                    await self._send_before_deadline([item.event for item in batch])
        except RetryableDeliveryError:
            raise _DeadlinePassed from None
        finally:
            self._sending = []
        self._sink_healthy = True

    async def _send_before_deadline(self, events: list[Event]) -> None:
        """One attempt, cut short when the shutdown deadline passes while it is in flight."""
        send = asyncio.ensure_future(self._sink.send(events))
        self._in_flight = send
        cut = self._schedule_cut(send) if self._stopping.is_set() else None
        try:
            await send
        except asyncio.CancelledError:
            current = asyncio.current_task()
            if current is not None and current.cancelling():
                raise  # this task is being cancelled, not just the attempt
            raise RetryableDeliveryError(
                "shutdown deadline passed during a delivery attempt"
            ) from None
        finally:
            self._in_flight = None
            if cut is not None:
                cut.cancel()

    def _schedule_cut(self, send: asyncio.Future[None]) -> asyncio.TimerHandle:
        delay = max(0.0, self._stop_at - time.monotonic())
        return asyncio.get_running_loop().call_later(delay, send.cancel)

    def _before_retry(self, retry_state: tenacity.RetryCallState) -> None:
        self._sink_healthy = False
        for item in self._sending:
            self._metrics.events_retried.labels(item.source, item.event.event).inc()
        outcome = retry_state.outcome
        error = outcome.exception() if outcome is not None else None
        reason = type(error).__name__ if error is not None else "unknown"
        self._metrics.delivery_retries.labels(reason).inc()
        delay = retry_state.upcoming_sleep
        emit_log = log.error if isinstance(error, MisconfiguredSinkError) else log.warning
        emit_log(
            "delivery_failed",
            error=str(error),
            attempt=retry_state.attempt_number,
            retry_in=round(delay, 2),
        )

    async def _sleep_until_deadline(self, delay: float) -> None:
        wake_at = time.monotonic() + delay
        while (now := time.monotonic()) < min(wake_at, self._stop_at):
            try:
                await asyncio.wait_for(self._stopping.wait(), min(wake_at, self._stop_at) - now)
            except TimeoutError:
                break
            # Asked to stop while sleeping: the deadline now bounds the sleep.
            if self._stop_at <= time.monotonic():
                break
            await asyncio.sleep(min(wake_at, self._stop_at) - time.monotonic())
        if time.monotonic() >= self._stop_at:
            raise RetryableDeliveryError("shutdown deadline passed before delivery")

    def _settle_delivered(self, batch: Sequence[_Pending]) -> None:
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

    def _settle_stored(self, items: Sequence[_Pending], outcome: Outcome) -> None:
        """The server stores these events: their ids are not sent again, the checkpoint
        learns them, and whoever submitted them learns `outcome`."""
        remember = self._checkpoint is not None
        queued, delivered = self._queued, self._delivered
        for item in items:
            event = item.event
            id_number = event.id.int
            queued.pop(id_number, None)
            if delivered.add(id_number):
                self._metrics.bound_hits.labels("sent_ids").inc()
            if remember:
                self._remember_delivered(event)
            if not item.future.done():
                item.future.set_result(outcome)

    def _remember_delivered(self, event: Event) -> None:
        resource_id = event.resource_id
        self._last_delivered[resource_id] = (event.id, event.occurred)
        self._last_delivered.move_to_end(resource_id)
        if len(self._last_delivered) > self._settings.follows_max_resources:
            self._last_delivered.popitem(last=False)

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

    def _abandon(self, in_flight: list[_Pending]) -> int:
        """Settle everything not delivered by the deadline as UNDELIVERED; return the count."""
        abandoned = [item for item in in_flight if not item.future.done()]
        abandoned += self._backlog.take_all()
        for item in abandoned:
            self._metrics.events_undelivered.labels(item.source).inc()
            self._queued.pop(item.event.id.int, None)
            item.future.set_result(Outcome.UNDELIVERED)
        return len(abandoned)


def _save_checkpoint(
    checkpoint: Checkpoint, latest: list[tuple[str, tuple[UUID, datetime]]]
) -> None:
    checkpoint.save(
        {
            resource: (str(event_id), occurred.isoformat())
            for resource, (event_id, occurred) in latest
        }
    )
