"""The lifecycle worker against the real Prefect server: states proposed from observations,
never forced; diagnosis and crash logs written once; a failing API retried, never blocking.

Requests go through `FaultyProxy` (a real HTTP proxy on loopback in front of the server),
which counts them and injects the failures.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Sequence
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from infra_observer.config import LifecycleSettings, PrefectSettings
from infra_observer.lifecycle.worker import Lifecycle
from infra_observer.metrics import Metrics
from infra_observer.observations import CrashLogReader, Diagnosis, Observation
from infra_observer.prefect_api.client import PrefectApi
from infra_observer.retry import Backoff
from infra_observer.sources.kubernetes.lifecycle import pod_observation
from tests.peers.faulty_proxy import FaultyProxy, Mode
from tests.peers.prefect import PrefectPeer

FLOW = "infra-observer-lifecycle"
WAIT_SECONDS = 60
IMAGE_PULL = Diagnosis(
    "ImagePullError", "ERROR", "Container prefect-job cannot pull example.invalid/x.", "Fix it."
)


class Worker:
    """A running `Lifecycle` with its own API client and metrics."""

    def __init__(self, api: PrefectApi, **settings: Any) -> None:
        self.metrics = Metrics(CollectorRegistry())
        self.lifecycle = Lifecycle(
            api=api,
            metrics=self.metrics,
            settings=LifecycleSettings(**settings),
            backoff=Backoff(initial=0.2, maximum=1.0),
        )

    def count(self, name: str, **labels: str) -> float:
        return self.metrics.registry.get_sample_value(name, labels) or 0.0


@pytest.fixture
async def proxy(prefect: PrefectPeer) -> AsyncIterator[FaultyProxy]:
    started = await FaultyProxy(prefect.api_url).start()
    yield started
    await started.stop()


@pytest.fixture
async def api(proxy: FaultyProxy) -> AsyncIterator[PrefectApi]:
    opened = PrefectApi.from_settings(PrefectSettings(api_url=proxy.api_url), timeout_seconds=30)
    yield opened
    await opened.aclose()


@pytest.fixture
async def worker(api: PrefectApi) -> AsyncIterator[Worker]:
    started = Worker(api)
    task = asyncio.create_task(started.lifecycle.run())
    yield started
    task.cancel()


async def until_state(prefect: PrefectPeer, flow_run_id: str, wanted: tuple[str, str]) -> None:
    for _ in range(WAIT_SECONDS * 10):
        if await prefect.read_state(flow_run_id) == wanted:
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"{flow_run_id} never reached {wanted}")


async def settled(worker: Worker) -> None:
    """Wait until the worker has nothing left to do."""
    for _ in range(WAIT_SECONDS * 10):
        if worker.lifecycle.waiting == 0:
            await asyncio.sleep(0.3)
            if worker.lifecycle.waiting == 0:
                return
        await asyncio.sleep(0.1)
    raise AssertionError("the worker still has work")


def pod(run: str, phase: str) -> Observation:
    """What the Kubernetes source tells of a change of the run's Job's pod into `phase`."""
    told = pod_observation(
        flow_run_id=uuid.UUID(run),
        phase=phase,
        namespace="jobs",
        name=f"run-{run[:8]}",
        owner_kinds=("Job",),
        diagnosis=None,
        diagnosis_changed=False,
        crash_logs=None,
    )
    assert told is not None
    return told


def reader(lines: Sequence[str]) -> tuple[list[int], CrashLogReader]:
    """A crash log reader that records how many lines it was asked for."""
    asked: list[int] = []

    async def read(count: int) -> Sequence[str]:
        asked.append(count)
        return list(lines)[-count:]

    return asked, read


async def test_a_scheduled_run_goes_infrastructure_pending_with_one_diagnosis_line(
    prefect: PrefectPeer, proxy: FaultyProxy, worker: Worker
) -> None:
    run = await prefect.create_flow_run(flow_name=FLOW)
    run_id = uuid.UUID(run)
    message = "Kubernetes pod jobs/run-1 is pending."
    worker.lifecycle.observe(
        Observation(run_id, "kubernetes", wants="pending", message=message, diagnosis=IMAGE_PULL)
    )
    for _ in range(5):  # every later status update of the same pending pod
        worker.lifecycle.observe(
            Observation(run_id, "kubernetes", wants="pending", message=message)
        )
    await until_state(prefect, run, ("PENDING", "InfrastructurePending"))
    await settled(worker)
    assert (await prefect.read_flow_run(run))["state"]["message"] == message
    worker.lifecycle.observe(Observation(run_id, "kubernetes", wants="pending", message=message))
    await settled(worker)  # a later update of the pod, once the proposal was answered
    logs = await prefect.read_logs(run)
    assert [(r["level"], r["message"]) for r in logs] == [
        (40, f"{IMAGE_PULL.summary}\nResolution: {IMAGE_PULL.resolution}")
    ]
    assert len(proxy.requests_to("POST", f"/flow_runs/{run}/set_state")) == 1
    assert len(proxy.requests_to("POST", "/flow_runs/filter")) == 1
    assert (
        worker.count(
            "infra_observer_lifecycle_proposals_total",
            source="kubernetes",
            state="InfrastructurePending",
            outcome="accept",
        )
        == 1
    )


async def test_a_pending_proposal_queued_until_after_its_pod_runs_is_withdrawn(
    prefect: PrefectPeer, proxy: FaultyProxy, api: PrefectApi
) -> None:
    ahead = [await prefect.create_flow_run(flow_name=FLOW) for _ in range(2)]
    late = await prefect.create_flow_run(flow_name=FLOW)
    worker = Worker(api)  # not working yet: the proposals queue up as in a burst
    for run in [*ahead, late]:
        worker.lifecycle.observe(pod(run, "Pending"))
    worker.lifecycle.observe(pod(late, "Running"))  # before its turn came
    task = asyncio.create_task(worker.lifecycle.run())
    try:
        for run in ahead:
            await until_state(prefect, run, ("PENDING", "InfrastructurePending"))
        await settled(worker)
    finally:
        task.cancel()
    assert await prefect.read_state_history(late) == [("SCHEDULED", "Scheduled")]
    assert proxy.requests_to("POST", f"/flow_runs/{late}/set_state") == []

    def proposals(outcome: str) -> float:
        return worker.count(
            "infra_observer_lifecycle_proposals_total",
            source="kubernetes",
            state="InfrastructurePending",
            outcome=outcome,
        )

    assert (proposals("accept"), proposals("withdrawn")) == (2, 1)


async def test_a_crash_is_proposed_once_and_its_last_lines_forwarded(
    prefect: PrefectPeer, worker: Worker
) -> None:
    run = await prefect.create_flow_run(flow_name=FLOW)
    await prefect.force_state(run, state_type="RUNNING", state_name="Running")
    asked, read = reader([f"line {i}" for i in range(600)])
    worker.lifecycle.observe(
        Observation(
            uuid.UUID(run), "kubernetes", wants="crashed", message="Job failed.", crash_logs=read
        )
    )
    await until_state(prefect, run, ("CRASHED", "Crashed"))
    await settled(worker)
    logs = await prefect.read_logs(run)
    assert asked == [500]
    assert [r["message"] for r in logs] == [f"line {i}" for i in range(100, 600)]
    assert {r["level"] for r in logs} == {40}
    assert (
        worker.count("infra_observer_lifecycle_log_lines_forwarded_total", source="kubernetes")
        == 500
    )


async def test_two_replicas_crash_a_run_once_and_forward_one_copy_of_its_logs(
    prefect: PrefectPeer, api: PrefectApi
) -> None:
    run = await prefect.create_flow_run(flow_name=FLOW)
    await prefect.force_state(run, state_type="PENDING", state_name="Pending")
    replicas = [Worker(api), Worker(api)]
    tasks = [asyncio.create_task(r.lifecycle.run()) for r in replicas]
    try:
        for replica in replicas:
            _, read = reader(["the last line"])
            replica.lifecycle.observe(
                Observation(uuid.UUID(run), "ecs", wants="crashed", message="x", crash_logs=read)
            )
        await until_state(prefect, run, ("CRASHED", "Crashed"))
        for replica in replicas:
            await settled(replica)
    finally:
        for task in tasks:
            task.cancel()
    outcomes = [
        outcome
        for replica in replicas
        for outcome in ("accept", "abort", "not_admitted")
        if replica.count(
            "infra_observer_lifecycle_proposals_total",
            source="ecs",
            state="Crashed",
            outcome=outcome,
        )
    ]
    assert sorted(outcomes) in (["abort", "accept"], ["accept", "not_admitted"])
    assert [r["message"] for r in await prefect.read_logs(run)] == ["the last line"]


async def test_a_final_run_is_never_proposed_anything(
    prefect: PrefectPeer, proxy: FaultyProxy, worker: Worker
) -> None:
    run = await prefect.create_flow_run(flow_name=FLOW)
    await prefect.force_state(run, state_type="COMPLETED", state_name="Completed")
    _, read = reader(["late"])
    worker.lifecycle.observe(
        Observation(uuid.UUID(run), "kubernetes", wants="crashed", message="late", crash_logs=read)
    )
    worker.lifecycle.observe(Observation(uuid.UUID(run), "kubernetes", wants="pending"))
    await settled(worker)
    assert await prefect.read_state(run) == ("COMPLETED", "Completed")
    assert proxy.requests_to("POST", f"/flow_runs/{run}/set_state") == []
    assert await prefect.read_logs(run) == []


async def test_a_failing_api_is_retried_with_backoff_and_observe_never_waits(
    prefect: PrefectPeer, proxy: FaultyProxy, worker: Worker
) -> None:
    runs = [await prefect.create_flow_run(flow_name=FLOW) for _ in range(3)]
    for run in runs:
        await prefect.force_state(run, state_type="RUNNING", state_name="Running")
    await proxy.set_mode(Mode.ERROR_500)
    loop = asyncio.get_running_loop()
    started = loop.time()
    for run in runs:
        worker.lifecycle.observe(Observation(uuid.UUID(run), "docker", wants="crashed"))
    assert loop.time() - started < 0.5  # no I/O on the caller's path
    for _ in range(WAIT_SECONDS * 10):
        if (
            worker.count("infra_observer_lifecycle_retries_total", reason="RetryableDeliveryError")
            >= 2
        ):
            break
        await asyncio.sleep(0.1)
    assert all([await prefect.read_state(run) == ("RUNNING", "Running") for run in runs])
    await proxy.set_mode(Mode.PASS)
    for run in runs:
        await until_state(prefect, run, ("CRASHED", "Crashed"))


async def test_past_its_bound_new_work_is_dropped_and_counted(api: PrefectApi) -> None:
    idle = Worker(api, queue_size=2)  # not running: nothing is taken from its queue
    for _ in range(3):
        idle.lifecycle.observe(Observation(uuid.uuid4(), "kubernetes", wants="pending"))
    assert idle.lifecycle.waiting == 2
    assert idle.count("infra_observer_bound_hits_total", bound="lifecycle_queue") == 1
