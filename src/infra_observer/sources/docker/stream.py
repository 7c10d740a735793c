"""The Docker loop: open the events stream, list and reconcile, then follow the stream.

On every (re)connection the events streams are opened first, then the daemon's clock is read
(`/info` SystemTime), the matching containers are listed and reconciled with what was known
of them, and the clock is read again. Streamed events older than the first reading are
already reflected in the listing and are skipped; events from the listing's own window may
be older or newer than the inspection that listed their container, so they reconcile the
container with its present state rather than apply their action; later events are
translated. So nothing falls between listing and streaming, nothing is reported twice and
nothing out of order. The daemon replays no history after its own restart, which is why the
listing, not `since`, bridges every gap.

Selection happens on the daemon: Docker ANDs label filters and cannot OR two keys, so there
is one listing and one events stream per flow-run label form (`io.prefect.flow-run-id`,
written by Prefect's Docker worker, and `prefect.io/flow-run-id`), each also carrying the
configured extra filters. A container with both forms arrives on both streams; the second
copy of an event is recognised by (container, action, time) and dropped. Both streams are
read concurrently and handled one event at a time under a lock, each in its stream's order.

When the daemon restarts or a stream ends, everything is reopened after a capped, jittered
backoff; a periodic ping notices a connection that died silently (TCP).
"""

from __future__ import annotations

import asyncio
import os
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import AsyncExitStack
from typing import Any, NamedTuple

import httpx
import structlog

from infra_observer.config import DockerSettings
from infra_observer.errors import InputError
from infra_observer.events.handoff import EventHandoff, Outcome
from infra_observer.metrics import Metrics
from infra_observer.observations import FlowRunHandoff
from infra_observer.retry import Backoff
from infra_observer.sources.base import Translation, report_input_error
from infra_observer.sources.docker.client import DockerClient
from infra_observer.sources.docker.crashes import CrashReports
from infra_observer.sources.docker.endings import StreamEndedError, ending
from infra_observer.sources.docker.endpoint import resolve_endpoint
from infra_observer.sources.docker.selection import FLOW_RUN_LABELS, is_selected
from infra_observer.sources.docker.translate import (
    ContainerState,
    ListedContainer,
    MissingContainer,
    Observation,
    StreamedEvent,
    needs_inspect,
    translate,
)
from infra_observer.sources.docker.wire import (
    DockerEvent,
    Inspected,
    daemon_name,
    parse_event_line,
    parse_inspect,
    parse_timestamp,
)
from infra_observer.sources.skips import SkipLog

log = structlog.get_logger(__name__)

SOURCE = "docker"
KEEPALIVE_SECONDS = 30.0
SEEN_EVENTS_MAX = 4096
"""Recent event keys remembered to drop the copy a second stream delivers; a copy comes
within moments of the first, so a few thousand is ample."""
FALLBACK_WORKER_NAME = "docker"


class _Window(NamedTuple):
    """The daemon's clock (ns) when a listing began and when it was done."""

    start: int
    end: int


