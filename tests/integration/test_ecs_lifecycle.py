"""The ECS source with the lifecycle layer, against moto (SQS, ECS, CloudWatch Logs) and a
real Prefect server: a task's changes move its flow run, and a crash brings its last lines."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from typing import Any

from infra_observer.config import LifecycleSettings, PrefectSettings
from infra_observer.emitter import Emitter, events_api_sink
from infra_observer.lifecycle.worker import Lifecycle
from infra_observer.prefect_api.client import PrefectApi
from infra_observer.retry import Backoff
from infra_observer.sources.ecs.source import EcsSource
from tests.integration.ecs_support import eventually
from tests.integration.source_runner import source_with_emitter
from tests.integration.test_ecs_source import EMITTER, FLOW_RUN_TAG, Harness, harness
from tests.peers.prefect import PrefectPeer

__all__ = ["harness"]  # the fixture, used by name

GROUP = "/prefect/ecs-lifecycle"
FLOW = "infra-observer-ecs-lifecycle"


def run_logging_task(harness: Harness, *, flow_run_id: str) -> dict[str, Any]:
    """A task of a definition whose `prefect` container logs with the awslogs driver."""
    ecs = harness.moto.client("ecs")
    ecs.create_cluster(clusterName=harness.name)
    definition = ecs.register_task_definition(
        family=f"{harness.name}-flow",
        networkMode="bridge",
        containerDefinitions=[
            {
                "name": "prefect",
                "image": "prefecthq/prefect:3-latest",
                "memory": 512,
                "logConfiguration": {
                    "logDriver": "awslogs",
                    "options": {"awslogs-group": GROUP, "awslogs-stream-prefix": "runs"},
                },
            }
        ],
    )["taskDefinition"]["taskDefinitionArn"]
    task: dict[str, Any] = ecs.run_task(
        cluster=harness.name,
        taskDefinition=definition,
        launchType="FARGATE",
        tags=[{"key": FLOW_RUN_TAG, "value": flow_run_id}],
    )["tasks"][0]
    return task


def write_task_logs(harness: Harness, task: dict[str, Any], count: int) -> None:
    logs = harness.moto.client("logs")
    with contextlib.suppress(logs.exceptions.ResourceAlreadyExistsException):
        logs.create_log_group(logGroupName=GROUP)
    stream = f"runs/prefect/{task['taskArn'].rsplit('/', 1)[-1]}"
    logs.create_log_stream(logGroupName=GROUP, logStreamName=stream)
    now = int(time.time() * 1000) - count
    events = [{"timestamp": now + i, "message": f"boot {i}"} for i in range(count)]
    logs.put_log_events(logGroupName=GROUP, logStreamName=stream, logEvents=events)


@contextlib.asynccontextmanager
async def observed(harness: Harness, prefect: PrefectPeer) -> AsyncIterator[Lifecycle]:
    """The source, its emitter and a lifecycle worker, all on the real Prefect server."""
    settings = PrefectSettings(api_url=prefect.api_url)
    api = PrefectApi.from_settings(settings, timeout_seconds=30)
    lifecycle = Lifecycle(
        api=api,
        metrics=harness.metrics,
        settings=LifecycleSettings(crash_log_lines=50),
        backoff=Backoff(initial=0.2, maximum=1.0),
    )
    sink = events_api_sink(settings, EMITTER)
    emitter = Emitter(sink=sink, settings=EMITTER, metrics=harness.metrics)
    source = EcsSource(
        settings=harness.settings(),
        handoff=emitter,
        metrics=harness.metrics,
        flow_runs=lifecycle,
    )
    worker = asyncio.create_task(lifecycle.run())
    try:
        async with source_with_emitter(source, emitter, drain_seconds=5):
            yield lifecycle
    finally:
        worker.cancel()
        await sink.aclose()
        await api.aclose()


async def test_a_task_that_never_started_crashes_its_run_with_its_last_lines(
    harness: Harness, prefect: PrefectPeer
) -> None:
    run = await prefect.create_flow_run(flow_name=FLOW)
    task = await asyncio.to_thread(run_logging_task, harness, flow_run_id=run)
    await asyncio.to_thread(write_task_logs, harness, task, 80)
    stop = {
        "containers": [],
        "stopCode": "TaskFailedToStart",
        "stoppedReason": "ResourceInitializationError: unable to pull secrets",
    }
    async with observed(harness, prefect):
        await harness.send(task, last_status="PROVISIONING", version=1)

        async def pending() -> bool:
            return await prefect.read_state(run) == ("PENDING", "InfrastructurePending")

        await eventually(pending, "the run InfrastructurePending")
        await harness.send(task, last_status="STOPPED", version=2, detail=stop)

        async def crashed_with_logs() -> bool:
            crashed = await prefect.read_state(run) == ("CRASHED", "Crashed")
            return crashed and len(await prefect.read_logs(run)) == 51

        await eventually(crashed_with_logs, "the run Crashed with its logs")
    message = (await prefect.read_flow_run(run))["state"]["message"]
    assert "stopped before any container ran (stop code TaskFailedToStart" in message
    logs = [record["message"] for record in await prefect.read_logs(run)]
    assert logs[0].startswith(
        "Task could not start (TaskFailedToStart): ResourceInitializationError"
    )
    assert "\nResolution: ECS could not start the task" in logs[0]
    assert logs[1:] == [f"boot {i}" for i in range(30, 80)]
    assert (
        harness.sample(
            "infra_observer_lifecycle_diagnoses_total", source="ecs", category="TaskFailedToStart"
        )
        == 1
    )


async def test_a_task_that_succeeded_leaves_its_run_alone(
    harness: Harness, prefect: PrefectPeer
) -> None:
    run = await prefect.create_flow_run(flow_name=FLOW)
    await prefect.force_state(run, state_type="RUNNING", state_name="Running")
    task = await asyncio.to_thread(run_logging_task, harness, flow_run_id=run)
    async with observed(harness, prefect):
        await harness.send(task, last_status="STOPPED", version=3)
        await eventually(lambda: _drained(harness), "the message deleted")
        await asyncio.sleep(1)
    assert await prefect.read_state(run) == ("RUNNING", "Running")
    assert await prefect.read_logs(run) == []


async def _drained(harness: Harness) -> bool:
    return await harness.counts() == (0, 0)
