"""Delivery against real HTTP servers: one that fails on purpose, and a real Prefect server."""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiohttp import web
from prometheus_client import CollectorRegistry
from pydantic import SecretStr
from structlog.testing import capture_logs

from infra_observer.config import EmitterSettings, PrefectSettings
from infra_observer.emitter import Emitter, EventsApiSink, events_api_sink
from infra_observer.emitter.spool import Checkpoint, Spool
from infra_observer.events.handoff import Outcome
from infra_observer.events.model import Event
from infra_observer.events.related import FlowRunRefs
from infra_observer.metrics import Metrics
from infra_observer.sources.docker.catalog import ContainerStatus, docker_container_event
from infra_observer.sources.kubernetes.catalog import PodPhase, kubernetes_pod_event
from tests.peers._util import free_port
from tests.peers.faulty_proxy import FaultyProxy, Scripted
from tests.peers.prefect import PrefectPeer

FAST = EmitterSettings(
    retry_initial_seconds=0.05,
    retry_max_seconds=0.5,
    flush_interval_seconds=0.05,
    request_timeout_seconds=1.0,
)

Behaviour = Callable[[web.Request, list[dict[str, Any]]], Awaitable[web.Response | None]]


@dataclass
class FlakyEventsApi:
    """A real HTTP server on loopback that answers POST /api/events as told."""

    port: int
    behaviour: Behaviour | None = None
    stored: list[dict[str, Any]] = field(default_factory=list)
    requests: list[tuple[float, dict[str, str], int]] = field(default_factory=list)
    runner: web.AppRunner | None = None

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/api"

    async def _events(self, request: web.Request) -> web.Response:
        batch = orjson.loads(await request.read())
        if not batch:  # the emitter's reachability check at start
            return web.Response(status=204)
        response = await self.behaviour(request, batch) if self.behaviour else None
        status = response.status if response is not None else 204
        self.requests.append((time.monotonic(), dict(request.headers), status))
        if response is not None:
            return response
        self.stored.extend(batch)
        return web.Response(status=204)

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/api/events", self._events)
        # A handler told to hang must not hold the test's teardown for a minute.
        self.runner = web.AppRunner(app, shutdown_timeout=1.0)
        await self.runner.setup()
        await web.TCPSite(self.runner, "127.0.0.1", self.port).start()

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()
            self.runner = None


@pytest.fixture
async def flaky() -> AsyncIterator[FlakyEventsApi]:
    server = FlakyEventsApi(port=free_port())
    await server.start()
    yield server
    await server.stop()


@pytest.fixture
async def proxy(prefect: PrefectPeer) -> AsyncIterator[FaultyProxy]:
    """The fault-injecting proxy in front of the shared Prefect server."""
    started = await FaultyProxy(prefect.api_url).start()
    yield started
    await started.stop()


def pod_event(index: int, *, phase: PodPhase = "running") -> Event:
    refs = FlowRunRefs(flow_run_id=str(uuid.uuid4()))
    return kubernetes_pod_event(
        phase=phase,
        pod_uid=f"pod-{index}",
        pod_name=f"pod-{index}",
        namespace="default",
        refs=refs,
        occurred=datetime.now(UTC),
        event_id=uuid.uuid4(),
    )


@dataclass
class Running:
    emitter: Emitter
    sink: EventsApiSink
    metrics: Metrics
    task: asyncio.Task[None]

    async def submit_all(self, events: list[Event]) -> list[asyncio.Future[Outcome]]:
        return [await self.emitter.submit(event, source="test") for event in events]

    async def finish(self, deadline: float = 10) -> None:
        self.emitter.stop(deadline)
        await asyncio.wait_for(self.task, deadline + 10)
        await self.sink.aclose()


