"""Sending one batch to the sink: retried with backoff and Retry-After until the deadline.

Every failed attempt is retried for ever, with exponential backoff and jitter, never sooner
than the server's `Retry-After`, and at the longest delay for errors only an operator can fix
(so they cause no retry storm). Once `stop` is called, the shutdown deadline cuts short both
a sleep between attempts and an attempt in flight. The sink counts as healthy after an
attempt that went through, and as unhealthy after one that failed.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence

import structlog
import tenacity
from tenacity.wait import wait_base, wait_exponential_jitter

from infra_observer.config import EmitterSettings
from infra_observer.emitter.queued import Pending
from infra_observer.emitter.sinks import Sink
from infra_observer.errors import DeliveryError, MisconfiguredSinkError, RetryableDeliveryError
from infra_observer.events.model import Event
from infra_observer.metrics import Metrics

log = structlog.get_logger(__name__)


class DeadlinePassed(Exception):
    """The shutdown deadline passed before the batch went through."""


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


class RetryingSender:
    """Sends whole batches to one sink, retrying each until it goes through or `stop`'s
    deadline passes."""

    def __init__(self, *, sink: Sink, settings: EmitterSettings, metrics: Metrics) -> None:
        self._sink = sink
        self._metrics = metrics
        self.stopping = asyncio.Event()
        """Set by `stop`; the delivery stops waiting for more events once it is."""
        self._stop_at = float("inf")
        self._healthy: bool | None = None
        # Built once: a policy built per batch would close over the batch, and that
        # reference cycle would keep the whole batch alive until a full garbage collection.
        self._retrying = tenacity.AsyncRetrying(
            retry=tenacity.retry_if_exception_type(RetryableDeliveryError),
            wait=_WaitHonouringRetryAfter(
                initial=settings.retry_initial_seconds, maximum=settings.retry_max_seconds
            ),
            sleep=self._sleep_until_deadline,
            before_sleep=self._before_retry,
            reraise=True,
        )
        self._sending: Sequence[Pending] = ()
        self._in_flight: asyncio.Future[None] | None = None

    @property
    def healthy(self) -> bool:
        """False after a failed attempt, until one succeeds (and before the first check)."""
        return bool(self._healthy)

    async def check(self) -> None:
        """Reach the sink once, at start: logged, and the first word on its health."""
        try:
            detail = await self._sink.check()
        except DeliveryError as exc:
            self._healthy = False
            log.warning("sink_unreachable", sink=self._sink.name, error=str(exc))
        else:
            self._healthy = True
            log.info("sink_reachable", sink=self._sink.name, detail=detail)

    def stop(self, deadline_seconds: float) -> None:
        """From now on, retry only until the deadline; an attempt in flight is cut there."""
        self._stop_at = min(self._stop_at, time.monotonic() + deadline_seconds)
        self.stopping.set()
        if self._in_flight is not None:
            self._schedule_cut(self._in_flight)

    async def send(self, batch: Sequence[Pending]) -> None:
        """Deliver the whole batch; raises `RejectedBatchError` (and its subclass
        `BatchTooLargeError`) as the sink does, and `DeadlinePassed`."""
        self._sending = batch
        try:
            async for attempt in self._retrying:
                with attempt:
                    await self._send_before_deadline([item.event for item in batch])
        except RetryableDeliveryError:
            raise DeadlinePassed from None
        finally:
            self._sending = ()
        self._healthy = True

    async def _send_before_deadline(self, events: list[Event]) -> None:
        """One attempt, cut short when the shutdown deadline passes while it is in flight."""
        send = asyncio.ensure_future(self._sink.send(events))
        self._in_flight = send
        cut = self._schedule_cut(send) if self.stopping.is_set() else None
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
        self._healthy = False
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
                await asyncio.wait_for(self.stopping.wait(), min(wake_at, self._stop_at) - now)
            except TimeoutError:
                break
            # Asked to stop while sleeping: the deadline now bounds the sleep.
            if self._stop_at <= time.monotonic():
                break
            await asyncio.sleep(min(wake_at, self._stop_at) - time.monotonic())
        if time.monotonic() >= self._stop_at:
            raise RetryableDeliveryError("shutdown deadline passed before delivery")
