"""After a start, the lookup of ids an earlier process may have delivered: when it fails,
the events are sent (a duplicate is better than a loss). A real HTTP server on loopback
stores what is posted and answers every `/events/filter` read badly. The lookup against a
real Prefect server, in a restart of the daemon: test_restart.py."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest
from aiohttp import web
from prometheus_client import CollectorRegistry
from structlog.testing import capture_logs

from infra_observer.config import EmitterSettings, PrefectSettings
from infra_observer.emitter import Emitter, events_api_sink
from infra_observer.emitter.stored import StoredEvents
from infra_observer.events import catalog
from infra_observer.events.handoff import Outcome
from infra_observer.events.model import Event
from infra_observer.metrics import Metrics
from tests.peers._util import free_port


class BadLookups:
    """A real events API on loopback that stores what is posted and answers every
    `/events/filter` read with `status` and `body`."""

    def __init__(self, *, status: int, body: bytes) -> None:
        self.port = free_port()
        self.status = status
        self.body = body
        self.posted: list[dict[str, Any]] = []
        self.reads = 0
        self._runner: web.AppRunner | None = None

    async def _events(self, request: web.Request) -> web.Response:
        self.posted.extend(orjson.loads(await request.read()))
        return web.Response(status=204)

    async def _filter(self, request: web.Request) -> web.Response:
        self.reads += 1
        return web.Response(status=self.status, body=self.body)

    async def __aenter__(self) -> BadLookups:
        app = web.Application()
        app.router.add_post("/api/events", self._events)
        app.router.add_post("/api/events/filter", self._filter)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._runner is not None
        await self._runner.cleanup()


def listed_event(index: int) -> Event:
    """An event as a listing after a start reports it: no `follows`, occurred before."""
    return catalog.kubernetes_pod_event(
        phase="running",
        pod_uid=f"pod-{index}",
        pod_name=f"pod-{index}",
        namespace="default",
        refs=catalog.FlowRunRefs(flow_run_id=str(uuid.uuid4())),
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
    metrics = Metrics(CollectorRegistry())
    async with BadLookups(status=status, body=body) as server:
        api_url = f"http://127.0.0.1:{server.port}/api"
        sink = events_api_sink(PrefectSettings(api_url=api_url), settings)
        stored = StoredEvents(client=sink.client, api_url=api_url, metrics=metrics)
        emitter = Emitter(sink=sink, settings=settings, metrics=metrics, stored=stored)
        task = asyncio.create_task(emitter.run())
        events = [listed_event(i) for i in range(3)]
        with capture_logs() as logs:
            outcomes = []
            for event in events:  # one batch each: one read each, unless disabled
                outcomes.append(await (await emitter.submit(event, source="test")))
        emitter.stop(5)
        await task
        await sink.aclose()
    assert outcomes == [Outcome.DELIVERED] * 3
    assert sorted(event["id"] for event in server.posted) == sorted(str(e.id) for e in events)
    assert server.reads == reads
    problems = [entry for entry in logs if entry["log_level"] == "warning"]
    assert [entry["event"] for entry in problems] == [log_event] * reads
    assert str(status) in problems[0]["error"] or "no page of events" in problems[0]["error"]
    counted = "disabled" if status == 403 else "failed"
    sample = metrics.registry.get_sample_value(
        "infra_observer_stored_lookups_total", {"result": counted}
    )
    assert sample == (1 if status == 403 else reads)
