"""The probe and metrics endpoints, served for real on a loopback port."""

from __future__ import annotations

import asyncio
import re
import socket
import threading
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import pytest
from prometheus_client import CollectorRegistry, Counter, Gauge

from infra_observer.config import HealthSettings
from infra_observer.errors import ConfigError
from infra_observer.health import HealthServer


def fetch(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as answer:
            return answer.status, answer.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


class Probes:
    def __init__(self) -> None:
        self.live: list[str] = []
        self.ready: list[str] = ["source kubernetes has not synced yet"]


@pytest.fixture
def probes() -> Probes:
    return Probes()


@asynccontextmanager
async def health_server(
    *,
    liveness: Callable[[], list[str]],
    readiness: Callable[[], list[str]],
    registry: CollectorRegistry | None = None,
    port: int = 0,
) -> AsyncIterator[HealthServer]:
    server = HealthServer(
        settings=HealthSettings(host="127.0.0.1", port=port),
        registry=registry or CollectorRegistry(),
        liveness=liveness,
        readiness=readiness,
        loop_answer_seconds=0.3,
    )
    task = asyncio.create_task(server.run())
    await asyncio.wait_for(server.started.wait(), 10)
    try:
        yield server
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


@pytest.fixture
async def serving(probes: Probes) -> AsyncIterator[HealthServer]:
    async with health_server(
        liveness=lambda: probes.live, readiness=lambda: probes.ready
    ) as server:
        yield server


async def get(server: HealthServer, path: str) -> tuple[int, str]:
    assert server.port is not None
    return await asyncio.to_thread(fetch, server.port, path)


async def test_probes_answer_with_the_problems_found(serving: HealthServer, probes: Probes) -> None:
    assert await get(serving, "/healthz") == (200, "ok\n")
    assert await get(serving, "/readyz") == (503, "source kubernetes has not synced yet\n")
    probes.ready = []
    probes.live = ["task emitter ended"]
    assert await get(serving, "/readyz") == (200, "ok\n")
    assert await get(serving, "/healthz") == (503, "task emitter ended\n")
    assert (await get(serving, "/nowhere"))[0] == 404


async def test_metrics_are_the_registry_in_prometheus_text(probes: Probes) -> None:
    registry = CollectorRegistry()
    Counter("probe_test_things", "Things.", registry=registry).inc(3)
    async with health_server(
        liveness=lambda: probes.live, readiness=lambda: probes.ready, registry=registry
    ) as server:
        status, body = await get(server, "/metrics")
    assert status == 200
    assert "probe_test_things_total 3.0" in body


async def test_a_wedged_event_loop_fails_liveness(serving: HealthServer) -> None:
    assert serving.port is not None
    answer = asyncio.get_running_loop().run_in_executor(None, fetch, serving.port, "/healthz")
    time.sleep(1.0)  # noqa: ASYNC251 (blocking the loop is the point: the check cannot run)
    status, body = await answer
    assert status == 503
    assert "the event loop did not answer within 0.3 s" in body


async def test_a_failing_check_is_reported_not_raised(probes: Probes) -> None:
    def broken() -> list[str]:
        raise KeyError("source")

    async with health_server(liveness=broken, readiness=lambda: probes.ready) as server:
        status, body = await get(server, "/healthz")
    assert status == 503
    assert "the check failed: KeyError" in body


async def test_the_port_is_free_again_after_stopping(probes: Probes) -> None:
    async with health_server(liveness=lambda: probes.live, readiness=lambda: probes.ready) as first:
        port = first.port
    assert port is not None
    async with health_server(
        liveness=lambda: probes.live, readiness=lambda: probes.ready, port=port
    ) as again:
        assert await get(again, "/healthz") == (200, "ok\n")


async def test_a_busy_port_is_a_configuration_error_naming_the_variable(probes: Probes) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        server = HealthServer(
            settings=HealthSettings(host="127.0.0.1", port=port),
            registry=CollectorRegistry(),
            liveness=lambda: probes.live,
            readiness=lambda: probes.ready,
        )
        with pytest.raises(ConfigError) as caught:
            await server.run()
    message = str(caught.value)
    assert f"cannot listen on 127.0.0.1 port {port}" in message
    assert f"INFRA_OBSERVER_HEALTH_PORT={port}" in message
    assert "a free port" in message


def lag_sample(body: str) -> float:
    match = re.search(r"^probe_test_lag_seconds (\S+)$", body, re.MULTILINE)
    assert match, body
    return float(match.group(1))


async def test_loop_lag_is_how_long_the_loop_takes_to_answer_a_scrape(probes: Probes) -> None:
    registry = CollectorRegistry()
    asked = threading.Event()
    async with health_server(
        liveness=lambda: probes.live, readiness=lambda: probes.ready, registry=registry
    ) as server:

        def measured() -> float:
            asked.set()
            return server.loop_lag_seconds()

        Gauge("probe_test_lag_seconds", "Lag.", registry=registry).set_function(measured)
        assert lag_sample((await get(server, "/metrics"))[1]) < 0.1
        assert server.port is not None
        for blocked, low, high in ((0.15, 0.15, 0.29), (0.6, 0.3, 0.5)):
            asked.clear()
            scrape = asyncio.get_running_loop().run_in_executor(
                None, fetch, server.port, "/metrics"
            )
            assert asked.wait(5)  # the loop stays blocked while it is scraped
            time.sleep(blocked)  # noqa: ASYNC251
            # Blocked past the answer timeout (0.3 s), the gauge says the timeout.
            assert low <= lag_sample((await scrape)[1]) < high, blocked
