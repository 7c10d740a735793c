"""What the Docker loop tells the lifecycle layer of exits, against a scripted daemon: when
its event's fate is known, once, and an OOM kill Docker records after the exit. The real
daemon and Prefect server are in tests/integration/test_docker_lifecycle.py."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from prometheus_client import CollectorRegistry

from infra_observer.config import DockerSettings
from infra_observer.events.handoff import Outcome
from infra_observer.events.model import Event
from infra_observer.metrics import Metrics
from infra_observer.observations import Observation
from infra_observer.sources.docker.stream import DockerSource
from tests.unit.test_docker_stream import (
    FLOW_RUN,
    SECOND,
    T1,
    ScriptedDaemon,
    container,
    line,
    until,
)

LABELS = {"io.prefect.flow-run-id": FLOW_RUN}
EXITED = T1 + SECOND


class HeldHandoff:
    """Hands each event's future to the test, which settles it when it chooses."""

    def __init__(self) -> None:
        self.held: list[tuple[Event, asyncio.Future[Outcome]]] = []

    async def submit(self, event: Event, *, source: str) -> asyncio.Future[Outcome]:
        future: asyncio.Future[Outcome] = asyncio.get_running_loop().create_future()
        self.held.append((event, future))
        return future

    def settle(self, status: str, outcome: Outcome) -> None:
        for event, future in self.held:
            if event.event.endswith(f".{status}") and not future.done():
                future.set_result(outcome)


class FlowRuns:
    def __init__(self) -> None:
        self.told: list[Observation] = []

    def observe(self, observation: Observation) -> None:
        self.told.append(observation)


def exited(*, code: int, oom: bool) -> dict[str, Any]:
    found = container("box", "exited", labels=LABELS, finished=EXITED)
    found["State"] |= {"ExitCode": code, "OOMKilled": oom}
    return found


class Exits(ScriptedDaemon):
    """`box` starts exited after the listing: its `die` comes on the stream, then `later`
    events once `release` is set. With `oom_after_exit`, Docker records the OOM kill only
    after the `die` was inspected."""

    def __init__(self, *, code: int, oom_after_exit: bool, later: list[str]) -> None:
        super().__init__()
        self.after_listing = lambda: self.containers.update(box=exited(code=code, oom=False))
        self.streams = {"io.prefect.flow-run-id": [line("box", "die", at=EXITED, labels=LABELS)]}
        self.oom_after_exit = oom_after_exit
        self.later = later
        self.release = asyncio.Event()
        self.inspected = 0

    def handler(self, request: httpx.Request) -> httpx.Response:
        if request.url.path == "/v1.41/containers/box/json":
            self.inspected += 1
            if self.inspected > 1 and self.oom_after_exit:
                self.containers["box"]["State"]["OOMKilled"] = True
        return super().handler(request)

    async def _stream(self, lines: list[str]) -> AsyncIterator[bytes]:
        for text in lines:
            yield (text + "\n").encode()
        await self.release.wait()
        for text in self.later:
            yield (text + "\n").encode()
        await asyncio.Event().wait()


def oom(after: int) -> str:
    return line("box", "oom", at=EXITED + after, labels=LABELS)


@contextlib.asynccontextmanager
async def watching(
    daemon: ScriptedDaemon, *, mark_crashed: bool = True
) -> AsyncIterator[tuple[HeldHandoff, FlowRuns]]:
    handoff, flow_runs = HeldHandoff(), FlowRuns()
    source = DockerSource(
        settings=DockerSettings(host="unix:///scripted.sock", mark_crashed=mark_crashed),
        handoff=handoff,
        metrics=Metrics(CollectorRegistry()),
        flow_runs=flow_runs,
        transport=httpx.MockTransport(daemon.handler),
    )
    task = asyncio.create_task(source.run())
    try:
        await until(lambda: source.ready)
        yield handoff, flow_runs
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def categories(flow_runs: FlowRuns) -> list[str | None]:
    return [told.diagnosis.category if told.diagnosis else None for told in flow_runs.told]


async def test_an_exit_is_told_once_its_event_is_delivered() -> None:
    daemon = Exits(code=3, oom_after_exit=False, later=[])
    async with watching(daemon) as (handoff, flow_runs):
        await until(lambda: len(handoff.held) == 1)
        await asyncio.sleep(0.05)
        assert flow_runs.told == []  # not before its event is stored
        handoff.settle("exited", Outcome.DELIVERED)
        await until(lambda: len(flow_runs.told) == 1)
    (told,) = flow_runs.told
    assert (str(told.flow_run_id), told.wants) == (FLOW_RUN, "crashed")
    assert told.message == "Docker container box exited with code 3."
    assert categories(flow_runs) == ["NonZeroExit"]


@pytest.mark.parametrize(
    ("outcome", "told"),
    [
        (Outcome.DUPLICATE, [None]),  # stored before: the diagnosis was written then
        (Outcome.REJECTED, []),
        (Outcome.UNDELIVERED, []),
    ],
)
async def test_an_exit_not_delivered_now_is_told_as_its_fate_says(
    outcome: Outcome, told: list[str | None]
) -> None:
    daemon = ScriptedDaemon()
    daemon.containers["box"] = exited(code=3, oom=False)  # found by the listing
    async with watching(daemon) as (handoff, flow_runs):
        handoff.settle("exited", outcome)
        await asyncio.sleep(0.05)
    assert categories(flow_runs) == told


async def test_off_nothing_is_told() -> None:
    daemon = ScriptedDaemon()
    daemon.containers["box"] = exited(code=3, oom=True)
    async with watching(daemon, mark_crashed=False) as (handoff, flow_runs):
        handoff.settle("exited", Outcome.DELIVERED)
        await asyncio.sleep(0.05)
    assert len(handoff.held) == 1
    assert flow_runs.told == []


async def test_an_oom_kill_recorded_before_the_exit_is_told_is_told_instead() -> None:
    daemon = Exits(code=137, oom_after_exit=True, later=[oom(after=1)])
    async with watching(daemon) as (handoff, flow_runs):
        await until(lambda: len(handoff.held) == 1)
        daemon.release.set()
        await until(lambda: daemon.inspected == 2)
        await asyncio.sleep(0.05)
        handoff.settle("exited", Outcome.DELIVERED)
        await until(lambda: len(flow_runs.told) == 1)
        await asyncio.sleep(0.05)
    assert categories(flow_runs) == ["OOMKilled"]
    assert flow_runs.told[0].message == "Docker container box was OOM-killed (exit code 137)."


async def test_an_oom_kill_recorded_after_the_exit_was_told_follows_it_once() -> None:
    daemon = Exits(code=137, oom_after_exit=True, later=[oom(after=1), oom(after=2)])
    async with watching(daemon) as (handoff, flow_runs):
        await until(lambda: len(handoff.held) == 1)
        handoff.settle("exited", Outcome.DELIVERED)
        await until(lambda: len(flow_runs.told) == 1)
        daemon.release.set()
        await until(lambda: daemon.inspected == 3)
        await asyncio.sleep(0.05)
    assert categories(flow_runs) == ["NonZeroExit", "OOMKilled"]
    assert flow_runs.told[1].message == "Docker container box was OOM-killed (exit code 137)."