def start_emitter(
    api_url: str,
    *,
    settings: EmitterSettings = FAST,
    prefect: PrefectSettings | None = None,
) -> Running:
    prefect = prefect or PrefectSettings(api_url=api_url)
    metrics = Metrics(CollectorRegistry())
    sink = events_api_sink(prefect, settings)
    emitter = Emitter(sink=sink, settings=settings, metrics=metrics)
    task = asyncio.create_task(emitter.run())
    return Running(emitter=emitter, sink=sink, metrics=metrics, task=task)


async def start_spooled_emitter(api_url: str, spool_dir: Path) -> Running:
    metrics = Metrics(CollectorRegistry())
    prefect = PrefectSettings(api_url=api_url)
    sink = events_api_sink(prefect, FAST)
    emitter = Emitter(
        sink=sink,
        settings=FAST,
        metrics=metrics,
        spool=Spool(spool_dir),
        checkpoint=Checkpoint(spool_dir / "checkpoint.json"),
    )
    await emitter.open()
    task = asyncio.create_task(emitter.run())
    return Running(emitter=emitter, sink=sink, metrics=metrics, task=task)


def sample(metrics: Metrics, name: str, **labels: str) -> float:
    value = metrics.registry.get_sample_value(name, labels)
    return value or 0.0


async def test_events_wait_for_a_server_that_refuses_connections() -> None:
    server = FlakyEventsApi(port=free_port())
    running = start_emitter(server.api_url)
    futures = await running.submit_all([pod_event(i) for i in range(5)])
    await asyncio.sleep(1.0)
    assert not any(future.done() for future in futures)
    await server.start()
    try:
        outcomes = await asyncio.wait_for(asyncio.gather(*futures), 30)
        assert outcomes == [Outcome.DELIVERED] * 5
        assert len(server.stored) == 5
        assert (
            sample(
                running.metrics,
                "infra_observer_delivery_retries_total",
                reason="RetryableDeliveryError",
            )
            >= 1
        )
    finally:
        await running.finish()
        await server.stop()


async def test_server_errors_are_retried_until_accepted(flaky: FlakyEventsApi) -> None:
    failures = iter(range(3))

    async def fail_three_times(_: web.Request, __: list[dict[str, Any]]) -> web.Response | None:
        return web.Response(status=500) if next(failures, None) is not None else None

    flaky.behaviour = fail_three_times
    running = start_emitter(flaky.api_url)
    futures = await running.submit_all([pod_event(i) for i in range(3)])
    assert await asyncio.wait_for(asyncio.gather(*futures), 30) == [Outcome.DELIVERED] * 3
    await running.finish()
    assert [status for _, _, status in flaky.requests] == [500, 500, 500, 204]
    retried = sample(
        running.metrics,
        "infra_observer_events_retried_total",
        source="test",
        event="prefect.kubernetes.pod.running",
    )
    assert retried == 9  # three events, three failed attempts
    assert sorted(event["resource"]["prefect.resource.id"] for event in flaky.stored) == [
        f"prefect.kubernetes.pod.pod-{i}" for i in range(3)
    ]


async def test_429_retry_after_is_honoured(flaky: FlakyEventsApi) -> None:
    answered = False

    async def throttle_once(_: web.Request, __: list[dict[str, Any]]) -> web.Response | None:
        nonlocal answered
        if answered:
            return None
        answered = True
        return web.Response(status=429, headers={"Retry-After": "2"})

    flaky.behaviour = throttle_once
    running = start_emitter(flaky.api_url)  # its own backoff is at most 0.5 s
    futures = await running.submit_all([pod_event(0)])
    assert await asyncio.wait_for(futures[0], 30) == Outcome.DELIVERED
    await running.finish()
    (first, _, status_1), (second, _, status_2) = flaky.requests
    assert (status_1, status_2) == (429, 204)
    assert second - first >= 2.0


