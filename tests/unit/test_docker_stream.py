"""The Docker loop against a scripted daemon (httpx's MockTransport): the orderings a real
dockerd produces only by chance, made certain. The real daemon is in
tests/integration/test_docker_source.py."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
from prometheus_client import CollectorRegistry
from structlog.testing import capture_logs

from infra_observer.config import DockerSettings
from infra_observer.metrics import Metrics
from infra_observer.sources.docker.stream import DockerSource
from tests.handoff import RecordingHandoff

FLOW_RUN = "0b5f1a6e-8c8f-4a64-9d0e-3f1f3a0d2b11"
SECOND = 1_000_000_000
T0 = 1_767_261_600 * SECOND  # 2026-01-01T10:00:00Z: the listing begins
T1 = T0 + 2 * SECOND  # the listing is done


def iso(nanos: int) -> str:
    seconds, fraction = divmod(nanos, SECOND)
    whole = dt.datetime.fromtimestamp(seconds, dt.UTC).strftime("%Y-%m-%dT%H:%M:%S")
    return f"{whole}.{fraction:09d}Z"


def container(cid: str, status: str, *, labels: dict[str, str], **state: int) -> dict[str, Any]:
    return {
        "Id": cid,
        "Name": f"/{cid}",
        "Created": iso(T0 - 10 * SECOND),
        "State": {
            "Status": status,
            "StartedAt": iso(state.get("started", T0 - 9 * SECOND)),
            "FinishedAt": iso(state["finished"]) if "finished" in state else "0001-01-01T00:00:00Z",
        },
        "Config": {"Labels": labels},
    }


def line(cid: str, action: str, *, at: int, labels: dict[str, str]) -> str:
    return json.dumps(
        {
            "Type": "container",
            "Action": action,
            "Actor": {"ID": cid, "Attributes": {"name": cid, **labels}},
            "time": at // SECOND,
            "timeNano": at,
        }
    )


class ScriptedDaemon:
    """Answers the Engine API calls from a script; streams stay open once their lines are out."""

    def __init__(self) -> None:
        self.containers: dict[str, dict[str, Any]] = {}
        self.streams: dict[str, list[str]] = {}
        self.clock = [T0, T1]
        self.opened: list[str] = []
        self.after_listing: Callable[[], None] | None = None

    def handler(self, request: httpx.Request) -> httpx.Response:
        path = request.url.path
        if path == "/version":
            return httpx.Response(200, json={"ApiVersion": "1.41", "Version": "20.10"})
        if path == "/v1.41/info":
            now = self.clock.pop(0) if len(self.clock) > 1 else self.clock[0]
            if now == T1 and self.after_listing is not None:
                self.after_listing()
                self.after_listing = None
            return httpx.Response(200, json={"Name": "scripted", "SystemTime": iso(now)})
        if path == "/v1.41/containers/json":
            wanted = json.loads(request.url.params["filters"])["label"][0]
            listed = [c for c in self.containers.values() if wanted in c["Config"]["Labels"]]
            return httpx.Response(200, json=listed)
        if path.startswith("/v1.41/containers/"):
            found = self.containers.get(path.split("/")[3])
            return httpx.Response(200, json=found) if found else httpx.Response(404, json={})
        if path == "/v1.41/events":
            key = json.loads(request.url.params["filters"])["label"][0]
            self.opened.append(key)
            return httpx.Response(200, content=self._stream(self.streams.get(key, [])))
        return httpx.Response(500, json={"message": f"unscripted {path}"})

    async def _stream(self, lines: list[str]) -> AsyncIterator[bytes]:
        for text in lines:
            yield (text + "\n").encode()
        await asyncio.Event().wait()


def resource(cid: str) -> str:
    return f"prefect.docker.container.{cid}"


async def until(condition: Callable[[], bool]) -> None:
    for _ in range(2000):
        if condition():
            return
        await asyncio.sleep(0.005)
    raise AssertionError("condition never held")


@contextlib.asynccontextmanager
async def running(daemon: ScriptedDaemon, metrics: Metrics) -> AsyncIterator[RecordingHandoff]:
    recorder = RecordingHandoff(source="docker")
    source = DockerSource(
        settings=DockerSettings(host="unix:///scripted.sock"),
        handoff=recorder,
        metrics=metrics,
        transport=httpx.MockTransport(daemon.handler),
    )
    task = asyncio.create_task(source.run())
    try:
        await until(lambda: source.ready)
        yield recorder
        assert not task.done()
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def test_events_during_the_listing_never_report_a_stale_status() -> None:
    labels = {"io.prefect.flow-run-id": FLOW_RUN}
    both = {**labels, "prefect.io/flow-run-id": FLOW_RUN}
    daemon = ScriptedDaemon()
    # `quick` was created, started and exited while the listing ran, and listed as exited.
    daemon.containers["quick"] = container(
        "quick", "exited", labels=labels, started=T0 + SECOND // 2, finished=T0 + SECOND
    )
    daemon.containers["twin"] = container("twin", "running", labels=both)
    reverse_dns = [
        line("quick", "create", at=T0 - SECOND, labels=labels),  # before the listing: skipped
        "{not json",
        line("quick", "create", at=T0 + SECOND // 4, labels=labels),
        line("quick", "start", at=T0 + SECOND // 2, labels=labels),
        line("quick", "die", at=T0 + SECOND, labels=labels),
        line("twin", "pause", at=T1 + SECOND, labels=both),
        line("quick", "destroy", at=T1 + 2 * SECOND, labels=labels),
    ]
    daemon.streams = {
        "io.prefect.flow-run-id": reverse_dns,
        # The twin carries both label forms: the daemon sends its events on both streams.
        "prefect.io/flow-run-id": [line("twin", "pause", at=T1 + SECOND, labels=both)],
    }

    def pause_twin() -> None:
        daemon.containers["twin"]["State"]["Status"] = "paused"

    daemon.after_listing = pause_twin
    metrics = Metrics(CollectorRegistry())
    with capture_logs() as logs:
        async with running(daemon, metrics) as recorder:
            await until(lambda: recorder.names(resource("quick"))[-1:] == ["removing"])
            await until(lambda: recorder.names(resource("twin")) == ["running", "paused"])

    assert recorder.names(resource("quick")) == ["exited", "removing"]
    assert recorder.names(resource("twin")) == ["running", "paused"]
    assert sorted(daemon.opened) == ["io.prefect.flow-run-id", "prefect.io/flow-run-id"]
    errors = metrics.registry.get_sample_value(
        "infra_observer_input_errors_total", {"source": "docker", "kind": "event"}
    )
    assert errors == 1
    (bad_line,) = [log for log in logs if log["event"] == "input_error"]
    assert bad_line["source"] == "docker"
    assert bad_line["kind"] == "event"
    assert "JSON" in bad_line["detail"]


async def test_an_unreachable_daemon_is_retried_and_counted() -> None:
    daemon = ScriptedDaemon()
    failures = iter([True, False])

    def flaky(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/version" and next(failures, False):
            raise httpx.ConnectError("[Errno 111] Connection refused", request=request)
        return daemon.handler(request)

    metrics = Metrics(CollectorRegistry())
    recorder = RecordingHandoff(source="docker")
    source = DockerSource(
        settings=DockerSettings(host="unix:///scripted.sock", backoff_max_seconds=0.1),
        handoff=recorder,
        metrics=metrics,
        transport=httpx.MockTransport(flaky),
    )
    with capture_logs() as logs:
        task = asyncio.create_task(source.run())
        try:
            await until(lambda: source.ready)
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
    reconnects = metrics.registry.get_sample_value(
        "infra_observer_source_reconnects_total", {"source": "docker", "reason": "unavailable"}
    )
    assert reconnects == 1
    (warning,) = [log for log in logs if log["event"] == "docker_unavailable"]
    assert "Connection refused" in warning["error"]
    assert "DOCKER_HOST" in warning["error"]
