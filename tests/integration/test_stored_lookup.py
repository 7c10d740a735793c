"""After a start, the lookup of ids an earlier process may have delivered: when it fails,
the events are sent (a duplicate is better than a loss). A real HTTP server on loopback
stores what is posted and answers every `/events/filter` read badly. The lookup against a
real Prefect server, in a restart of the daemon: test_restart.py."""

from __future__ import annotations

import asyncio
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest
from aiohttp import web
from prometheus_client import CollectorRegistry
from structlog.testing import capture_logs

from infra_observer.config import EmitterSettings, PrefectSettings
from infra_observer.emitter import Emitter, EventsApiSink, events_api_sink
from infra_observer.emitter.stored import StoredEvents
from infra_observer.events.handoff import Outcome
from infra_observer.events.model import Event
from infra_observer.events.related import FlowRunRefs
from infra_observer.metrics import Metrics
from infra_observer.sources.kubernetes.catalog import kubernetes_pod_event
from tests.peers._util import free_port


class BadLookups:
    """A real events API on loopback that stores what is posted and answers every
    `/events/filter` read with `status` and `body`, or (`hang`) not until it stops."""

    def __init__(self, *, status: int = 200, body: bytes = b"", hang: bool = False) -> None:
        self.port = free_port()
        self.status = status
        self.body = body
        self.hang = hang
        self.posted: list[dict[str, Any]] = []
        self.reads = 0
        self._released = asyncio.Event()
        self._runner: web.AppRunner | None = None

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/api"

    async def _events(self, request: web.Request) -> web.Response:
        self.posted.extend(orjson.loads(await request.read()))
        return web.Response(status=204)

    async def _filter(self, request: web.Request) -> web.Response:
        self.reads += 1
        if self.hang:
            await self._released.wait()
        return web.Response(status=self.status, body=self.body)

    async def __aenter__(self) -> BadLookups:
        app = web.Application()
        app.router.add_post("/api/events", self._events)
        app.router.add_post("/api/events/filter", self._filter)
        self._runner = web.AppRunner(app, shutdown_timeout=1)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._released.set()
        assert self._runner is not None
        await self._runner.cleanup()


@dataclass
class Running:
    emitter: Emitter
    sink: EventsApiSink
    metrics: Metrics
    task: asyncio.Task[None]

    async def stop(self, deadline: float) -> None:
        self.emitter.stop(deadline)
        await asyncio.wait_for(self.task, deadline + 10)
        await self.sink.aclose()


def start_emitter(server: BadLookups, settings: EmitterSettings) -> Running:
    """An emitter to the server, looking up ids as it does after a start."""
    metrics = Metrics(CollectorRegistry())
    sink = events_api_sink(PrefectSettings(api_url=server.api_url), settings)
    stored = StoredEvents(api=sink.api, metrics=metrics)
    emitter = Emitter(sink=sink, settings=settings, metrics=metrics, stored=stored)
    task = asyncio.create_task(emitter.run())
    return Running(emitter=emitter, sink=sink, metrics=metrics, task=task)


def listed_event(index: int) -> Event:
    """An event as a listing after a start reports it: no `follows`, occurred before."""
    return kubernetes_pod_event(
        phase="running",
        pod_uid=f"pod-{index}",
        pod_name=f"pod-{index}",
        namespace="default",
        refs=FlowRunRefs(flow_run_id=str(uuid.uuid4())),
        occurred=datetime.now(UTC) - timedelta(hours=1),
        event_id=uuid.uuid4(),
    )


@pytest.mark.parametrize(
    ("status", "body", "log_event", "reads"),
    [
        (500, b"injected failure", "stored_lookup_failed", 3),
        (200, b"<html>a portal page</html>", "stored_lookup_failed", 3),
        (403, b'{"detail": "read access denied"}', "stored_lookup_disabled", 1),
    ],
)
async def test_a_failed_lookup_sends_the_events(
    status: int, body: bytes, log_event: str, reads: int
) -> None:
    settings = EmitterSettings(flush_interval_seconds=0.05, retry_max_seconds=0.5)
    async with BadLookups(status=status, body=body) as server:
        running = start_emitter(server, settings)
        events = [listed_event(i) for i in range(3)]
        with capture_logs() as logs:
            outcomes = []
            for event in events:  # one batch each: one read each, unless disabled
                outcomes.append(await (await running.emitter.submit(event, source="test")))
        await running.stop(5)
    assert outcomes == [Outcome.DELIVERED] * 3
    assert sorted(event["id"] for event in server.posted) == sorted(str(e.id) for e in events)
    assert server.reads == reads
    problems = [entry for entry in logs if entry["log_level"] == "warning"]
    assert [entry["event"] for entry in problems] == [log_event] * reads
    assert str(status) in problems[0]["error"] or "no page of events" in problems[0]["error"]
    counted = "disabled" if status == 403 else "failed"
    sample = running.metrics.registry.get_sample_value(
        "infra_observer_stored_lookups_total", {"result": counted}
    )
    assert sample == (1 if status == 403 else reads)


async def test_a_hanging_lookup_is_given_up_on_shutdown_and_the_events_sent() -> None:
    settings = EmitterSettings(flush_interval_seconds=0.05, request_timeout_seconds=60)
    async with BadLookups(hang=True) as server:
        running = start_emitter(server, settings)
        event = listed_event(0)
        outcome = await running.emitter.submit(event, source="test")
        deadline = time.monotonic() + 10
        while not server.reads:
            assert time.monotonic() < deadline, "no lookup reached the server"
            await asyncio.sleep(0.02)
        stopped_at = time.monotonic()
        with capture_logs() as logs:
            await running.stop(5)
        stopped_in = time.monotonic() - stopped_at
    assert await outcome == Outcome.DELIVERED
    assert [posted["id"] for posted in server.posted] == [str(event.id)]
    assert stopped_in < 2, stopped_in
    assert "stored_lookup_given_up" in [entry["event"] for entry in logs]