async def test_one_invalid_event_does_not_sink_its_batch(flaky: FlakyEventsApi) -> None:
    async def refuse_pending(_: web.Request, batch: list[dict[str, Any]]) -> web.Response | None:
        if any(event["event"].endswith(".pending") for event in batch):
            return web.json_response({"detail": "bad event"}, status=422)
        return None

    flaky.behaviour = refuse_pending
    events = [pod_event(i) for i in range(7)] + [pod_event(99, phase="pending")]
    events += [pod_event(i) for i in range(100, 108)]
    running = start_emitter(
        flaky.api_url, settings=FAST.model_copy(update={"flush_interval_seconds": 1.0})
    )
    with capture_logs() as logs:
        futures = await running.submit_all(events)
        outcomes = await asyncio.wait_for(asyncio.gather(*futures), 30)
        await running.finish()
    assert outcomes.count(Outcome.REJECTED) == 1
    assert outcomes[7] == Outcome.REJECTED
    assert len(flaky.stored) == 15
    assert (
        sample(
            running.metrics,
            "infra_observer_events_rejected_total",
            source="test",
            reason="server_rejected",
        )
        == 1
    )
    rejected = [entry for entry in logs if entry["event"] == "event_rejected"]
    assert rejected[0]["resource_id"] == "prefect.kubernetes.pod.pod-99"
    assert "bad event" in rejected[0]["detail"]


async def test_events_over_the_api_limits_are_refused_before_sending(
    flaky: FlakyEventsApi,
) -> None:
    # The server would drop the oversized one while answering 204; the other cannot be JSON.
    fine, too_big, unwritable = pod_event(1), pod_event(2), pod_event(3)
    too_big = dataclasses.replace(too_big, payload={"blob": "x" * 1_500_000})
    unwritable = dataclasses.replace(unwritable, payload={"ports": {80, 443}})
    running = start_emitter(flaky.api_url)
    with capture_logs() as logs:
        futures = await running.submit_all([too_big, fine, unwritable])
        outcomes = await asyncio.wait_for(asyncio.gather(*futures), 30)
        await running.finish()
    assert outcomes == [Outcome.REJECTED, Outcome.DELIVERED, Outcome.REJECTED]
    assert [event["id"] for event in flaky.stored] == [str(fine.id)]
    rejected = {entry["event_id"]: entry for entry in logs if entry["event"] == "event_rejected"}
    assert "must stay under 1500000" in rejected[str(too_big.id)]["detail"]
    assert "cannot be written as JSON" in rejected[str(unwritable.id)]["detail"]
    assert (
        sample(
            running.metrics, "infra_observer_events_rejected_total", source="test", reason="invalid"
        )
        == 2
    )


async def test_a_hanging_server_times_out_and_is_retried(flaky: FlakyEventsApi) -> None:
    hung = False

    async def hang_once(_: web.Request, __: list[dict[str, Any]]) -> web.Response | None:
        nonlocal hung
        if not hung:
            hung = True
            await asyncio.sleep(5)  # longer than the 1 s request timeout
        return None

    flaky.behaviour = hang_once
    running = start_emitter(flaky.api_url)
    futures = await running.submit_all([pod_event(0)])
    assert await asyncio.wait_for(futures[0], 30) == Outcome.DELIVERED
    await running.finish()
    assert len(flaky.stored) == 1


async def test_refused_credentials_are_logged_with_the_fix(flaky: FlakyEventsApi) -> None:
    async def unauthorized(_: web.Request, __: list[dict[str, Any]]) -> web.Response | None:
        return web.Response(status=401)

    flaky.behaviour = unauthorized
    running = start_emitter(
        flaky.api_url, settings=FAST.model_copy(update={"retry_max_seconds": 0.3})
    )
    with capture_logs() as logs:
        futures = await running.submit_all([pod_event(0)])
        await asyncio.sleep(1.0)
        await running.finish(deadline=0.5)
    assert await futures[0] == Outcome.UNDELIVERED
    failures = [entry for entry in logs if entry["event"] == "delivery_failed"]
    assert failures
    assert failures[0]["log_level"] == "error"
    assert "PREFECT_API_KEY" in failures[0]["error"]
    stopped = [
        entry for entry in logs if entry["event"] == "emitter_stopped_with_undelivered_events"
    ]
    assert stopped[0]["count"] == 1