class DockerSource:
    """Watches containers of Prefect flow runs and hands their status changes to the emitter."""

    name = SOURCE

    def __init__(
        self,
        *,
        settings: DockerSettings,
        handoff: EventHandoff,
        metrics: Metrics,
        flow_runs: FlowRunHandoff | None = None,
        environ: Mapping[str, str] | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        """`flow_runs`: told of crashed containers when `settings.mark_crashed` is on.
        `environ` stands in for the process environment (`DOCKER_*`); `transport` for
        the connection to the daemon (tests script a daemon with httpx's MockTransport)."""
        self._settings = settings
        self._transport = transport
        self._handoff = handoff
        self._metrics = metrics
        self._environ = environ
        self._containers: dict[str, ContainerState] = {}
        self._seen: OrderedDict[tuple[str, str, int, str | None], None] = OrderedDict()
        self._lock = asyncio.Lock()
        self._synced = False
        self._ready = False
        self._skips = SkipLog(source=SOURCE, metrics=metrics)
        self._worker_name = settings.worker_name or FALLBACK_WORKER_NAME
        self._client: DockerClient | None = None
        self._crashes: CrashReports | None = None
        if settings.mark_crashed and flow_runs is not None:
            self._crashes = CrashReports(
                flow_runs=flow_runs, metrics=metrics, client=lambda: self._client, source=SOURCE
            )

    @property
    def ready(self) -> bool:
        """Listed and following the daemon now; False while it cannot be reached."""
        return self._ready

    def _set_ready(self, ready: bool) -> None:
        self._ready = ready
        self._metrics.source_ready.labels(source=SOURCE).set(1 if ready else 0)

    def _filters(self, key: str) -> list[str]:
        return [key, *self._settings.label_filters]

    # --- the loop -------------------------------------------------------------------------

    async def run(self) -> None:
        endpoint = resolve_endpoint(self._settings, self._env())
        backoff = Backoff(maximum=self._settings.backoff_max_seconds)
        # Exported from the start: an alert on 0 must fire for a daemon never reached.
        self._set_ready(False)
        log.info(
            "docker_watch_starting",
            host=endpoint.host,
            labels=list(FLOW_RUN_LABELS),
            label_filters=list(self._settings.label_filters),
        )
        async with DockerClient(endpoint=endpoint, transport=self._transport) as client:
            self._client = client
            try:
                await self._reconnecting(client, backoff)
            finally:
                self._client = None

    async def _reconnecting(self, client: DockerClient, backoff: Backoff) -> None:
        while True:
            reason = await self._session(client, on_synced=backoff.reset)
            self._set_ready(False)
            self._metrics.source_reconnects.labels(source=SOURCE, reason=reason).inc()
            delay = backoff.next_delay()
            log.warning(
                "docker_reconnecting",
                reason=reason,
                attempt=backoff.attempt,
                delay_seconds=round(delay, 2),
            )
            await asyncio.sleep(delay)

    def _env(self) -> Mapping[str, str]:
        return os.environ if self._environ is None else self._environ

    async def _session(self, client: DockerClient, *, on_synced: Callable[[], None]) -> str:
        """One connection: open, list, follow; returns why it ended."""
        try:
            version = await client.version()
            async with AsyncExitStack() as stack:
                streams = [
                    await stack.enter_async_context(client.events(labels=self._filters(key)))
                    for key in FLOW_RUN_LABELS
                ]
                info = await client.info()
                self._worker_name = (
                    self._settings.worker_name or daemon_name(info) or FALLBACK_WORKER_NAME
                )
                listed_at = self._daemon_time(info)
                log.info(
                    "docker_connected",
                    host=client.endpoint.host,
                    docker_version=version.get("Version"),
                    api_version=client.api_version,
                    worker_name=self._worker_name,
                )
                await self._resync(client, observed=listed_at)
                window = _Window(listed_at, self._daemon_time(await client.info()))
                on_synced()
                await self._follow(client, streams, window=window)
        except ExceptionGroup as group:
            return ending(group.exceptions[0])
        except Exception as exc:  # anything else is logged, counted and reconnected after
            return ending(exc)
        return "stream_ended"  # pragma: no cover - _follow only ends by raising

    def _daemon_time(self, info: Mapping[str, Any]) -> int:
        # The daemon's clock, not ours: event times come from it (a remote daemon may drift).
        try:
            parsed = parse_timestamp(info.get("SystemTime"))
        except InputError as exc:
            report_input_error(self._metrics, source=SOURCE, kind="info", detail=str(exc))
            parsed = None
        return parsed if parsed is not None else time.time_ns()

    # --- listing --------------------------------------------------------------------------

    async def _resync(self, client: DockerClient, *, observed: int) -> None:
        listed: dict[str, None] = {}
        for key in FLOW_RUN_LABELS:
            for item in await client.list_containers(labels=self._filters(key)):
                container_id = item.get("Id")
                if isinstance(container_id, str) and container_id:
                    listed[container_id] = None
                else:
                    report_input_error(
                        self._metrics,
                        source=SOURCE,
                        kind="container",
                        detail="listed container has no Id",
                    )
        emitted = 0
        async with self._lock:
            for container_id in listed:
                emitted += await self._reconcile_one(client, container_id, observed=observed)
            for container_id in set(self._containers) - set(listed):
                result = translate(
                    MissingContainer(container_id, observed),
                    self._containers[container_id],
                    worker_name=self._worker_name,
                )
                emitted += await self._apply(result)
        first = not self._synced
        self._synced = True
        self._set_ready(True)
        log.info("docker_synced", containers=len(self._containers), events=emitted, first=first)

    async def _reconcile_one(
        self, client: DockerClient, container_id: str, *, observed: int
    ) -> int:
        raw = await client.inspect(container_id)
        if raw is None:
            # Removed since the listing: its `destroy` is on the stream.
            return 0
        inspected = self._parse_inspect(raw)
        if inspected is None or not self._selected(inspected.labels):
            return 0
        result = translate(
            ListedContainer(inspected, observed),
            self._containers.get(container_id),
            worker_name=self._worker_name,
        )
        return await self._apply(result, inspected=inspected)

    # --- following ------------------------------------------------------------------------

    async def _follow(
        self, client: DockerClient, streams: list[AsyncIterator[str]], *, window: _Window
    ) -> None:
        async with asyncio.TaskGroup() as group:
            for key, lines in zip(FLOW_RUN_LABELS, streams, strict=True):
                group.create_task(
                    self._read(client, lines, window=window), name=f"docker-events:{key}"
                )
            group.create_task(self._keepalive(client), name="docker-keepalive")

    async def _read(
        self, client: DockerClient, lines: AsyncIterator[str], *, window: _Window
    ) -> None:
        async for line in lines:
            async with self._lock:
                await self._handle_line(client, line, window=window)
        raise StreamEndedError

    async def _keepalive(self, client: DockerClient) -> None:
        while True:
            await asyncio.sleep(KEEPALIVE_SECONDS)
            await client.ping()

    async def _handle_line(self, client: DockerClient, line: str, *, window: _Window) -> None:
        try:
            event = parse_event_line(line)
        except InputError as exc:
            report_input_error(
                self._metrics, source=SOURCE, kind="event", detail=str(exc), line=line[:300]
            )
            return
        if event is None or not self._selected(event.attributes):
            return
        if event.time_nano < window.start:
            # Before the listing began: the listing already reflects it.
            log.debug("docker_event_before_listing", container_id=event.container_id[:12])
            return
        if event.key in self._seen:
            return
        self._remember(event)
        inspected = await self._inspect_for(client, event)
        previous = self._containers.get(event.container_id)
        if event.time_nano <= window.end and needs_inspect(event):
            # During the listing: the container may have been inspected before or after
            # this event, so its action could be older than the state already reported.
            # Reconcile with its present state instead (nothing, if the listing saw it);
            # one already gone has its `destroy` still to come on the stream.
            if inspected is None:
                return
            observation: Observation = ListedContainer(inspected, window.start)
        else:
            observation = StreamedEvent(event, inspected)
        result = translate(observation, previous, worker_name=self._worker_name)
        await self._apply(result, inspected=inspected, event=event)
        if event.action == "destroy":
            self._skips.forget(event.container_id)

    def _remember(self, event: DockerEvent) -> None:
        self._seen[event.key] = None
        if len(self._seen) > SEEN_EVENTS_MAX:
            self._seen.popitem(last=False)

    async def _inspect_for(self, client: DockerClient, event: DockerEvent) -> Inspected | None:
        if not needs_inspect(event):
            return None
        raw = await client.inspect(event.container_id)
        return None if raw is None else self._parse_inspect(raw)

    # --- shared ---------------------------------------------------------------------------

    def _selected(self, labels: Mapping[str, str]) -> bool:
        return is_selected(labels, label_filters=self._settings.label_filters)

    def _parse_inspect(self, raw: Mapping[str, Any]) -> Inspected | None:
        inspected: Inspected | None = None
        try:
            inspected = parse_inspect(raw)
            problems = inspected.problems
        except InputError as exc:
            problems = (str(exc),)
        for problem in problems:
            report_input_error(
                self._metrics,
                source=SOURCE,
                kind="container",
                detail=problem,
                container_id=str(raw.get("Id", ""))[:12],
            )
        return inspected

    async def _apply(
        self,
        result: Translation[ContainerState],
        *,
        inspected: Inspected | None = None,
        event: DockerEvent | None = None,
    ) -> int:
        """Report the result; `inspected` and `event`: what it was translated from."""
        stored: asyncio.Future[Outcome] | None = None
        if result.skipped is not None:
            self._skips.report(result.key, result.skipped)
        for problem in result.problems:
            report_input_error(
                self._metrics,
                source=SOURCE,
                kind=problem.kind,
                detail=problem.detail,
                container_id=result.key[:12],
            )
        for built in result.events:
            log.info(
                "docker_container_status",
                container_id=result.key[:12],
                container_name=built.resource.get("prefect.resource.name"),
                event_name=built.event,
                event_id=str(built.id),
            )
            # Waits while the emitter's queue is full; delivery itself is not awaited.
            stored = await self._handoff.submit(built, source=SOURCE)
        # Only once handed over: a failure before this leaves the change to be found again.
        if result.state is None:
            self._containers.pop(result.key, None)
        else:
            self._containers[result.key] = result.state
        if self._crashes is not None:
            self._crashes.changed(result, inspected=inspected, event=event, stored=stored)
        return len(result.events)

    # --- check ----------------------------------------------------------------------------

    async def check(self) -> str:
        """Ping the daemon and read its version and name."""
        endpoint = resolve_endpoint(self._settings, self._env())
        async with DockerClient(endpoint=endpoint, transport=self._transport) as client:
            return await client.describe()
