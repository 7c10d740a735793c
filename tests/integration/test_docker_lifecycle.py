"""The Docker source with the lifecycle layer, against the harness's dockerd and a real Prefect
server: with `mark_crashed` on, a flow-run container that fails crashes its run and brings its
last lines; off (the default), the source proposes nothing.

The lifecycle worker reaches the server through `FaultyProxy`, which records every request,
so that "nothing proposed" is read from what was sent, not only from the run's state.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

from infra_observer.config import LifecycleSettings, PrefectSettings
from infra_observer.emitter import Emitter
from infra_observer.lifecycle.worker import Lifecycle
from infra_observer.prefect_api.client import PrefectApi
from infra_observer.retry import Backoff
from infra_observer.sources.docker.client import ContainerGoneError, DockerClient
from infra_observer.sources.docker.endpoint import Endpoint
from infra_observer.sources.docker.stream import DockerSource
from tests.integration.source_runner import source_with_emitter
from tests.integration.test_docker_source import (
    EMITTER,
    Harness,
    ListSink,
    harness,
    prefect_sink,
    until,
)
from tests.peers import DockerPeer, PrefectPeer
from tests.peers.docker import oom_command
from tests.peers.faulty_proxy import FaultyProxy

__all__ = ["harness"]  # the fixture, used by name

FLOW = "infra-observer-docker-lifecycle"
WAIT_SECONDS = 90.0
MEMORY = 8 * 1024 * 1024
# Docker copies stdout and stderr separately: lines written apart keep their order. The last
# line has no newline.
APART = "echo one; sleep 0.3; echo two >&2; sleep 0.3; printf three"
SPEAKS_THEN_FAILS = ["sh", "-c", "echo one; echo two >&2; exit 3"]


@pytest.fixture
async def proxy(prefect: PrefectPeer) -> AsyncIterator[FaultyProxy]:
    started = await FaultyProxy(prefect.api_url).start()
    yield started
    await started.stop()


@contextlib.asynccontextmanager
async def observed(
    harness: Harness, prefect: PrefectPeer, proxy: FaultyProxy, **docker: Any
) -> AsyncIterator[ListSink]:
    """The source (with `docker` settings), its emitter to the Prefect server, and a
    lifecycle worker reaching the server through the proxy; yields the delivered events."""
    api = PrefectApi.from_settings(PrefectSettings(api_url=proxy.api_url), timeout_seconds=30)
    lifecycle = Lifecycle(
        api=api,
        metrics=harness.metrics,
        settings=LifecycleSettings(crash_log_lines=50),
        backoff=Backoff(initial=0.2, maximum=1.0),
    )
    worker = asyncio.create_task(lifecycle.run())
    try:
        async with prefect_sink(prefect) as sink:
            emitter = Emitter(sink=sink, settings=EMITTER, metrics=harness.metrics)
            source = DockerSource(
                settings=harness.settings(**docker),
                handoff=emitter,
                metrics=harness.metrics,
                flow_runs=lifecycle,
            )

            async def listed(task: asyncio.Task[None]) -> None:
                await until(lambda: source.ready or task.done(), "the first listing")

            async with source_with_emitter(source, emitter, drain_seconds=10, started=listed):
                yield sink
    finally:
        worker.cancel()
        await api.aclose()


async def running_run(prefect: PrefectPeer) -> str:
    run = await prefect.create_flow_run(flow_name=FLOW)
    await prefect.force_state(run, state_type="RUNNING", state_name="Running")
    return run


def flow_run_labels(harness: Harness, run: str) -> dict[str, str]:
    """Labelled as Prefect's Docker worker labels a flow run's container."""
    return {**harness.labels(), "io.prefect.flow-run-id": run}


async def eventually(condition: Callable[[], Awaitable[bool]], what: str) -> None:
    for _ in range(int(WAIT_SECONDS * 4)):
        if await condition():
            return
        await asyncio.sleep(0.25)
    raise AssertionError(f"gave up waiting for {what}")


async def state_message(prefect: PrefectPeer, run: str) -> str:
    return str((await prefect.read_flow_run(run))["state"]["message"] or "")


async def log_messages(prefect: PrefectPeer, run: str) -> list[str]:
    return [record["message"] for record in await prefect.read_logs(run)]


def set_states(proxy: FaultyProxy) -> list[str]:
    return [seen.path for seen in proxy.seen if seen.path.endswith("/set_state")]


async def test_a_container_that_exits_3_crashes_its_run_with_its_last_lines(
    harness: Harness, prefect: PrefectPeer, proxy: FaultyProxy
) -> None:
    run = await running_run(prefect)
    name = f"fails-{harness.run_label}"
    async with observed(harness, prefect, proxy, mark_crashed=True):
        await harness.run(SPEAKS_THEN_FAILS, labels=flow_run_labels(harness, run), name=name)

        async def crashed_with_logs() -> bool:
            crashed = await prefect.read_state(run) == ("CRASHED", "Crashed")
            return crashed and len(await log_messages(prefect, run)) == 3

        await eventually(crashed_with_logs, "the run Crashed with its logs")
    assert await state_message(prefect, run) == f"Docker container {name} exited with code 3."
    logs = await log_messages(prefect, run)
    assert logs[0].startswith(f"Container {name} exited with code 3\nResolution: ")
    # Docker copies stdout and stderr separately: lines written together may swap.
    assert sorted(logs[1:]) == ["one", "two"]
    assert len(set_states(proxy)) == 1
    counted = {
        "infra_observer_lifecycle_proposals_total": (
            {"source": "docker", "state": "Crashed", "outcome": "accept"}
        ),
        "infra_observer_lifecycle_diagnoses_total": {"source": "docker", "category": "NonZeroExit"},
        "infra_observer_lifecycle_log_lines_forwarded_total": {"source": "docker"},
    }
    assert [harness.sample(name, **labels) for name, labels in counted.items()] == [1, 1, 2]


async def test_off_by_default_a_failed_container_proposes_nothing(
    harness: Harness, prefect: PrefectPeer, proxy: FaultyProxy
) -> None:
    run = await running_run(prefect)
    async with observed(harness, prefect, proxy) as sink:
        container = await harness.run(SPEAKS_THEN_FAILS, labels=flow_run_labels(harness, run))
        await until(lambda: sink.names(container)[-1:] == ["exited"], "the exit delivered")
        await asyncio.sleep(2)  # what a crash proposal would take, had one been told
    assert await prefect.read_state(run) == ("RUNNING", "Running")
    assert await state_message(prefect, run) == ""
    assert set_states(proxy) == []
    assert await log_messages(prefect, run) == []


async def test_an_oom_killed_container_crashes_its_run_with_the_oom_diagnosis(
    harness: Harness, prefect: PrefectPeer, proxy: FaultyProxy
) -> None:
    run = await running_run(prefect)
    name = f"oom-{harness.run_label}"
    labels = flow_run_labels(harness, run)
    async with observed(harness, prefect, proxy, mark_crashed=True):
        container = await harness.run(oom_command(), labels=labels, name=name, memory=MEMORY)
        await harness.dockerd.wait_oom_killed(container)

        async def crashed_as_oom() -> bool:
            crashed = await prefect.read_state(run) == ("CRASHED", "Crashed")
            oom = f"Container {name} ran out of memory and was killed (exit code 137)"
            return crashed and any(m.startswith(oom) for m in await log_messages(prefect, run))

        await eventually(crashed_as_oom, "the run Crashed, diagnosed OOMKilled")
    # Docker may record the exit before the OOM kill: the crash then names the exit code
    # alone, and the OOM kill follows as a second diagnosis.
    assert await state_message(prefect, run) in (
        f"Docker container {name} was OOM-killed (exit code 137).",
        f"Docker container {name} exited with code 137.",
    )
    assert len(set_states(proxy)) == 1
    diagnosed = harness.sample(
        "infra_observer_lifecycle_diagnoses_total", source="docker", category="OOMKilled"
    )
    assert diagnosed == 1


@contextlib.asynccontextmanager
async def docker_client(dockerd: DockerPeer) -> AsyncIterator[DockerClient]:
    socket = str(dockerd.socket)
    endpoint = Endpoint(host=dockerd.host, base_url="http://docker", socket_path=socket)
    async with DockerClient(endpoint=endpoint) as client:
        await client.version()
        yield client


async def tty_container(harness: Harness, command: list[str]) -> str:
    """A container with a TTY (its logs are one raw stream), run to its end."""
    body = {
        "Image": harness.dockerd.image,
        "Cmd": command,
        "Tty": True,
        "Labels": harness.labels(),
        "HostConfig": {"NetworkMode": "none"},
    }
    created = await harness.dockerd.arequest("POST", "/containers/create", json=body)
    container_id: str = created.json()["Id"]
    await harness.dockerd.start_container(container_id)
    await harness.dockerd.wait_exit(container_id)
    return container_id


async def test_the_logs_reader_reads_framed_and_tty_streams(harness: Harness) -> None:
    framed = await harness.run(["sh", "-c", APART])
    await harness.dockerd.wait_exit(framed)
    tty = await tty_container(harness, ["sh", "-c", "echo one; echo two >&2; echo three"])
    async with docker_client(harness.dockerd) as client:
        assert await client.logs(framed, tail=10, tty=False) == ["one", "two", "three"]
        assert await client.logs(framed, tail=2, tty=False) == ["two", "three"]
        assert await client.logs(tty, tail=10, tty=True) == ["one", "two", "three"]
        await harness.dockerd.remove(framed)
        with pytest.raises(ContainerGoneError, match="already removed"):
            await client.logs(framed, tail=10, tty=False)