async def test_auth_headers(flaky: FlakyEventsApi) -> None:
    cloud = PrefectSettings(api_url=flaky.api_url, api_key=SecretStr("pnu_key"))
    running = start_emitter(flaky.api_url, prefect=cloud)
    await asyncio.wait_for((await running.submit_all([pod_event(0)]))[0], 30)
    await running.finish()
    basic = PrefectSettings(api_url=flaky.api_url, api_auth_string=SecretStr("admin:pa:ss"))
    running = start_emitter(flaky.api_url, prefect=basic)
    await asyncio.wait_for((await running.submit_all([pod_event(1)]))[0], 30)
    await running.finish()
    headers = [request_headers for _, request_headers, status in flaky.requests if status == 204]
    assert headers[0]["Authorization"] == "Bearer pnu_key"
    assert headers[-1]["Authorization"] == "Basic " + base64.b64encode(b"admin:pa:ss").decode()
    assert (
        "Authorization" not in headers[1]
        or headers[1]["Authorization"] != headers[0]["Authorization"]
    )


async def test_follows_and_once_per_process_ids(flaky: FlakyEventsApi) -> None:
    running = start_emitter(flaky.api_url)
    first = pod_event(0, phase="pending")
    second = pod_event(0, phase="running")
    futures = await running.submit_all([first, second, first])
    # A resubmission while the first is queued shares its fate; after delivery, DUPLICATE.
    assert futures[2] is futures[0]
    assert await asyncio.gather(*futures) == [Outcome.DELIVERED] * 3
    again = await running.emitter.submit(first, source="test")
    assert await again == Outcome.DUPLICATE
    await running.finish()
    assert [event["follows"] for event in flaky.stored] == [None, str(first.id)]


async def test_delivery_to_a_real_prefect_server(prefect: PrefectPeer) -> None:
    events = [pod_event(i) for i in range(3)]
    running = start_emitter(prefect.api_url)
    outcomes = await asyncio.gather(*await running.submit_all(events))
    await running.finish()
    assert outcomes == [Outcome.DELIVERED] * 3
    ids = [str(event.id) for event in events]
    stored = await prefect.wait_for_events(expected_count=3, ids=ids)
    assert sorted(event["id"] for event in stored) == sorted(ids)
    by_id = {event["id"]: event for event in stored}
    assert by_id[ids[0]]["resource"] == dict(events[0].resource)
    assert by_id[ids[0]]["related"][0]["prefect.resource.role"] == "flow-run"


async def test_the_same_id_from_two_processes_is_stored_once(
    prefect_isolated: PrefectPeer,
) -> None:
    prefect = prefect_isolated  # an id posted twice: kept off the shared server
    event = pod_event(0)
    for _ in range(2):  # two emitters stand for a restart, or a second replica
        running = start_emitter(prefect.api_url)
        assert await (await running.submit_all([event]))[0] == Outcome.DELIVERED
        await running.finish()
    stored = await prefect.wait_for_events(expected_count=1, ids=[str(event.id)], settle=3)
    assert len(stored) == 1


async def test_basic_auth_against_a_real_prefect_server() -> None:
    peer = PrefectPeer(auth_string="observer:s3cret")
    await asyncio.to_thread(peer.start)
    try:
        wrong = PrefectSettings(api_url=peer.api_url, api_auth_string=SecretStr("observer:nope"))
        sink = events_api_sink(wrong, FAST)
        with pytest.raises(Exception, match="credentials were refused"):
            await sink.check()
        await sink.aclose()
        right = PrefectSettings(api_url=peer.api_url, api_auth_string=SecretStr("observer:s3cret"))
        event = pod_event(0)
        running = start_emitter(peer.api_url, prefect=right)
        assert await (await running.submit_all([event]))[0] == Outcome.DELIVERED
        await running.finish()
        stored = await peer.wait_for_events(expected_count=1, ids=[str(event.id)])
        assert stored[0]["id"] == str(event.id)
    finally:
        await asyncio.to_thread(peer.stop)


async def test_check_reaches_the_events_api(prefect: PrefectPeer) -> None:
    sink = events_api_sink(PrefectSettings(api_url=prefect.api_url), EmitterSettings())
    assert "accepted" in await sink.check()
    await sink.aclose()


def container_event(index: int, *, status: ContainerStatus) -> Event:
    return docker_container_event(
        status=status,
        container_id="c1",
        container_name="flow-run-container",
        refs=FlowRunRefs(),
        worker_name="host",
        occurred=datetime.now(UTC),
        event_id=uuid.UUID(int=index + 1),
    )


async def test_spooled_events_survive_a_stop_and_keep_their_chain(tmp_path: Path) -> None:
    server = FlakyEventsApi(port=free_port())
    running = await start_spooled_emitter(server.api_url, tmp_path)
    statuses: list[ContainerStatus] = ["created", "running", "exited"]
    events = [container_event(i, status=status) for i, status in enumerate(statuses)]
    futures = await running.submit_all(events)
    await running.finish(deadline=0.5)
    assert [await future for future in futures] == [Outcome.UNDELIVERED] * 3

    await server.start()
    try:
        running = await start_spooled_emitter(server.api_url, tmp_path)
        replayed = await running.emitter.submit(events[0], source="test")
        assert await replayed == Outcome.DELIVERED  # the spooled copy's fate
        later = container_event(3, status="removing")
        assert await (await running.emitter.submit(later, source="test")) == Outcome.DELIVERED
        await running.finish()
        stored_ids = [event["id"] for event in server.stored]
        assert stored_ids == [str(event.id) for event in [*events, later]]
        assert [event["follows"] for event in server.stored] == [
            None,
            str(events[0].id),
            str(events[1].id),
            str(events[2].id),
        ]

        # The checkpoint carries the chain and the delivered ids across a restart.
        running = await start_spooled_emitter(server.api_url, tmp_path)
        assert await (await running.emitter.submit(later, source="test")) == Outcome.DUPLICATE
        last = container_event(4, status="dead")
        assert await (await running.emitter.submit(last, source="test")) == Outcome.DELIVERED
        await running.finish()
        assert server.stored[-1]["id"] == str(last.id)
        assert server.stored[-1]["follows"] == str(later.id)
        assert len(server.stored) == 5
    finally:
        await server.stop()


async def test_the_drain_deadline_cuts_a_delivery_in_flight(flaky: FlakyEventsApi) -> None:
    arrived = asyncio.Event()

    async def hang(_: web.Request, __: list[dict[str, Any]]) -> web.Response | None:
        arrived.set()
        await asyncio.sleep(60)
        return None

    flaky.behaviour = hang
    slow = FAST.model_copy(update={"request_timeout_seconds": 30.0})
    running = start_emitter(flaky.api_url, settings=slow)
    futures = await running.submit_all([pod_event(0)])
    await asyncio.wait_for(arrived.wait(), 30)
    running.emitter.stop(0.5)
    # Without the cut, the run would last the 30 s request timeout.
    await asyncio.wait_for(running.task, 10)
    await running.sink.aclose()
    assert await futures[0] == Outcome.UNDELIVERED


def spooled_segments(directory: Path) -> list[Path]:
    return sorted(directory.glob("segment-*.jsonl"))


async def test_a_full_spool_makes_sources_wait_and_loses_nothing(tmp_path: Path) -> None:
    server = FlakyEventsApi(port=free_port())
    settings = FAST.model_copy(update={"spool_max_bytes": 1024 * 1024})
    metrics = Metrics(CollectorRegistry())
    prefect = PrefectSettings(api_url=server.api_url)
    sink = events_api_sink(prefect, settings)
    emitter = Emitter(
        sink=sink,
        settings=settings,
        metrics=metrics,
        spool=Spool(tmp_path, segment_bytes=128 * 1024),
        checkpoint=Checkpoint(tmp_path / "checkpoint.json"),
    )
    await emitter.open()
    running = Running(emitter, sink, metrics, asyncio.create_task(emitter.run()))
    events = [pod_event(index) for index in range(3000)]  # about 1.5 MiB spooled

    async def source() -> list[asyncio.Future[Outcome]]:
        return await running.submit_all(events)

    submitting = asyncio.create_task(source())
    while not sample(metrics, "infra_observer_bound_hits_total", bound="spool"):
        assert not submitting.done(), "the spool bound was never reached"
        await asyncio.sleep(0.05)
    assert not submitting.done()  # the source waits: nothing is dropped
    await server.start()
    try:
        futures = await asyncio.wait_for(submitting, 60)
        assert await asyncio.wait_for(asyncio.gather(*futures), 60) == [Outcome.DELIVERED] * 3000
        await running.finish()
        assert sorted(event["id"] for event in server.stored) == sorted(
            str(event.id) for event in events
        )
        assert not spooled_segments(tmp_path)  # all settled, all space freed
    finally:
        await server.stop()


async def test_statuses_the_events_api_does_not_give_hold_and_retry_the_batch(
    proxy: FaultyProxy, prefect: PrefectPeer
) -> None:
    """405 (a WAF's page), then 407 (a proxy asking for credentials), then the real server:
    the batch is neither split nor rejected, it waits and is stored, each event once."""
    proxy.answer_next(
        Scripted(405, b"<html><body><h1>405 Not Allowed</h1></body></html>", "text/html"),
        Scripted(407, b"Proxy Authentication Required"),
    )
    events = [pod_event(i) for i in range(5)]
    running = start_emitter(proxy.api_url)
    with capture_logs() as logs:
        futures = await running.submit_all(events)
        outcomes = await asyncio.wait_for(asyncio.gather(*futures), 30)
        await running.finish()
    assert outcomes == [Outcome.DELIVERED] * 5
    assert [seen.events for seen in proxy.posts() if seen.events] == [5, 5, 5]
    ids = [str(event.id) for event in events]
    stored = await prefect.wait_for_events(expected_count=5, ids=ids, settle=3)
    assert sorted(event["id"] for event in stored) == sorted(ids)
    failures = [entry for entry in logs if entry["event"] == "delivery_failed"]
    assert [entry["attempt"] for entry in failures] == [1, 2]
    for entry, status in zip(failures, (405, 407), strict=True):
        assert f"POST {proxy.api_url}/events answered {status}," in entry["error"]
    assert "405 Not Allowed" in failures[0]["error"]
    retries = sample(
        running.metrics, "infra_observer_delivery_retries_total", reason="UnexpectedStatusError"
    )
    assert retries == 2
    assert not [entry for entry in logs if entry["event"] == "event_rejected"]


async def test_a_413_halves_the_batch_and_rejects_only_an_event_refused_alone(
    proxy: FaultyProxy, prefect: PrefectPeer
) -> None:
    """A proxy's body size limit: smaller batches get through, and the one event too large
    on its own is the only one rejected."""
    small = [pod_event(i) for i in range(8)]
    size = len(small[0].to_json())
    big = dataclasses.replace(pod_event(8), payload={"blob": "x" * (10 * size)})
    proxy.refuse_bodies_over(4 * size + 10)  # four events and the list's brackets and commas
    running = start_emitter(
        proxy.api_url, settings=FAST.model_copy(update={"flush_interval_seconds": 1.0})
    )
    with capture_logs() as logs:
        futures = await running.submit_all([*small[:4], big, *small[4:]])
        outcomes = await asyncio.wait_for(asyncio.gather(*futures), 30)
        await running.finish()
    assert outcomes == [Outcome.DELIVERED] * 4 + [Outcome.REJECTED] + [Outcome.DELIVERED] * 4
    assert proxy.posts()[1].events == 9  # the first POST with events: the whole batch
    ids = [str(event.id) for event in small]
    stored = await prefect.wait_for_events(expected_count=8, ids=[*ids, str(big.id)], settle=3)
    assert sorted(event["id"] for event in stored) == sorted(ids)
    (rejected,) = [entry for entry in logs if entry["event"] == "event_rejected"]
    assert rejected["event_id"] == str(big.id)
    assert rejected["reason"] == "too_large"
    assert "413" in rejected["detail"]
    too_large = sample(
        running.metrics, "infra_observer_events_rejected_total", source="test", reason="too_large"
    )
    assert too_large == 1


def refused_by_the_server(event: Event) -> Event:
    """The event with a label value the server refuses (422) and the emitter lets through:
    label values are typed by the catalog, not checked per event."""
    labels: dict[str, Any] = {**event.resource, "kubernetes.restarts": 3}
    return dataclasses.replace(event, resource=labels)


async def test_no_event_follows_one_the_server_rejected(prefect: PrefectPeer) -> None:
    """Against the real server: a, b (refused), c queued together, then d: c follows a and
    d follows c. x (refused) first, then y: y starts a chain. p, then q (refused) alone,
    then r: r follows p. Nothing stored names a rejected id."""
    # Made in this order: each resource's events occur in the order they are submitted.
    a, b = pod_event(1, phase="pending"), refused_by_the_server(pod_event(1))
    c, d = pod_event(1, phase="succeeded"), pod_event(1, phase="failed")
    x, y = refused_by_the_server(pod_event(2, phase="pending")), pod_event(2)
    p, q = pod_event(3, phase="pending"), refused_by_the_server(pod_event(3))
    r = pod_event(3, phase="succeeded")
    running = start_emitter(prefect.api_url)
    outcomes = await asyncio.gather(*await running.submit_all([a, b, c, x, p]))
    delivered, rejected = Outcome.DELIVERED, Outcome.REJECTED
    assert outcomes == [delivered, rejected, delivered, rejected, delivered]
    assert await (await running.emitter.submit(q, source="test")) == Outcome.REJECTED
    later = await asyncio.gather(*await running.submit_all([d, y, r]))
    await running.finish()
    assert later == [Outcome.DELIVERED] * 3
    stored_ids = [str(event.id) for event in (a, c, d, y, p, r)]
    stored = await prefect.wait_for_events(
        expected_count=6, ids=[*stored_ids, str(b.id), str(x.id), str(q.id)], settle=3
    )
    follows = {event["id"]: event["follows"] for event in stored}
    assert sorted(follows) == sorted(stored_ids)
    assert follows == {
        str(a.id): None,
        str(c.id): str(a.id),
        str(d.id): str(c.id),
        str(y.id): None,
        str(p.id): None,
        str(r.id): str(p.id),
    }


async def test_no_event_follows_one_refused_before_sending(prefect: PrefectPeer) -> None:
    """An event refused by the emitter's own checks is never sent: the next event of its
    resource follows the one before it."""
    first = pod_event(4, phase="pending")
    unwritable = dataclasses.replace(pod_event(4), payload={"ports": {80, 443}})
    last = pod_event(4, phase="succeeded")
    running = start_emitter(prefect.api_url)
    outcomes = await asyncio.gather(*await running.submit_all([first, unwritable, last]))
    await running.finish()
    assert outcomes == [Outcome.DELIVERED, Outcome.REJECTED, Outcome.DELIVERED]
    stored = await prefect.wait_for_events(
        expected_count=2, ids=[str(first.id), str(last.id)], settle=3
    )
    follows = {event["id"]: event["follows"] for event in stored}
    assert follows == {str(first.id): None, str(last.id): str(first.id)}
